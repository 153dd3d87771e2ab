"""`processor dev kafka start|stop|restart|status|fetch`: a real local Kafka broker for development and tests.

A directory keeps its ports and data across stop/start/restart, so running clients reconnect. `start --secure`
adds SSL (mutual TLS), SASL_SSL and SASL_PLAINTEXT listeners with ACLs on, and a `processor` user allowed exactly
what `processor run` needs on its topics (processor/eventlog/kafka/acls.py).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from processor.dev.kafka import BrokerError, KafkaBroker, default_cache_dir, fetch_jars
from processor.dev.kafka_security import Acl, BrokerSecurity
from processor.eventlog.kafka.acls import ROLES, merged

#: the user `start --secure` creates for the processor
PROCESSOR_USER = "processor"


def _broker(args: argparse.Namespace) -> KafkaBroker:
    workdir = Path(args.dir) if args.dir else default_cache_dir() / "broker"
    secured = getattr(args, "secure", False) or (workdir / "security" / "users.json").exists()
    security = BrokerSecurity.load_or_create(workdir, (PROCESSOR_USER,)) if secured else None
    return KafkaBroker(workdir, security=security)


def _describe(broker: KafkaBroker) -> str:
    lines = [f"PROCESSOR_KAFKA_BOOTSTRAP_SERVERS={broker.bootstrap}"]
    if broker.security is not None:
        password_file = broker.security.directory / "users.json"
        lines += [
            "  secured: PLAINTEXT above is the administrator's (super user); for the processor user use",
            f"  PROCESSOR_KAFKA_BOOTSTRAP_SERVERS={broker.listener('SASL_SSL')} "
            "PROCESSOR_KAFKA_SECURITY_PROTOCOL=SASL_SSL "
            f"PROCESSOR_KAFKA_SASL_MECHANISM=SCRAM-SHA-512 PROCESSOR_KAFKA_SASL_USERNAME={PROCESSOR_USER} "
            f"PROCESSOR_KAFKA_SSL_CAFILE={broker.security.ca_file}",
            f"  and PROCESSOR_KAFKA_SASL_PASSWORD from {password_file} (mTLS: SSL on {broker.listener('SSL')}, "
            f"certificates in {broker.security.directory})",
        ]
    return "\n".join(lines)


def _start(args: argparse.Namespace) -> int:
    broker = _broker(args)
    try:
        if broker.running():
            print(f"already running: {_describe(broker)}")
            return 0
        fresh = not (broker.workdir / "data" / "meta.properties").exists()
        broker.start()
        if fresh and broker.security is not None:
            prefix = os.environ.get("PROCESSOR_TOPIC_PREFIX", "")
            broker.grant(Acl.allowing(PROCESSOR_USER, merged(ROLES, prefix)))
    except BrokerError as exc:
        print(f"processor: {exc}")
        return 1
    print(f"started (pid file {broker.pid_file}): {_describe(broker)}")
    return 0


def _stop(args: argparse.Namespace) -> int:
    broker = _broker(args)
    was_running = broker.running()
    broker.stop(grace_s=args.grace)
    print("stopped" if was_running else "not running")
    return 0


def _restart(args: argparse.Namespace) -> int:
    broker = _broker(args)
    try:
        broker.restart(grace_s=args.grace)
    except BrokerError as exc:
        print(f"processor: {exc}")
        return 1
    print(f"restarted on the same ports: {_describe(broker)}")
    return 0


def _status(args: argparse.Namespace) -> int:
    broker = _broker(args)
    if broker.running():
        print(f"running: {_describe(broker)}")
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
        ("restart", _restart, "stop and start on the same ports and data (connected clients reconnect)"),
        ("status", _status, "exit 0 if running, 3 if not"),
        ("fetch", _fetch, "only download the jars into the cache"),
    ):
        action = actions.add_parser(name, help=text)
        action.add_argument("--dir", help="broker directory (default: .cache/broker)")
        action.set_defaults(handler=handler, grace=20.0)
        if name in ("stop", "restart"):
            action.add_argument("--grace", type=float, default=20.0, help="seconds before SIGKILL")
        if name == "start":
            action.add_argument("--secure", action="store_true",
                                help="add SSL (mTLS), SASL_SSL and SASL_PLAINTEXT listeners with SCRAM/PLAIN users "
                                     "and ACLs (needs the `cryptography` package of the dev extra)")
