"""The chaos suite's verdict: what Stripe (the emulator) says against what the processor did and published."""

from __future__ import annotations

import itertools
import json
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

#: the chart's allowed transitions (statemachine/lifecycle.yaml), target by source
ALLOWED = {
    None: {"unclaimed"},
    "unclaimed": {"claimed", "expired"},
    "claimed": {"pending_onboarding", "pending_install"},
    "pending_onboarding": {"pending_install"},
    "pending_install": {"installed"},
    "installed": {"live"},
}
#: paths that never pass through onboarding at Stripe: a pending_onboarding transition is a state never reached
NO_ONBOARDING = {"existing_account_live"}


@dataclass(frozen=True)
class TopicRecord:
    partition: int
    offset: int
    key: str
    value: bytes


@dataclass
class Evidence:
    """Everything gathered at the end of a run."""

    plan: Mapping[str, str]  # sandbox id -> path name
    truth: Mapping[str, str]  # emulator: sandbox id -> lifecycle state
    states: Mapping[str, str]  # processor: sandbox id -> state
    delivered: Mapping[str, str]  # event id -> type, of the events answered 200 at least once
    processed: set[str]
    dead_letters: Mapping[str, str]  # event id -> error class
    transitions: Sequence[TopicRecord]
    snapshots: Sequence[TopicRecord]
    deaths: list[str]
    quiescence_s: float | None  # None: not quiescent within the suite's limits
    faults: list[str] = field(default_factory=list)


@dataclass
class Verdict:
    rows: list[tuple[str, str, bool]] = field(default_factory=list)
    examples: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(ok for _, _, ok in self.rows)

    def add(self, name: str, value: object, ok: bool = True) -> None:
        self.rows.append((name, str(value), ok))

    def table(self, title: str) -> str:
        width = max(len(name) for name, _, _ in self.rows)
        lines = [title, "-" * len(title)]
        lines += [f"{name:<{width}}  {value:>10}  {'ok' if ok else 'VIOLATION'}" for name, value, ok in self.rows]
        lines.append(f"{'verdict':<{width}}  {'PASS' if self.ok else 'FAIL':>10}")
        lines += [f"  e.g. {example}" for example in self.examples[:20]]
        return "\n".join(lines)


def judge(ev: Evidence) -> Verdict:
    verdict = Verdict()
    verdict.add("sandboxes", len(ev.plan))
    wrong = sorted(sid for sid in ev.plan if ev.states.get(sid) != ev.truth.get(sid))
    verdict.add("wrong final state", len(wrong), not wrong)
    verdict.examples += [f"wrong: {sid} processor={ev.states.get(sid)} stripe={ev.truth.get(sid)}" for sid in wrong]

    lost = sorted(set(ev.delivered) - ev.processed - set(ev.dead_letters))
    verdict.add("deliveries answered 200 (events)", len(ev.delivered))
    verdict.add("lost (200 but not applied/DLQ)", len(lost), not lost)
    verdict.examples += [f"lost: {event_id} ({ev.delivered[event_id]})" for event_id in lost]
    unexplained = sorted(e for e, reason in ev.dead_letters.items() if not reason)
    verdict.add("dead-lettered", len(ev.dead_letters))
    verdict.add("dead-lettered without reason", len(unexplained), not unexplained)

    _judge_transitions(ev, verdict)
    _judge_snapshots(ev, verdict)
    verdict.add("unplanned process deaths", len(ev.deaths), not ev.deaths)
    verdict.examples += [f"death: {d}" for d in ev.deaths]
    verdict.add("faults injected", len(ev.faults))
    if ev.quiescence_s is None:
        verdict.add("time to quiescence (s)", "never", False)
    else:
        verdict.add("time to quiescence (s)", f"{ev.quiescence_s:.1f}")
    return verdict


def _judge_transitions(ev: Evidence, verdict: Verdict) -> None:
    by_id: dict[str, dict[str, Any]] = {}
    differing: list[str] = []
    for record in ev.transitions:
        message = json.loads(record.value)
        if message["id"] in by_id and by_id[message["id"]] != message:
            differing.append(message["id"])
        by_id[message["id"]] = message
    paths: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for message in by_id.values():
        paths[message["subject"]].append(message["data"])
    missing, unreached, broken = [], [], []
    for sid, final in ev.truth.items():
        if sid not in ev.plan:
            continue
        steps = sorted(paths.get(sid, []), key=lambda d: d["sequence"])
        targets = [d["to_state"] for d in steps]
        if not steps or targets[-1] != final:
            missing.append(f"{sid} published {targets}, Stripe says {final}")
            continue
        chain_ok = [d["sequence"] for d in steps] == list(range(1, len(steps) + 1)) and steps[0]["from_state"] is None
        for before, after in itertools.pairwise(steps):
            chain_ok &= after["from_state"] == before["to_state"]
        for step in steps:
            chain_ok &= step["to_state"] in ALLOWED.get(step["from_state"], set())
        if not chain_ok:
            broken.append(f"{sid} published {targets}")
        if ev.plan[sid] in NO_ONBOARDING and "pending_onboarding" in targets:
            unreached.append(f"{sid} ({ev.plan[sid]}) published pending_onboarding")
    verdict.add("transitions published (raw)", len(ev.transitions))
    verdict.add("transitions after dedupe by id", len(by_id))
    verdict.add("re-published copies that differ", len(differing), not differing)
    verdict.add("missing transitions (sandboxes)", len(missing), not missing)
    verdict.add("gaps/disallowed steps (sandboxes)", len(broken), not broken)
    verdict.add("transitions to states never reached", len(unreached), not unreached)
    verdict.examples += [f"missing: {m}" for m in missing] + [f"broken: {b}" for b in broken]
    verdict.examples += [f"unreached: {u}" for u in unreached] + [f"differs: {d}" for d in differing]


def _judge_snapshots(ev: Evidence, verdict: Verdict) -> None:
    last: dict[str, dict[str, Any]] = {}
    newest: dict[str, int] = {}
    for record in sorted(ev.snapshots, key=lambda r: (r.partition, r.offset)):
        value = json.loads(record.value)
        last[record.key] = value
        newest[record.key] = max(newest.get(record.key, 0), int(value["version"]))
    stale = sorted(k for k in ev.plan if k in last and int(last[k]["version"]) != newest[k])
    wrong = sorted(k for k in ev.plan if last.get(k, {}).get("state") != ev.truth.get(k))
    verdict.add("sandbox.state records", len(ev.snapshots))
    verdict.add("last snapshot not the newest version", len(stale), not stale)
    verdict.add("last snapshot not Stripe's state", len(wrong), not wrong)
    verdict.examples += [f"stale-last: {k} last v{last[k]['version']} < v{newest[k]}" for k in stale]
    verdict.examples += [f"snapshot: {k} last={last.get(k, {}).get('state')} stripe={ev.truth.get(k)}"
                         for k in wrong]
