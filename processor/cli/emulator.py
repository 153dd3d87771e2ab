"""`processor emulator`: run the Stripe claimable-sandbox emulator (a development tool) with uvicorn."""

from __future__ import annotations

import argparse
import os

from processor.dev.emulator.config import CONTROL_TOKEN_HEADER, EmulatorConfig, EndpointSpec, Knobs, random_api_key
from processor.errors import ConfigError

DEFAULT_PORT = 12111


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "emulator",
        help="run the offline Stripe emulator (claimable sandboxes + signed webhooks)",
        description="Stateful stand-in for Stripe's claimable-sandbox API. Point STRIPE_API_BASE at it.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (loopback unless --allow-remote)")
    parser.add_argument(
        "--allow-remote",
        action="store_true",
        help="allow a --host beyond loopback (containers): anyone who reaches the port can use the API",
    )
    parser.add_argument(
        "--allowed-host",
        action="append",
        default=[],
        dest="allowed_hosts",
        metavar="NAME",
        help="a host name clients use besides localhost and --public-url's (Host header check); repeatable",
    )
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"listen port (default {DEFAULT_PORT})")
    parser.add_argument(
        "--api-key",
        action="append",
        dest="api_keys",
        metavar="KEY",
        help="accepted bearer key (sk_test_...); repeatable; default $EMULATOR_API_KEY or a random key (printed)",
    )
    parser.add_argument("--webhook-url", action="append", default=[], metavar="URL", help="repeatable")
    parser.add_argument(
        "--webhook-secret",
        action="append",
        default=[],
        metavar="SECRET",
        help="signing secret of the matching --webhook-url (default: $EMULATOR_WEBHOOK_SECRET)",
    )
    parser.add_argument("--public-url", help="URL users reach the emulator at (onboarding links point there)")
    parser.add_argument("--seed", type=int, help="seed the random knobs for a reproducible run")
    _add_knob_options(parser)
    parser.set_defaults(handler=run)


def _add_knob_options(parser: argparse.ArgumentParser) -> None:
    """The emulator's misbehaviour knobs, in a group of their own in --help."""
    knobs = parser.add_argument_group("knobs (also changeable at run time: POST /_emulator/config)")
    knobs.add_argument("--duplicate-rate", type=float, default=0.0,
                       help="share of webhooks delivered twice (0 to 1)")
    knobs.add_argument("--reorder-window", type=float, default=0.0, metavar="SECONDS",
                       help="hold each webhook up to this long at random, so deliveries arrive out of order")
    knobs.add_argument("--delivery-latency", type=float, default=0.0, metavar="SECONDS",
                       help="wait this long before each webhook delivery")
    knobs.add_argument("--api-latency", type=float, default=0.0, metavar="SECONDS",
                       help="answer each API request this much later")
    knobs.add_argument("--api-error-rate", type=float, default=0.0,
                       help="share of API requests answered with an injected error (0 to 1)")
    knobs.add_argument("--rate-limit", type=float, default=25.0, metavar="RPS", help="0 = unlimited")
    knobs.add_argument("--no-delivery", action="store_true", help="start with webhook delivery off")


def config_from_args(args: argparse.Namespace, environ: dict[str, str] | None = None) -> EmulatorConfig:
    """Turn the parsed options into an EmulatorConfig; ConfigError names the bad option."""
    env = dict(os.environ) if environ is None else environ
    secrets = list(args.webhook_secret)
    if not secrets and env.get("EMULATOR_WEBHOOK_SECRET"):
        secrets = [env["EMULATOR_WEBHOOK_SECRET"]] * len(args.webhook_url)
    if len(secrets) != len(args.webhook_url):
        raise ConfigError(
            "--webhook-secret", "give one secret per --webhook-url (or set EMULATOR_WEBHOOK_SECRET)"
        )
    api_keys = tuple(args.api_keys or [env.get("EMULATOR_API_KEY") or random_api_key()])
    try:
        knobs = Knobs().updated(
            {
                "duplicate_rate": args.duplicate_rate,
                "reorder_window_s": args.reorder_window,
                "delivery_latency_s": args.delivery_latency,
                "api_latency_s": args.api_latency,
                "api_error_rate": args.api_error_rate,
                "rate_limit_rps": args.rate_limit,
                "delivery_enabled": not args.no_delivery,
            }
        )
        return EmulatorConfig(
            host=args.host,
            port=args.port,
            api_keys=api_keys,
            public_url=args.public_url,
            endpoints=tuple(EndpointSpec(u, s) for u, s in zip(args.webhook_url, secrets, strict=True)),
            knobs=knobs,
            seed=args.seed,
            allow_remote=args.allow_remote,
            allowed_hosts=tuple(args.allowed_hosts),
        )
    except ValueError as exc:
        raise ConfigError("emulator", str(exc)) from exc


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from processor.dev.emulator.app import build_app

    config = config_from_args(args)
    # printed (not logged) so the user can copy them; the random defaults change with every run
    print(f"emulator API key: {config.api_keys[0]}", flush=True)
    print(f"emulator control token: {config.control_token} (send it as {CONTROL_TOKEN_HEADER} on /_emulator/*)",
          flush=True)
    # log_config=None: uvicorn's lines go through the one set-up of `cli.main`, not uvicorn's own handlers;
    # date_header=False: the app's Date is the emulator's clock (emulator.app.DateFromClock)
    uvicorn.run(build_app(config), host=config.host, port=config.port, log_level="info", log_config=None,
                date_header=False)
    return 0
