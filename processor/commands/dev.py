"""`processor dev kafka start|stop|status`: a real local Kafka broker for development and tests."""

from __future__ import annotations

import argparse
from pathlib import Path

from processor.devkafka import BrokerError, KafkaBroker, default_cache_dir, fetch_jars


def _broker(args: argparse.Namespace) -> KafkaBroker:
    workdir = Path(args.dir) if args.dir else default_cache_dir() / "broker"
    return KafkaBroker(workdir)


def _start(args: argparse.Namespace) -> int:
    broker = _broker(args)
    try:
        if broker.running():
            print(f"already running: PROCESSOR_KAFKA_BOOTSTRAP_SERVERS={broker.bootstrap}")
            return 0
        broker.start()
    except BrokerError as exc:
        print(f"processor: {exc}")
        return 1
    print(f"started (pid file {broker.pid_file}): PROCESSOR_KAFKA_BOOTSTRAP_SERVERS={broker.bootstrap}")
    return 0


def _stop(args: argparse.Namespace) -> int:
    broker = _broker(args)
    was_running = broker.running()
    broker.stop(grace_s=args.grace)
    print("stopped" if was_running else "not running")
    return 0


def _status(args: argparse.Namespace) -> int:
    broker = _broker(args)
    if broker.running():
        print(f"running: PROCESSOR_KAFKA_BOOTSTRAP_SERVERS={broker.bootstrap}")
        return 0
    print("not running")
    return 3


def _fetch(args: argparse.Namespace) -> int:
    try:
        print(fetch_jars())
    except BrokerError as exc:
        print(f"processor: {exc}")
        return 1
    return 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("dev", help="development tools")
    tools = parser.add_subparsers(dest="dev_tool", required=True)
    kafka = tools.add_parser("kafka", help="a local single-node Kafka broker (KRaft) from Maven Central")
    actions = kafka.add_subparsers(dest="kafka_action", required=True)
    for name, handler, text in (
        ("start", _start, "fetch (once) and start the broker; prints the bootstrap address"),
        ("stop", _stop, "stop it: SIGTERM, then SIGKILL after the grace period"),
        ("status", _status, "exit 0 if running, 3 if not"),
        ("fetch", _fetch, "only download the jars into the cache"),
    ):
        action = actions.add_parser(name, help=text)
        action.add_argument("--dir", help="broker directory (default: .cache/broker)")
        action.set_defaults(handler=handler, grace=20.0)
        if name == "stop":
            action.add_argument("--grace", type=float, default=20.0, help="seconds before SIGKILL")
