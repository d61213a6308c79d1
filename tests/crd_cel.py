"""The `x-kubernetes-validations` (CEL) rules of a CRD, evaluated as the API
server evaluates them when an object is created.

https://kubernetes.io/docs/tasks/extend-kubernetes/custom-resources/custom-resource-definitions/#validation-rules:
a rule applies at the schema node that declares it, once for every value of
that node present in the object (after defaulting), with the value as `self`.
A rule that mentions `oldSelf` is a transition rule: it runs only on update,
when there is an old value, so on create it is skipped, as here.

cel-python evaluates the CEL; the few Kubernetes library functions the CRDs
call are implemented below after their Kubernetes sources:
k8s.io/apiserver/pkg/cel/library (isIP, ip.go) and cel-go's ext strings
library (substring), which the API server enables. `duration()` follows Go's
time.ParseDuration, as cel-go does, rather than cel-python's looser parser.
"""

from __future__ import annotations

import datetime
import ipaddress
import re
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import celpy
from celpy import celtypes
from celpy.evaluation import CELEvalError


# --- the Kubernetes CEL library functions the CRDs use -------------------------


def is_ip(value: celtypes.StringType) -> celtypes.BoolType:
    """isIP(string): an IPv4 or IPv6 address as netip.ParseAddr reads it (no
    leading zeros in IPv4 octets), without a zone and not IPv4-mapped IPv6."""
    if not isinstance(value, str):
        raise TypeError(f"no such overload: isIP({type(value).__name__})")
    try:
        address = ipaddress.ip_address(str(value))  # also refuses IPv4 octets with leading zeros
    except ValueError:
        return celtypes.BoolType(False)
    if isinstance(address, ipaddress.IPv6Address) and (address.scope_id or address.ipv4_mapped):
        return celtypes.BoolType(False)
    return celtypes.BoolType(True)


def substring(text: celtypes.StringType, start: celtypes.IntType, end: celtypes.IntType | None = None):
    """string.substring(start[, end]) of cel-go's ext strings library: code
    points, an error (so the rule fails) when the range is out of bounds."""
    length = len(text)
    end = length if end is None else int(end)
    if not 0 <= start <= length:
        return CELEvalError(f"index out of range: {start}")
    if not 0 <= end <= length:
        return CELEvalError(f"index out of range: {end}")
    if end < start:
        return CELEvalError(f"invalid substring range. start: {start}, end: {end}")
    return celtypes.StringType(text[start:end])


_GO_UNITS_NS = {"ns": 1, "us": 1_000, "\u00b5s": 1_000, "\u03bcs": 1_000, "ms": 1_000_000,
                "s": 1_000_000_000, "m": 60_000_000_000, "h": 3_600_000_000_000}
_GO_COMPONENT = re.compile(r"(\d*)(?:\.(\d*))?([^\d.]+)")


def go_duration(text: celtypes.StringType) -> celtypes.DurationType | CELEvalError:
    """duration(string) as cel-go parses it (time.ParseDuration): signed
    components of a decimal number and a unit ns, us, µs, ms, s, m or h;
    "0" alone needs no unit; "1d" and "10" are errors."""
    if isinstance(text, celtypes.DurationType):
        return text
    source = str(text)
    rest = source.lstrip("+-")
    negative = source.startswith("-")
    if rest == "0":
        return celtypes.DurationType(0)
    nanos, position = 0, 0
    while position < len(rest):
        match = _GO_COMPONENT.match(rest, position)
        if not match or not (match.group(1) or match.group(2)) or match.group(3) not in _GO_UNITS_NS:
            return CELEvalError(f"invalid duration {source!r}")
        whole, fraction, unit = match.groups()
        scale = _GO_UNITS_NS[unit]
        nanos += int(whole or 0) * scale
        if fraction:
            nanos += int(fraction) * scale // 10 ** len(fraction)
        position = match.end()
    if not rest or nanos > 2**63 - 1:
        return CELEvalError(f"invalid duration {source!r}")
    nanos = -nanos if negative else nanos
    # DurationType keeps microseconds; rounding towards zero keeps comparisons
    # with whole-microsecond bounds (every rule here compares with 1ms) exact.
    micros = abs(nanos) // 1000 * (-1 if nanos < 0 else 1)
    return celtypes.DurationType(datetime.timedelta(microseconds=micros))


KUBERNETES_FUNCTIONS = {"isIP": is_ip, "substring": substring, "duration": go_duration}

# What the rules may call: CEL's standard functions and macros (cel-python's
# base functions) and the library above. Checked by the tests, so a new CRD
# version with a function that is not implemented here is noticed.
KNOWN_FUNCTIONS = frozenset(celpy.evaluation.base_functions) | {"has", "all", "exists", "exists_one", "map", "filter"} \
    | frozenset(KUBERNETES_FUNCTIONS)


# --- rules, compiled once and attached to the schema nodes that declare them ----


@dataclass(frozen=True)
class Rule:
    text: str
    message: str
    program: Any

    @property
    def transition(self) -> bool:
        return bool(re.search(r"\boldSelf\b", self.text))


_ENVIRONMENT = celpy.Environment()


@cache
def _program(text: str):
    return _ENVIRONMENT.program(_ENVIRONMENT.compile(text), functions=KUBERNETES_FUNCTIONS)


@dataclass
class RuleNode:
    """The part of a schema that holds rules: the rules declared at this node
    and the children (properties, list items, map values) that hold some."""

    rules: list[Rule] = field(default_factory=list)
    properties: dict[str, RuleNode] = field(default_factory=dict)
    items: RuleNode | None = None
    values: RuleNode | None = None
    defaults: dict[str, Any] = field(default_factory=dict)


def rule_tree(schema: dict) -> RuleNode | None:
    """The rules of an openAPIV3Schema, or None where a subtree has none."""
    properties = {name: child for name, sub in schema.get("properties", {}).items() if (child := rule_tree(sub))}
    items = rule_tree(schema["items"]) if isinstance(schema.get("items"), dict) else None
    additional = schema.get("additionalProperties")
    values = rule_tree(additional) if isinstance(additional, dict) else None
    rules = [
        Rule(v["rule"], v.get("message") or f"failed rule: {v['rule']}", _program(v["rule"]))
        for v in schema.get("x-kubernetes-validations", [])
    ]
    if not (rules or properties or items or values):
        return None
    # The API server defaults a create before validating it, so a defaulted
    # field is there for the rules.
    defaults = {name: sub["default"] for name, sub in schema.get("properties", {}).items() if "default" in sub}
    return RuleNode(rules, properties, items, values, defaults)


@dataclass(frozen=True)
class Failure:
    path: str
    rule: Rule
    error: str | None  # why the rule could not be evaluated, if it could not

    def __str__(self) -> str:
        detail = f" (rule {self.rule.text!r} failed: {self.error})" if self.error else ""
        return f"{self.path or '<root>'}: {self.rule.message}{detail}"


def rule_failures(node: RuleNode | None, value: Any, path: str = "") -> list[Failure]:
    """The rules that refuse `value` on create, where they apply. An
    evaluation error refuses too, as in the API server."""
    if node is None or value is None:
        return []
    failures = []
    if isinstance(value, dict) and node.defaults:
        value = {**{k: v for k, v in node.defaults.items() if k not in value}, **value}
    for rule in node.rules:
        if rule.transition:
            continue  # needs oldSelf: checked on update only
        try:
            result = rule.program.evaluate({"self": celpy.json_to_cel(value)})
        except CELEvalError as error:
            result = error
        if isinstance(result, CELEvalError):
            failures.append(Failure(path, rule, str(result.args[0])))
        elif not (isinstance(result, celtypes.BoolType) and result):
            failures.append(Failure(path, rule, None))
    if isinstance(value, dict):
        for key, item in value.items():
            # A structural schema has either properties or additionalProperties.
            failures += rule_failures(node.properties.get(key, node.values), item, f"{path}.{key}" if path else key)
    elif isinstance(value, list) and node.items:
        for index, item in enumerate(value):
            failures += rule_failures(node.items, item, f"{path}[{index}]")
    return failures
