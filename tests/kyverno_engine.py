"""A small Kyverno admission engine for the rule features this program renders,
so tests can ask what the API server would admit.

The order is Kyverno's: its webhooks see no request for the namespaces it
leaves alone; every matching mutate rule runs first (the mutating webhook,
policies and rules in order), then every matching validate rule runs on the
mutated object (the validating webhook), and any failing Enforce rule refuses
the request. Supported: match/exclude on kinds, namespaces, names and
operations; preconditions; patchStrategicMerge with `+()` add-if-absent
anchors; patchesJson6902 `add` ops; validate patterns with `=()` and `X()`
anchors, `|` alternatives and `*` wildcards; deny conditions with JMESPath
`{{ }}` variables. Anything else raises, so a rule this engine cannot read is
never silently admitted.
"""

from __future__ import annotations

import copy
import fnmatch
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import jmespath

from patterns.guardrails import UNGUARDED_NAMESPACES


@dataclass
class Review:
    object: dict[str, Any]  # as the mutating webhook left it
    refusals: list[tuple[str, str, str]] = field(default_factory=list)  # (policy, rule, message)

    @property
    def admitted(self) -> bool:
        return not self.refusals

    def refused_by(self) -> set[str]:
        return {f"{policy}/{rule}" for policy, rule, _ in self.refusals}


def review(policies: Iterable[dict], obj: dict, namespace: str = "", operation: str = "CREATE") -> Review:
    """What Kyverno does with a request to write `obj` in `namespace`."""
    policies = list(policies)
    obj = copy.deepcopy(obj)
    if namespace in UNGUARDED_NAMESPACES:
        return Review(obj)
    for policy in policies:
        for rule in policy["spec"]["rules"]:
            if "mutate" in rule and _applies(rule, obj, namespace, operation):
                obj = _mutate(rule["mutate"], obj)
    result = Review(obj)
    for policy in policies:
        for rule in policy["spec"]["rules"]:
            if "validate" in rule and _applies(rule, obj, namespace, operation):
                check = rule["validate"]
                if not _valid(check, obj, namespace, operation) and check["failureAction"] == "Enforce":
                    result.refusals.append((policy["metadata"]["name"], rule["name"], check["message"]))
    return result


def api_server_pod(pod: dict) -> dict:
    """A pod as the API server hands it to the webhooks: its built-in admission
    plugins ran first, and DefaultTolerationSeconds added the not-ready and
    unreachable tolerations to every pod
    (https://kubernetes.io/docs/reference/access-authn-authz/admission-controllers/#defaulttolerationseconds)."""
    pod = copy.deepcopy(pod)
    tolerations = pod["spec"].setdefault("tolerations", [])
    for key in ("node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"):
        if not any(t.get("key") == key for t in tolerations):
            tolerations.append({"key": key, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300})
    return pod


def without_rule(policies: Iterable[dict], policy_name: str, rule_name: str) -> list[dict]:
    """The policies with one rule removed (an empty policy disappears)."""
    out = []
    for policy in policies:
        policy = copy.deepcopy(policy)
        if policy["metadata"]["name"] == policy_name:
            kept = [r for r in policy["spec"]["rules"] if r["name"] != rule_name]
            assert len(kept) < len(policy["spec"]["rules"]), f"no rule {rule_name} in {policy_name}"
            policy["spec"]["rules"] = kept
        if policy["spec"]["rules"]:
            out.append(policy)
    return out


# --- matching -------------------------------------------------------------------------


def _selects(block: dict, obj: dict, namespace: str, operation: str) -> bool:
    resources = block["resources"]
    unknown = set(resources) - {"kinds", "namespaces", "names", "operations"}
    if unknown or set(block) != {"resources"}:
        raise NotImplementedError(f"match block {block}")
    return (
        obj["kind"] in resources.get("kinds", [obj["kind"]])
        and namespace in resources.get("namespaces", [namespace])
        and obj["metadata"].get("name") in resources.get("names", [obj["metadata"].get("name")])
        and operation in resources.get("operations", ["CREATE", "UPDATE", "DELETE", "CONNECT"])
    )


def _applies(rule: dict, obj: dict, namespace: str, operation: str) -> bool:
    if set(rule["match"]) != {"any"} or set(rule.get("exclude", {"any": []})) != {"any"}:
        raise NotImplementedError(f"match/exclude of rule {rule['name']}")
    if not any(_selects(b, obj, namespace, operation) for b in rule["match"]["any"]):
        return False
    if any(_selects(b, obj, namespace, operation) for b in rule.get("exclude", {}).get("any", [])):
        return False
    return "preconditions" not in rule or _conditions(rule["preconditions"], obj, namespace, operation)


# --- variables and conditions ------------------------------------------------------------


def _resolve(value: Any, obj: dict, namespace: str, operation: str) -> Any:
    if isinstance(value, str) and (m := re.fullmatch(r"\{\{\s*(.*?)\s*\}\}", value)):
        request = {"object": obj, "namespace": namespace, "operation": operation}
        return jmespath.search(m.group(1), {"request": request})
    if isinstance(value, str) and "{{" in value:
        raise NotImplementedError(f"partial variable in {value!r}")
    return value


def _in(item: Any, values: list) -> bool:
    return any(fnmatch.fnmatchcase(str(item), str(v)) if isinstance(v, str) else item == v for v in values)


def _condition(c: dict, obj: dict, namespace: str, operation: str) -> bool:
    key = _resolve(c["key"], obj, namespace, operation)
    value = _resolve(c["value"], obj, namespace, operation)
    keys = key if isinstance(key, list) else [key]
    values = value if isinstance(value, list) else [value]
    operators = {
        # A string value is a wildcard pattern (Kyverno pkg/engine/variables/operator/equal.go).
        "Equals": lambda: _in(key, [value]) if isinstance(value, str) else key == value,
        "NotEquals": lambda: not _in(key, [value]) if isinstance(value, str) else key != value,
        "AnyIn": lambda: any(_in(k, values) for k in keys),
        "AllIn": lambda: all(_in(k, values) for k in keys),
        "AnyNotIn": lambda: any(not _in(k, values) for k in keys),
        "AllNotIn": lambda: all(not _in(k, values) for k in keys),
        "GreaterThan": lambda: key > value,
        "LessThan": lambda: key < value,
    }
    return operators[c["operator"]]()


def _conditions(block: dict, obj: dict, namespace: str, operation: str) -> bool:
    if set(block) - {"any", "all"}:
        raise NotImplementedError(f"conditions {block}")
    results = True
    if "any" in block:
        results = any(_condition(c, obj, namespace, operation) for c in block["any"])
    if "all" in block:
        results = results and all(_condition(c, obj, namespace, operation) for c in block["all"])
    return results


# --- mutate ----------------------------------------------------------------------------------


def _merge(patch: dict, target: dict) -> dict:
    for key, value in patch.items():
        if m := re.fullmatch(r"\+\((.*)\)", key):
            if m.group(1) not in target:
                target[m.group(1)] = copy.deepcopy(value)
        elif re.fullmatch(r".\(.*\)", key):
            raise NotImplementedError(f"mutate anchor {key}")
        elif isinstance(value, dict):
            target[key] = _merge(value, target.get(key) or {})
        else:
            target[key] = copy.deepcopy(value)
    return target


def _json_patch(ops: list[dict], obj: dict) -> dict:
    for op in ops:
        if op["op"] != "add" or not op["path"].endswith("/-"):
            raise NotImplementedError(f"JSON patch {op}")
        *parents, array, _ = op["path"].strip("/").split("/")
        target = obj
        for part in parents:
            target = target.setdefault(part, {})
        if array not in target:
            raise ValueError(f"JSON patch {op['path']}: no array to append to (RFC 6902 fails the patch)")
        target[array].append(copy.deepcopy(op["value"]))
    return obj


def _mutate(mutation: dict, obj: dict) -> dict:
    if set(mutation) == {"patchStrategicMerge"}:
        return _merge(mutation["patchStrategicMerge"], obj)
    if set(mutation) == {"patchesJson6902"}:
        return _json_patch(json.loads(mutation["patchesJson6902"]), obj)
    raise NotImplementedError(f"mutation {mutation}")


# --- validate --------------------------------------------------------------------------------


def _scalar_matches(pattern: Any, value: Any) -> bool:
    if isinstance(pattern, str):
        return value is not None and any(
            fnmatch.fnmatchcase(str(value), alternative.strip()) for alternative in pattern.split("|")
        )
    return pattern == value


def _matches(pattern: Any, value: Any) -> bool:
    if isinstance(pattern, dict):
        if not isinstance(value, dict):
            return False
        for key, sub in pattern.items():
            if m := re.fullmatch(r"=\((.*)\)", key):
                if m.group(1) in value and not _matches(sub, value[m.group(1)]):
                    return False
            elif m := re.fullmatch(r"X\((.*)\)", key):
                if m.group(1) in value:
                    return False
            elif re.fullmatch(r".\(.*\)", key):
                raise NotImplementedError(f"validate anchor {key}")
            elif key not in value or not _matches(sub, value[key]):
                return False
        return True
    if isinstance(pattern, list):
        raise NotImplementedError("list patterns")
    return _scalar_matches(pattern, value)


def _valid(check: dict, obj: dict, namespace: str, operation: str) -> bool:
    if "pattern" in check:
        return _matches(check["pattern"], obj)
    if "deny" in check:
        return not _conditions(check["deny"]["conditions"], obj, namespace, operation)
    raise NotImplementedError(f"validate {check}")
