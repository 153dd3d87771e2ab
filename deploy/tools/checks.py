"""Checks of deploy/ that need no external binary beyond rulecheck (used by deploy/validate.sh).

    checks.py compose COMPOSE_FILE SCHEMA_JSON       compose-spec schema + references between services
    checks.py exprs RULES_FILE DASHBOARD_JSON         PromQL of alerts and dashboard, as JSON for rulecheck
    checks.py metrics README NAMES_JSON               every metric an expression selects is in the contract
    checks.py topics RENDERED_YAML [PREFIX]           Strimzi KafkaTopics equal processor/eventlog/kafka/topics.py
    checks.py prometheusrule RENDERED_YAML OUT        extract a PrometheusRule's groups for rulecheck

Each prints what it found and exits 1 on a finding, so validate.sh can run them all and sum up.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import yaml

# Grafana's built-in variables are not PromQL; any duration stands in for them when parsing
_GRAFANA_VARS = re.compile(r"\$(__rate_interval|__interval|__range)|\$\{(__rate_interval|__interval|__range)\}")


def check_compose(compose_path: Path, schema_path: Path) -> list[str]:
    """Validate against the compose-spec JSON schema, then what the schema cannot see."""
    import jsonschema

    document = yaml.safe_load(compose_path.read_text())
    schema = json.loads(schema_path.read_text())
    validator = jsonschema.Draft7Validator(schema)
    problems = [
        f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
        for e in sorted(validator.iter_errors(document), key=lambda e: list(map(str, e.path)))
    ]
    services: dict[str, Any] = document.get("services") or {}
    for name, service in services.items():
        depends = service.get("depends_on") or {}
        for target in depends if isinstance(depends, (dict, list)) else []:
            if target not in services:
                problems.append(f"services/{name}/depends_on: no service named {target!r}")
            condition = depends[target].get("condition") if isinstance(depends, dict) else None
            if condition == "service_healthy" and target in services and "healthcheck" not in services[target]:
                problems.append(f"services/{name}/depends_on/{target}: waits for health but {target} has no check")
            if condition == "service_completed_successfully" and target in services:
                if services[target].get("restart", "no") != "no":
                    problems.append(f"services/{target}: a one-shot job must not restart")
        if "image" not in service and "build" not in service:
            problems.append(f"services/{name}: neither image nor build")
    return problems


def dashboard_exprs(dashboard: dict[str, Any]) -> list[str]:
    exprs: list[str] = []

    def walk(panels: list[dict[str, Any]]) -> None:
        for panel in panels:
            for target in panel.get("targets", []):
                if target.get("expr"):
                    exprs.append(_GRAFANA_VARS.sub("5m", target["expr"]))
            walk(panel.get("panels", []))

    walk(dashboard.get("panels", []))
    return exprs


def rule_exprs(rules: dict[str, Any]) -> list[str]:
    return [rule["expr"] for group in rules.get("groups", []) for rule in group.get("rules", [])]


def contract_metrics(readme: Path) -> dict[str, str]:
    """Metric name -> type from the contract table in deploy/README.md (`| `name` | type | ...`)."""
    rows = re.findall(r"^\|\s*`(processor_[a-z0-9_]+)`\s*\|\s*(counter|gauge|histogram)\s*\|", readme.read_text(), re.M)
    return dict(rows)


def check_metrics(readme: Path, names: list[str]) -> list[str]:
    contract = contract_metrics(readme)
    if not contract:
        return [f"{readme}: no metric contract table found"]
    problems = []
    for name in names:
        base = re.sub(r"_(bucket|sum|count)$", "", name)
        if name in contract or (base in contract and contract[base] == "histogram"):
            continue
        problems.append(f"{name}: not a metric of the processor (see the contract in {readme.name})")
    return problems


def check_topics(rendered: Path, prefix: str = "") -> list[str]:
    """Every KafkaTopic the chart renders has exactly the settings processor/eventlog/kafka/topics.py gives it."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from processor.eventlog.kafka.topics import TOPICS

    found = {
        doc["spec"]["topicName"]: doc
        for doc in yaml.safe_load_all(rendered.read_text())
        if isinstance(doc, dict) and doc.get("kind") == "KafkaTopic"
    }
    problems = []
    for spec in TOPICS:
        name = spec.full_name(prefix)
        doc = found.pop(name, None)
        if doc is None:
            problems.append(f"KafkaTopic for {name} missing")
            continue
        actual = (
            doc["spec"].get("partitions"),
            doc["spec"].get("replicas"),
            {k: str(v) for k, v in (doc["spec"].get("config") or {}).items()},
        )
        wanted = (spec.partitions, spec.replication_factor, dict(spec.config))
        if actual != wanted:
            problems.append(f"KafkaTopic {name}: {actual} != processor/eventlog/kafka/topics.py {wanted}")
    problems += [f"KafkaTopic {name} is not in processor/eventlog/kafka/topics.py" for name in found]
    return problems


def main(argv: list[str]) -> int:
    command, args = (argv[1], argv[2:]) if len(argv) > 1 else ("", [])
    problems: list[str]
    if command == "compose" and len(args) == 2:
        problems = check_compose(Path(args[0]), Path(args[1]))
    elif command == "exprs" and len(args) == 2:
        rules = yaml.safe_load(Path(args[0]).read_text())
        dashboard = json.loads(Path(args[1]).read_text())  # a JSON error here fails the check
        print(json.dumps(rule_exprs(rules) + dashboard_exprs(dashboard)))
        return 0
    elif command == "metrics" and len(args) == 2:
        problems = check_metrics(Path(args[0]), json.loads(Path(args[1]).read_text())["metrics"])
    elif command == "topics" and len(args) in (1, 2):
        problems = check_topics(Path(args[0]), args[1] if len(args) == 2 else "")
    elif command == "prometheusrule" and len(args) == 2:
        docs = [
            d
            for d in yaml.safe_load_all(Path(args[0]).read_text())
            if isinstance(d, dict) and d.get("kind") == "PrometheusRule"
        ]
        Path(args[1]).write_text(yaml.safe_dump({"groups": [g for d in docs for g in d["spec"]["groups"]]}))
        problems = [] if docs else ["no PrometheusRule rendered"]
    else:
        print(__doc__, file=sys.stderr)
        return 2
    for problem in problems:
        print(f"  {problem}")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
