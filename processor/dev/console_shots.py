"""`make console-shots`: screenshots of every console page on the demo's data, for people who do not run it.

Runs the demo (serving), signs in with Debian's chromium through Playwright, and walks the console as an
operator would: overview, stuck sandboxes, a sandbox with Stripe's view, the dead letters, a replay's dry
run, its finished run, the replays list; the overview and the dead letters also at a phone's size. Writes
PNG files into the folder given (docs/console/ by default). Playwright is a development dependency.

    python -m processor.dev.console_shots [FOLDER]
"""

from __future__ import annotations

import asyncio
import shutil
import sys
from pathlib import Path

from playwright.async_api import Page, ViewportSize, async_playwright

from processor.dev.demo import run_demo
from processor.runtime.service import ServiceInfo

LAPTOP = ViewportSize(width=1280, height=800)
PHONE = ViewportSize(width=390, height=844)


async def _shoot(page: Page, folder: Path, name: str, *, full: bool = True) -> None:
    await page.screenshot(path=str(folder / f"{name}.png"), full_page=full)
    print(f"  {folder / (name + '.png')}", flush=True)


async def take_shots(info: ServiceInfo, token: str, folder: Path) -> None:
    console = f"{info.base_url}/console"
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=shutil.which("chromium") or "/usr/bin/chromium", args=["--no-sandbox"])
        laptop = await browser.new_context(viewport=LAPTOP)
        page = await laptop.new_page()
        await page.goto(f"{console}/signin")
        await _shoot(page, folder, "01-sign-in", full=False)
        await page.get_by_label("API token").fill(token)
        await page.get_by_role("button", name="Sign in").click()
        await page.wait_for_url(f"{console}/")
        await _shoot(page, folder, "02-overview")

        await page.goto(f"{console}/stuck?state=pending_onboarding&older_than=0s")
        await _shoot(page, folder, "03-stuck-sandboxes")
        stuck = await page.locator("#stuck tbody tr[data-sandbox]").first.get_attribute("data-sandbox")
        await page.goto(f"{console}/sandboxes/{stuck}?stripe=1")
        await _shoot(page, folder, "04-sandbox-timeline")

        await page.goto(f"{console}/dlq")
        await _shoot(page, folder, "05-dead-letters")
        first = page.locator("#dlq tbody tr[data-coordinate]").first
        coordinate = await first.get_attribute("data-coordinate")
        await page.goto(f"{console}/dlq/{coordinate}")
        await _shoot(page, folder, "06-dead-letter")
        await page.get_by_role("button", name="Replay this record…").click()
        await _shoot(page, folder, "07-replay-dry-run")
        await page.locator("#confirm-replay").click()
        await page.locator("#replay-status", has_text="Finished").wait_for(timeout=60_000)
        await _shoot(page, folder, "08-replay-finished")
        await page.goto(f"{console}/replays")
        await _shoot(page, folder, "09-replays")

        cookies = await laptop.cookies()
        phone = await browser.new_context(viewport=PHONE, device_scale_factor=2, is_mobile=True, has_touch=True)
        await phone.add_cookies(cookies)  # type: ignore[arg-type]
        small = await phone.new_page()
        await small.goto(f"{console}/")
        await _shoot(small, folder, "10-overview-phone", full=False)
        await small.goto(f"{console}/dlq")
        await _shoot(small, folder, "11-dead-letters-phone", full=False)
        await browser.close()


async def main(folder: Path) -> int:
    await asyncio.to_thread(folder.mkdir, parents=True, exist_ok=True)

    async def shots(info: ServiceInfo, token: str) -> None:
        print(f"screenshots into {folder}/:", flush=True)
        await take_shots(info, token, folder)

    result = await run_demo(30, serve=True, while_serving=shots)
    return 0 if result.ok else 1


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/console"))))
