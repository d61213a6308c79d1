"""The upstream schema checks themselves: the Kubernetes CEL functions, how
rules apply, that every CRD rule can refuse a document, that every custom
resource of every shipped stack passes, and that missing schemas are said."""

from __future__ import annotations

import datetime
import re
from pathlib import Path

import pytest

import schemas
from conftest import planned
from crd_cel import KNOWN_FUNCTIONS, Rule, RuleNode, _program, go_duration, is_ip, rule_failures, rule_tree, substring
from patterns import offline
from celpy import celtypes
from celpy.evaluation import CELEvalError

API_VERSIONS = {
    "CiliumEgressGatewayPolicy": "cilium.io/v2",
    "DestinationRule": "networking.istio.io/v1",
    "Gateway": "networking.istio.io/v1",
    "ServiceEntry": "networking.istio.io/v1",
    "Sidecar": "networking.istio.io/v1",
    "VirtualService": "networking.istio.io/v1",
    "AuthorizationPolicy": "security.istio.io/v1",
    "PeerAuthentication": "security.istio.io/v1",
    "ClusterPolicy": "kyverno.io/v1",
}


# --- the Kubernetes library functions ------------------------------------------


@pytest.mark.parametrize(("text", "valid"), [
    ("10.0.1.20", True), ("2001:db8::1", True), ("::1", True),
    ("10.0.1.300", False), ("10.0.1", False), ("010.0.1.20", False),  # netip: no leading zeros
    ("fe80::1%eth0", False), ("::ffff:10.0.1.20", False),  # zones and IPv4-mapped IPv6 refused
    ("10.0.1.0/24", False), ("", False), ("corebank.corp.example", False),
])
def test_is_ip_follows_the_kubernetes_ip_library(text, valid):
    assert is_ip(celtypes.StringType(text)) == celtypes.BoolType(valid)


def test_substring_counts_code_points_and_refuses_out_of_range():
    text = celtypes.StringType("unix://ä/x")
    assert substring(text, celtypes.IntType(7), celtypes.IntType(8)) == "ä"
    assert substring(text, celtypes.IntType(7)) == "ä/x"
    assert substring(text, celtypes.IntType(10), celtypes.IntType(10)) == ""
    assert isinstance(substring(text, celtypes.IntType(7), celtypes.IntType(11)), CELEvalError)
    assert isinstance(substring(text, celtypes.IntType(-1)), CELEvalError)
    assert isinstance(substring(text, celtypes.IntType(8), celtypes.IntType(7)), CELEvalError)


@pytest.mark.parametrize(("text", "micros"), [
    ("1ms", 1000), ("1.5s", 1_500_000), ("1h30m", 5_400_000_000), ("250us", 250), ("250µs", 250),
    ("999999ns", 999), ("-2m", -120_000_000), ("0", 0), (".5s", 500_000),
])
def test_duration_parses_go_durations(text, micros):
    assert go_duration(celtypes.StringType(text)) == datetime.timedelta(microseconds=micros)


@pytest.mark.parametrize("text", ["1d", "10", "", "s", "1.s.", "1 s", "+", "9999999999h"])
def test_duration_refuses_what_go_refuses(text):
    assert isinstance(go_duration(celtypes.StringType(text)), CELEvalError)


# --- how rules apply -------------------------------------------------------------


def _node(schema: dict) -> RuleNode:
    tree = rule_tree(schema)
    assert tree is not None
    return tree


def test_a_rule_applies_to_every_value_of_its_node_and_only_to_present_ones():
    positive = {"type": "integer", "x-kubernetes-validations": [{"rule": "self > 0", "message": "positive"}]}
    tree = _node({"type": "object", "properties": {
        "list": {"type": "array", "items": positive},
        "map": {"type": "object", "additionalProperties": positive},
        "one": positive,
        "plain": {"type": "string"},
    }})
    failures = rule_failures(tree, {"list": [1, 0, -1], "map": {"a": 2, "b": 0}, "plain": "x"})
    assert [(f.path, f.rule.message) for f in failures] == [("list[1]", "positive"), ("list[2]", "positive"),
                                                            ("map.b", "positive")]
    assert rule_failures(tree, {}) == []  # absent nodes are not evaluated
    assert rule_tree({"type": "object", "properties": {"plain": {"type": "string"}}}) is None


def test_defaults_are_applied_before_the_rules_and_messages_default_to_the_rule():
    tree = _node({"type": "object", "properties": {"replicas": {"type": "integer", "default": 1}},
                  "x-kubernetes-validations": [{"rule": "self.replicas >= 2"}]})
    [failure] = rule_failures(tree, {})
    assert str(failure) == "<root>: failed rule: self.replicas >= 2"
    assert rule_failures(tree, {"replicas": 3}) == []


def test_an_evaluation_error_refuses_and_transition_rules_wait_for_an_update():
    tree = _node({"type": "object", "x-kubernetes-validations": [
        {"rule": "self.missing == 1", "message": "needs missing"},
        {"rule": "self == oldSelf", "message": "immutable"},  # only with an old object
    ]})
    [failure] = rule_failures(tree, {"present": 1})
    assert failure.rule.message == "needs missing" and failure.error
    assert Rule("self.x == oldSelf.x", "m", None).transition and not Rule("self.oldSelfish", "m", None).transition


# --- the CRDs' rules -----------------------------------------------------------------


def _rules(schema: dict) -> list[dict]:
    """Every x-kubernetes-validations entry of a schema, at any depth."""
    found = list(schema.get("x-kubernetes-validations", []))
    children = list(schema.get("properties", {}).values())
    children += [schema[k] for k in ("items", "additionalProperties") if isinstance(schema.get(k), dict)]
    for child in children:
        found += _rules(child)
    return found


def test_the_evaluator_covers_every_rule_feature_the_crds_use():
    every = [rule for schema in schemas.crd_schemas().values() for rule in _rules(schema)]
    assert len(every) > 100
    for rule in every:
        assert set(rule) <= {"rule", "message"}, rule  # no messageExpression, fieldPath, reason
        code = re.sub(r"'[^']*'|\"[^\"]*\"", "''", rule["rule"])
        called = set(re.findall(r"([A-Za-z_]\w*)\s*\(", code))
        assert called <= KNOWN_FUNCTIONS, (called - KNOWN_FUNCTIONS, rule["rule"])
        assert "__" not in code, rule  # no property names that CEL would need escaped
        _program(rule["rule"])  # compiles
    assert not _rules(schemas.crd_schemas()[("kyverno.io/v1", "ClusterPolicy")])  # Kyverno 1.19 declares none


def _tls_both(*fields):
    return {name: (["a"] if name.endswith("s") else "a") if name != "tlsCertificates" else [{"certChain": "c"}]
            for name in fields}


_SELECTOR_LABELS = [{"app*": "x"}, {"": "x"}, {"app": "x*"}]
# One document per (kind, rule) that the rule must refuse.
VIOLATIONS = [
    ("CiliumEgressGatewayPolicy", {"egressGateway": {"egressIP": "10.0.1.300"}}),
    ("CiliumEgressGatewayPolicy", {"egressGateways": [{"egressIP": "fe80::1%eth0"}]}),
    *[("DestinationRule", {"trafficPolicy": {"connectionPool": {"tcp": {"connectTimeout": "500us"}}},
                           "workloadSelector": {"matchLabels": labels}}) for labels in _SELECTOR_LABELS],
    ("DestinationRule", {"subsets": [{"name": "a", "trafficPolicy": {"outlierDetection": {"interval": "1d"}}}]}),
    ("Gateway", {"servers": [{"tls": _tls_both("tlsCertificates", "credentialNames")}]}),
    ("Gateway", {"servers": [{"tls": _tls_both("credentialName", "credentialNames")}]}),
    ("ServiceEntry", {"hosts": ["*"], "addresses": ["10.101.4.16/28"], "resolution": "DNS",
                      "workloadSelector": {"labels": {"app": "*"}}, "endpoints": [{"address": "10.101.4.17"}]}),
    ("ServiceEntry", {"hosts": ["a.example"], "resolution": "NONE", "endpoints": [{"address": "10.101.4.17"}]}),
    ("ServiceEntry", {"hosts": ["a.example"], "resolution": "DNS_ROUND_ROBIN",
                      "endpoints": [{"address": "a.example"}, {"address": "b.example"}]}),
    ("ServiceEntry", {"hosts": ["a.example"], "resolution": "STATIC", "endpoints": [
        {"labels": {}}, {"address": "unix:///run/a.sock", "ports": {"tcp": 80}}, {"address": "unix://run"},
        {"address": "unix:///run/"}, {"address": "10.0.0.1", "ports": {"-tcp": 70000}},
    ], "ports": [{"number": 0, "name": "a", "targetPort": 70000}, {"number": 0, "name": "b"}]}),
    ("Sidecar", {"inboundConnectionPool": {"tcp": {"connectTimeout": "0s"}},
                 "workloadSelector": {"labels": {"app": "*"}}}),
    ("Sidecar", {"ingress": [{"tls": _tls_both("tlsCertificates", "credentialNames")}]}),
    ("Sidecar", {"ingress": [{"tls": _tls_both("credentialName", "credentialNames")}]}),
    ("VirtualService", {"http": [{"timeout": "0.5ms"}]}),
    *[("AuthorizationPolicy", {"selector": {"matchLabels": labels}, "targetRef": {"namespace": "other"},
                               "targetRefs": [{"namespace": "other"}],
                               "rules": [{"from": [{"source": {"serviceAccounts": ["a/b"], "principals": ["c"]}}]}]})
      for labels in _SELECTOR_LABELS],
    ("PeerAuthentication", {"portLevelMtls": {"0": {"mode": "STRICT"}}}),
    *[("PeerAuthentication", {"selector": {"matchLabels": labels}}) for labels in _SELECTOR_LABELS],
]


def _document(kind: str, spec: dict) -> dict:
    return {"apiVersion": API_VERSIONS[kind], "kind": kind, "metadata": {"name": "x", "namespace": "y"}, "spec": spec}


def test_every_rule_of_every_crd_refuses_a_document_that_breaks_it():
    refused: set[tuple[str, str]] = set()
    for kind, spec in VIOLATIONS:
        document = _document(kind, spec)
        failures = schemas.crd_rule_failures(document)
        assert failures, (kind, spec)
        errors = schemas.crd_errors(document)
        assert all(str(f) in errors for f in failures)
        refused |= {(kind, f.rule.text) for f in failures}
    declared = {(kind, rule["rule"]) for kind, version in API_VERSIONS.items()
                for rule in _rules(schemas.crd_schemas()[(version, kind)])}
    assert declared - refused == set()
    assert {kind for kind, _ in declared} == set(API_VERSIONS) - {"ClusterPolicy"}


def test_a_service_entry_with_a_range_and_dns_resolution_is_refused():
    document = _document("ServiceEntry", {"hosts": ["ledger-db.corp.example"], "addresses": ["10.101.4.16/28"],
                                          "ports": [{"number": 1521, "name": "tcp-1521", "protocol": "TCP"}],
                                          "resolution": "DNS", "location": "MESH_EXTERNAL"})
    assert schemas.crd_errors(document) == ["spec: CIDR addresses are allowed only for NONE/STATIC resolution types"]
    document["spec"]["resolution"] = "NONE"
    assert schemas.crd_errors(document) == []


# --- every custom resource of every shipped stack ------------------------------------


def _custom(resource) -> bool:
    group = resource.inputs.get("apiVersion", "").rpartition("/")[0] if isinstance(resource.inputs, dict) else ""
    return "." in group and not group.endswith(".k8s.io")


@pytest.mark.parametrize("stack", offline.stack_names())
def test_every_custom_resource_of_a_shipped_stack_passes_its_crd(stack):
    custom = [r for r in planned(stack).resources if _custom(r)]
    assert custom
    for resource in custom:
        document = {k: resource.inputs[k] for k in ("apiVersion", "kind", "metadata", "spec") if k in resource.inputs}
        assert schemas.crd_errors(document) == [], resource.name


# --- without the schemas ---------------------------------------------------------------


def test_missing_schemas_skip_with_the_expected_path_and_fail_when_required(monkeypatch):
    monkeypatch.setattr(schemas, "SCHEMAS", None)
    monkeypatch.delenv(schemas.REQUIRE_SCHEMAS, raising=False)
    with pytest.raises(pytest.skip.Exception, match=re.escape(str(schemas.EXPECTED_SCHEMAS))):
        schemas.helm_values_validator("gateway", "1.30.3")
    monkeypatch.setenv(schemas.REQUIRE_SCHEMAS, "true")
    with pytest.raises(pytest.fail.Exception, match=r"in CI \(CI is set\) that is a failure"):
        schemas.helm_values_validator("gateway", "1.30.3")


def test_ci_requires_the_schemas():
    ci = (Path(__file__).resolve().parents[1] / ".ci" / "run").read_text()
    assert re.search(rf"^export {schemas.REQUIRE_SCHEMAS}=\S+$", ci, re.MULTILINE)
    assert ci.index(f"export {schemas.REQUIRE_SCHEMAS}=") < ci.index("pytest")
