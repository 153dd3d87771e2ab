"""Build the JSON schemas kubeconform reads, from registry packages only (used by deploy/validate.sh).

    kubeschemas.py k8s SCHEMA_ROOT OUT_DIR MANIFEST...   Kubernetes kinds used by the manifests
    kubeschemas.py crd CRD_YAML OUT_DIR                   every version of a CustomResourceDefinition

Kubernetes schemas come from the `kubernetes-validate` wheel (PyPI), whose files point into a shared
`_definitions.json`; kubeconform wants one self-contained file per kind, so the referenced definitions are
copied in. CRD schemas (Strimzi's, generated from its Maven Central jars) are OpenAPI v3: they become JSON
Schema with `additionalProperties: false` wherever the CRD does not keep unknown fields, so a misspelt field
fails as it would with kubeconform's own `-strict` schemas.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import yaml

_REF_PREFIX = "/api/_definitions.json#/$defs/"
# inside _definitions.json the references are local to that file
_LOCAL_PREFIX = "#/$defs/"


def _refs(node: Any) -> set[str]:
    found: set[str] = set()
    if isinstance(node, dict):
        ref = node.get("$ref")
        for prefix in (_REF_PREFIX, _LOCAL_PREFIX):
            if isinstance(ref, str) and ref.startswith(prefix):
                found.add(ref[len(prefix) :])
        for value in node.values():
            found |= _refs(value)
    elif isinstance(node, list):
        for value in node:
            found |= _refs(value)
    return found


def _rewrite(node: Any) -> Any:
    if isinstance(node, dict):
        out = {k: _rewrite(v) for k, v in node.items()}
        ref = out.get("$ref")
        if isinstance(ref, str) and ref.startswith(_REF_PREFIX):
            out["$ref"] = "#/$defs/" + ref[len(_REF_PREFIX) :]
        return out
    if isinstance(node, list):
        return [_rewrite(v) for v in node]
    return node


def kubeconform_name(api_version: str, kind: str) -> str:
    """kubeconform's `{{ .ResourceKind }}{{ .KindSuffix }}.json`: kind-group-version, group's first label."""
    group, _, version = api_version.rpartition("/")
    suffix = f"-{group.split('.')[0]}-{version}" if group else f"-{version}"
    return f"{kind.lower()}{suffix}.json"


def bundle_k8s(schema_dir: Path, out_dir: Path, manifests: list[Path]) -> int:
    """Write a self-contained schema for every core kind the manifests use; return how many were written."""
    kinds: set[tuple[str, str]] = set()
    for manifest in manifests:
        for doc in yaml.safe_load_all(manifest.read_text()):
            if isinstance(doc, dict) and "apiVersion" in doc and "kind" in doc:
                kinds.add((str(doc["apiVersion"]), str(doc["kind"])))
    definitions: dict[str, Any] | None = None
    out_dir.mkdir(parents=True, exist_ok=True)
    written = 0
    for api_version, kind in sorted(kinds):
        name = kubeconform_name(api_version, kind)
        source = schema_dir / name
        target = out_dir / name
        if target.exists() or not source.exists():  # not a core kind (a CRD): another schema location has it
            continue
        if definitions is None:
            definitions = json.loads((schema_dir / "_definitions.json").read_text())["$defs"]
        schema = json.loads(source.read_text())
        needed: set[str] = set()
        todo = _refs(schema)
        while todo:
            ref = todo.pop()
            if ref not in needed:
                needed.add(ref)
                todo |= _refs(definitions[ref]) - needed
        schema["$defs"] = {ref: definitions[ref] for ref in sorted(needed)}
        target.write_text(json.dumps(_rewrite(schema)))
        written += 1
    return written


def _strict(node: Any) -> Any:
    """OpenAPI v3 (structural CRD schema) to strict JSON Schema."""
    if isinstance(node, list):
        return [_strict(v) for v in node]
    if not isinstance(node, dict):
        return node
    out = {k: _strict(v) for k, v in node.items()}
    if out.pop("nullable", False) and "type" in out:
        out["type"] = [out["type"], "null"]
    open_object = out.get("x-kubernetes-preserve-unknown-fields") or "additionalProperties" in out
    if "properties" in out and not open_object:
        out["additionalProperties"] = False
    return out


def convert_crd(crd_path: Path, out_dir: Path) -> list[str]:
    """Write one strict schema per served version of the CRD; return the file names."""
    crd = yaml.safe_load(crd_path.read_text())
    spec = crd["spec"]
    out_dir.mkdir(parents=True, exist_ok=True)
    names = []
    for version in spec["versions"]:
        if not version.get("served", True):
            continue
        schema = _strict(version["schema"]["openAPIV3Schema"])
        schema["$schema"] = "http://json-schema.org/draft-07/schema#"
        # apiVersion and kind are fixed for the file the schema is looked up under
        schema.setdefault("required", [])
        name = kubeconform_name(f"{spec['group']}/{version['name']}", spec["names"]["kind"])
        (out_dir / name).write_text(json.dumps(schema))
        names.append(name)
    return names


def main(argv: list[str]) -> int:
    if len(argv) >= 4 and argv[1] == "k8s":
        count = bundle_k8s(Path(argv[2]), Path(argv[3]), [Path(p) for p in argv[4:]])
        print(f"kubeschemas: {count} Kubernetes schemas written to {argv[3]}")
        return 0
    if len(argv) == 4 and argv[1] == "crd":
        names = convert_crd(Path(argv[2]), Path(argv[3]))
        print(f"kubeschemas: {', '.join(names)} written to {argv[3]}")
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
