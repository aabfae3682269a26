#!/usr/bin/env python3
"""Write kubeconform JSON schemas from a Kubernetes OpenAPI v2 document, offline.

kubeconform downloads its schemas from the internet by default; here they are made
from the target API server itself (`kubectl get --raw /openapi/v2`, or the same
version's api/openapi-spec/swagger.json) plus our CRDs, so validation matches the
cluster we run on exactly.

    hack/kubeconform-schemas.py --openapi swagger.json --crd helm/qscale/files/crds/workerpool.yaml \
        --out $QSCALE_CACHE/kubeconform-schemas/v1.34.4

Files are named the way kubeconform's `{{ .ResourceKind }}{{ .KindSuffix }}.json`
template expects (deployment-apps-v1.json, service-v1.json, workerpool-qscale-v1alpha1.json).
Each file is self-contained: the kind's definition plus the definitions it
references (under "definitions"), every object closed with additionalProperties
false (kubeconform -strict semantics).
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path
from typing import Any

import yaml  # type: ignore[import-untyped]

REF_PREFIX = "#/definitions/"
# Types that YAML writes as numbers or strings; OpenAPI v2 calls them strings.
INT_OR_STRING: dict[str, Any] = {"oneOf": [{"type": "string"}, {"type": "integer"}]}
QUANTITY: dict[str, Any] = {"oneOf": [{"type": "string"}, {"type": "number"}]}
LOOSE: dict[str, dict[str, Any]] = {
    "io.k8s.apimachinery.pkg.util.intstr.IntOrString": INT_OR_STRING,
    "io.k8s.apimachinery.pkg.api.resource.Quantity": QUANTITY,
}


def file_name(group: str, version: str, kind: str) -> str:
    """kubeconform's name: lower(kind) + '-' + first label of the group + '-' + version."""
    prefix = group.split(".", maxsplit=1)[0].lower() if group else ""
    suffix = f"-{prefix}-{version}" if prefix else f"-{version}"
    return f"{kind.lower()}{suffix.lower()}.json"


def close_objects(node: Any) -> Any:
    """Add additionalProperties: false to objects with properties (strict mode)."""
    if isinstance(node, dict):
        out = {k: close_objects(v) for k, v in node.items()}
        preserve = out.get("x-kubernetes-preserve-unknown-fields") is True
        if "properties" in out and "additionalProperties" not in out and not preserve:
            out["additionalProperties"] = False
        if out.get("format") == "int-or-string":
            return INT_OR_STRING
        return out
    if isinstance(node, list):
        return [close_objects(v) for v in node]
    return node


def references(node: Any, found: set[str]) -> None:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith(REF_PREFIX):
            found.add(ref[len(REF_PREFIX):])
        for value in node.values():
            references(value, found)
    elif isinstance(node, list):
        for value in node:
            references(value, found)


def closure(name: str, definitions: dict[str, Any]) -> set[str]:
    seen: set[str] = set()
    todo = [name]
    while todo:
        current = todo.pop()
        if current in seen or current not in definitions:
            continue
        seen.add(current)
        refs: set[str] = set()
        references(definitions[current], refs)
        todo.extend(refs - seen)
    return seen


def kind_schema(name: str, gvk: dict[str, str], definitions: dict[str, Any]) -> dict[str, Any]:
    needed = closure(name, definitions)
    defs = {n: LOOSE.get(n) or close_objects(definitions[n]) for n in sorted(needed)}
    root: dict[str, Any] = copy.deepcopy(defs[name])
    props = root.setdefault("properties", {})
    api_version = f"{gvk['group']}/{gvk['version']}" if gvk["group"] else gvk["version"]
    props["apiVersion"] = {"type": "string", "enum": [api_version]}
    props["kind"] = {"type": "string", "enum": [gvk["kind"]]}
    root["required"] = sorted(set(root.get("required", [])) | {"apiVersion", "kind"})
    root["definitions"] = defs
    root["$schema"] = "http://json-schema.org/draft-04/schema#"
    return root


def from_openapi(document: dict[str, Any], out: Path) -> int:
    definitions = document["definitions"]
    written = 0
    for name, definition in definitions.items():
        for gvk in definition.get("x-kubernetes-group-version-kind", []):
            path = out / file_name(gvk["group"], gvk["version"], gvk["kind"])
            path.write_text(json.dumps(kind_schema(name, gvk, definitions)))
            written += 1
    return written


def from_crd(crd_path: Path, out: Path) -> int:
    written = 0
    for crd in yaml.safe_load_all(crd_path.read_text()):
        if not crd or crd.get("kind") != "CustomResourceDefinition":
            continue
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for version in crd["spec"]["versions"]:
            schema = close_objects(version["schema"]["openAPIV3Schema"])
            props = schema.setdefault("properties", {})
            props["apiVersion"] = {"type": "string", "enum": [f"{group}/{version['name']}"]}
            props["kind"] = {"type": "string", "enum": [kind]}
            props["metadata"] = {"type": "object"}
            schema["required"] = sorted(set(schema.get("required", [])) | {"apiVersion", "kind"})
            schema["$schema"] = "http://json-schema.org/draft-04/schema#"
            (out / file_name(group, version["name"], kind)).write_text(json.dumps(schema))
            written += 1
    return written


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--openapi", type=Path, required=True, help="OpenAPI v2 JSON document")
    parser.add_argument("--crd", type=Path, action="append", default=[], help="CRD YAML file(s)")
    parser.add_argument("--out", type=Path, required=True, help="output directory")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    try:
        document = json.loads(args.openapi.read_text())
    except (OSError, ValueError) as exc:
        print(f"kubeconform-schemas: cannot read {args.openapi}: {exc}", file=sys.stderr)
        return 1
    count = from_openapi(document, args.out)
    for crd in args.crd:
        count += from_crd(crd, args.out)
    print(f"kubeconform-schemas: {count} schemas in {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
