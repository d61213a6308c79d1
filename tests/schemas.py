"""Upstream CRD and Helm values schemas, for checking what the program renders
as the API server and Helm would: the OpenAPI schema (jsonschema) and the CRDs'
CEL rules (crd_cel).

They are data kept next to the checkout (../shared/schemas), not part of the
project. Without them the tests that need them skip, saying where the folder
was looked for; in CI (CI set, as .ci/run does) the skip is a failure, so CI
never passes without these checks."""

from __future__ import annotations

import json
import os
from functools import cache
from pathlib import Path

import jsonschema
import pytest
import yaml

from crd_cel import Failure, RuleNode, rule_failures, rule_tree

CHECKOUT = Path(__file__).resolve().parents[1]
EXPECTED_SCHEMAS = CHECKOUT.parent / "shared" / "schemas"
REQUIRE_SCHEMAS = "CI"  # set: a missing schema fails instead of skipping
SCHEMAS = next(
    (p / "shared" / "schemas" for p in CHECKOUT.parents if (p / "shared" / "schemas").is_dir()),
    None,
)


def _require(relative: str) -> Path:
    """The path of a file or folder under the schemas folder."""
    if SCHEMAS is None:
        reason = (f"upstream CRD and Helm values schemas not found: expected the folder {EXPECTED_SCHEMAS} "
                  "(shared/schemas next to the checkout, or in a folder above it), so rendered objects and chart "
                  "values are not checked against the upstream CRDs (schema and CEL rules) and chart schemas")
        if os.environ.get(REQUIRE_SCHEMAS):
            pytest.fail(f"{reason}; in CI ({REQUIRE_SCHEMAS} is set) that is a failure")
        pytest.skip(reason)
    path = SCHEMAS / relative
    if not path.exists():
        # The folder is there, so a missing file is a test to fix, not a skip.
        pytest.fail(f"upstream schema file not found: {path}")
    return path


def helm_values_validator(chart: str, version: str) -> jsonschema.Draft7Validator:
    """The chart's own values.schema.json (Helm validates values against it)."""
    path = _require(f"helm/{chart}-{version}.values.schema.json")
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
def crd_schemas() -> dict[tuple[str, str], dict]:
    """The openAPIV3Schema of every (apiVersion, kind) the CRDs serve."""
    folder = _require("crds")
    schemas = {}
    for path in sorted(folder.glob("*.yaml")):
        crd = yaml.load(path.read_text(), Loader=yaml.CSafeLoader)  # some are MBs; libyaml is 10x faster
        if not isinstance(crd, dict) or crd.get("kind") != "CustomResourceDefinition":
            continue
        for version in crd["spec"]["versions"]:
            key = (f"{crd['spec']['group']}/{version['name']}", crd["spec"]["names"]["kind"])
            schemas[key] = version["schema"]["openAPIV3Schema"]
    return schemas


@cache
def _crd_checks(key: tuple[str, str]) -> tuple[jsonschema.Draft7Validator, RuleNode | None]:
    schema = crd_schemas()[key]
    strict = _strict(schema)
    strict.pop("additionalProperties", None)  # some CRDs leave apiVersion, kind, metadata out
    return jsonschema.Draft7Validator(strict), rule_tree(schema)


def _checks_for(document: dict) -> tuple[jsonschema.Draft7Validator, RuleNode | None]:
    key = (document["apiVersion"], document["kind"])
    if key not in crd_schemas():
        pytest.fail(f"no CRD schema for {key} in {SCHEMAS / 'crds'}")
    return _crd_checks(key)


def crd_rule_failures(document: dict) -> list[Failure]:
    """The CEL rules of its CRD that refuse a custom resource on create."""
    return rule_failures(_checks_for(document)[1], document)


def crd_errors(document: dict) -> list[str]:
    """Why the API server would refuse (or silently prune) a custom resource on
    create: its OpenAPI schema, then its CEL rules."""
    validator, _ = _checks_for(document)
    errors = [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(document)]
    return errors + [str(f) for f in crd_rule_failures(document)]
