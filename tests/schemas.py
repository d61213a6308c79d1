"""Upstream CRD and Helm values schemas, for checking what the program renders.

They are data kept next to the checkout (../shared/schemas), not part of the
project; tests that need them skip when the folder is absent."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

import jsonschema
import pytest
import yaml

SCHEMAS = next(
    (p / "shared" / "schemas" for p in Path(__file__).resolve().parents[1:] if (p / "shared" / "schemas").is_dir()),
    None,
)


def _require(path: Path | None) -> Path:
    if path is None or not path.exists():
        pytest.skip(f"upstream schema not present: {path or '../shared/schemas'}")
    return path


def helm_values_validator(chart: str, version: str) -> jsonschema.Draft7Validator:
    """The chart's own values.schema.json (Helm validates values against it)."""
    path = _require(SCHEMAS and SCHEMAS / "helm" / f"{chart}-{version}.values.schema.json")
    return jsonschema.Draft7Validator(json.loads(path.read_text()))


def _strict(schema):
    """Unknown fields rejected: the API server drops them (or refuses them with
    strict field validation), so a misspelt field would silently do nothing."""
    if isinstance(schema, dict):
        out = {k: _strict(v) for k, v in schema.items()}
        if ("properties" in schema and "additionalProperties" not in schema
                and not schema.get("x-kubernetes-preserve-unknown-fields")):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [_strict(v) for v in schema]
    return schema


@cache
def _crd_validators() -> dict[tuple[str, str], jsonschema.Draft7Validator]:
    folder = _require(SCHEMAS and SCHEMAS / "crds")
    validators = {}
    for path in sorted(folder.glob("*.yaml")):
        crd = yaml.load(path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))  # some are MBs
        if not isinstance(crd, dict) or crd.get("kind") != "CustomResourceDefinition":
            continue
        for version in crd["spec"]["versions"]:
            key = (f"{crd['spec']['group']}/{version['name']}", crd["spec"]["names"]["kind"])
            schema = _strict(version["schema"]["openAPIV3Schema"])
            schema.pop("additionalProperties", None)  # some CRDs leave apiVersion, kind, metadata out
            validators[key] = jsonschema.Draft7Validator(schema)
    return validators


def crd_errors(document: dict) -> list[str]:
    """Why the API server would refuse (or silently prune) a custom resource."""
    key = (document["apiVersion"], document["kind"])
    validators = _crd_validators()
    if key not in validators:
        pytest.skip(f"no CRD schema for {key}")
    return [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validators[key].iter_errors(document)]
