"""Guardrails: the generated Kyverno ClusterPolicies (per pattern), the Kyverno
release, tenant access, and the config checks of `iamRoleArn`."""

from __future__ import annotations

import json

import kyverno_engine as kyverno
import pytest

from dataclasses import replace

from conftest import stack_config
from patterns import offline
from patterns.access import TENANT_ROLE, TENANT_ROLE_RULES
from patterns.admission import TENANT_DEFAULTS, TENANT_ISOLATION
from patterns.cluster import SYSTEM_LABEL
from patterns.guardrails import (
    GATEWAY_NODES,
    KYVERNO_NAMESPACE,
    NO_EXTERNAL_IPS,
    NO_NODE_NAME,
    TENANT_NAMESPACES,
    TENANT_OBJECTS,
    cluster_policies,
    kyverno_values,
)
from patterns.istio import SIDECAR_BYPASS_ANNOTATIONS
from patterns.istio import SIDECAR_POLICY as SIDECAR
from patterns.plan import Plan
from patterns.program import plan_from_config
from patterns.settings import PATTERN_NAMES, ConfigError
from schemas import crd_errors
from patterns.tenancy import GATEWAY_KEY, TENANT_KEY


def plan_of(pattern: str) -> Plan:
    """The shipped stack's plan: tenants payments and reporting (namespace reporting-prod), and more."""
    return plan_from_config(pattern, offline.engine_config(stack_config(pattern)))


def policies_by_name(pattern: str, gateways: tuple[str, ...] | None = None) -> dict[str, dict]:
    plan = plan_of(pattern)
    if gateways is not None:
        spec = replace(plan.spec, gateway_namespaces=gateways)
        plan = replace(plan, spec=spec, parts={name: replace(part, spec=spec) for name, part in plan.parts.items()})
    return {p["metadata"]["name"]: p for p in cluster_policies(plan)}


def tenant_namespaces(pattern: str) -> list[str]:
    return [t.k8s_namespace for t in plan_of(pattern).settings.tenants]


def rules(policy: dict) -> dict[str, dict]:
    return {r["name"]: r for r in policy["spec"]["rules"]}


# --- one rule at a time, through the Kyverno engine of tests/kyverno_engine.py -----------------


def _resolve(value, request):
    return kyverno._resolve(value, request["object"], request.get("namespace", ""), request.get("operation", "CREATE"))


def denied(rule: dict, pod: dict, namespace: str, operation: str = "CREATE") -> bool:
    """Whether this rule alone refuses the pod (the rule must apply to it)."""
    policy = {"metadata": {"name": "one-rule"}, "spec": {"rules": [rule]}}
    return not kyverno.review([policy], pod, namespace, operation).admitted


def pod(tolerations=None, node_selector=None, labels=None, node_name=None) -> dict:
    spec = {"containers": [{"name": "app", "image": "app:1"}]}
    if tolerations is not None:
        spec["tolerations"] = tolerations
    if node_selector is not None:
        spec["nodeSelector"] = node_selector
    if node_name is not None:
        spec["nodeName"] = node_name
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "labels": labels or {}}, "spec": spec}


def toleration(key, value=None, operator="Equal"):
    t = {"key": key, "operator": operator, "effect": "NoSchedule"}
    if value is not None:
        t["value"] = value
    return t


# --- schema: every pattern's policies are valid ClusterPolicies ------------------


@pytest.mark.parametrize("pattern", PATTERN_NAMES)
def test_policies_validate_against_the_kyverno_crd(pattern):
    for policy in policies_by_name(pattern, ("gateways",)).values():
        assert crd_errors(policy) == [], policy["metadata"]["name"]


def test_the_schema_check_can_fail():
    policy = cluster_policies(plan_of("subnet-cidr"))[0]
    policy["spec"]["rules"][0]["validate"] = {"failureAction": "Block"}
    assert any("'Block' is not one of" in e for e in crd_errors(policy))
    policy["spec"]["rules"][0]["validate"] = {"failureActon": "Enforce"}
    assert any("'failureActon' was unexpected" in e for e in crd_errors(policy))


@pytest.mark.parametrize("pattern", PATTERN_NAMES)
def test_every_rule_enforces_with_a_message_and_fails_closed(pattern):
    for policy in policies_by_name(pattern).values():
        spec = policy["spec"]
        assert "validationFailureAction" not in spec  # deprecated; set per rule
        assert spec["webhookConfiguration"]["failurePolicy"] == "Fail"
        names = [r["name"] for r in spec["rules"]]
        assert len(names) == len(set(names)) and all(len(n) <= 63 for n in names)
        for rule in spec["rules"]:
            assert "mutate" in rule or rule["validate"]["failureAction"] == "Enforce"
            if "validate" in rule:
                assert len(rule["validate"]["message"]) > 40
            for entry in rule["match"]["any"]:
                # never DELETE: `pulumi destroy` must be able to remove tenants
                assert set(entry["resources"]["operations"]) <= {"CREATE", "UPDATE"}


def test_which_policies_each_pattern_gets():
    common = {TENANT_NAMESPACES, GATEWAY_NODES, NO_NODE_NAME, NO_EXTERNAL_IPS, TENANT_OBJECTS}
    assert set(policies_by_name("subnet-cidr")) == common | {TENANT_DEFAULTS, TENANT_ISOLATION}
    assert set(policies_by_name("private-nat")) == common | {TENANT_DEFAULTS, TENANT_ISOLATION}
    assert set(policies_by_name("cilium")) == common | {TENANT_DEFAULTS, TENANT_ISOLATION}
    assert set(policies_by_name("istio")) == common | {SIDECAR}


# --- subnet-cidr and private-nat: placement on the tenant's own nodes ------------


@pytest.mark.parametrize("pattern", ["subnet-cidr", "private-nat"])
def test_placement_mutations_target_each_tenant_namespace(pattern):
    defaults = policies_by_name(pattern)[TENANT_DEFAULTS]
    assert defaults["metadata"]["annotations"]["pod-policies.kyverno.io/autogen-controllers"] == "none"
    by_name = rules(defaults)
    selector = by_name["reporting-node-selector"]
    assert selector["match"]["any"][0]["resources"] == {
        "kinds": ["Pod"], "namespaces": ["reporting-prod"], "operations": ["CREATE"]
    }
    assert selector["mutate"]["patchStrategicMerge"] == {"spec": {"nodeSelector": {f"+({TENANT_KEY})": "reporting"}}}
    add = by_name["reporting-toleration"]
    assert json.loads(add["mutate"]["patchesJson6902"]) == [
        {"op": "add", "path": "/spec/tolerations/-",
         "value": {"key": TENANT_KEY, "operator": "Equal", "value": "reporting", "effect": "NoSchedule"}}
    ]
    # added only when the pod has no tenant toleration yet
    precondition = add["preconditions"]["all"][0]
    request = {"object": pod([toleration(TENANT_KEY, "payments")])}
    assert _resolve(precondition["key"], request) == 1 != precondition["value"]
    assert _resolve(precondition["key"], {"object": pod()}) == 0 == precondition["value"]
    on_own = by_name["payments-on-own-nodes"]
    assert on_own["validate"]["pattern"] == {"spec": {"nodeSelector": {TENANT_KEY: "payments"}}}
    assert on_own["match"]["any"][0]["resources"]["namespaces"] == ["payments"]


@pytest.mark.parametrize(
    ("spec", "refused"),
    [
        ({}, False),  # the mutation adds the placement
        ({"tolerations": [toleration(TENANT_KEY, "payments")], "node_selector": {TENANT_KEY: "payments"}}, False),
        ({"tolerations": [toleration("other", "x")]}, False),
        ({"tolerations": [toleration(TENANT_KEY, "reporting")]}, True),
        ({"tolerations": [toleration(TENANT_KEY, operator="Exists")]}, True),
        ({"node_selector": {TENANT_KEY: "reporting"}}, True),
        ({"tolerations": [toleration(TENANT_KEY, "payments"), toleration(TENANT_KEY, "reporting")]}, True),
    ],
)
def test_a_tenant_pod_is_refused_with_another_tenants_placement(spec, refused):
    rule = rules(policies_by_name("subnet-cidr")[TENANT_ISOLATION])["payments-no-foreign-nodes"]
    assert rule["match"]["any"][0]["resources"]["namespaces"] == ["payments"]
    assert denied(rule, pod(**spec), "payments") is refused
    assert "payments" in rule["validate"]["message"] and "toleration" in rule["validate"]["message"]


@pytest.mark.parametrize(
    ("spec", "refused"),
    [
        ({}, False),
        ({"tolerations": [toleration("dedicated", "x")]}, False),
        ({"tolerations": [toleration(TENANT_KEY, "payments")]}, True),
        ({"tolerations": [toleration(TENANT_KEY, operator="Exists")]}, True),
        ({"node_selector": {TENANT_KEY: "payments"}}, True),
    ],
)
def test_pods_outside_tenant_namespaces_cannot_use_tenant_nodes(spec, refused):
    rule = rules(policies_by_name("private-nat")[TENANT_ISOLATION])["tenant-nodes-only-for-tenants"]
    assert rule["exclude"]["any"][0]["resources"]["namespaces"] == tenant_namespaces("private-nat")
    assert "namespaces" not in rule["match"]["any"][0]["resources"]
    assert denied(rule, pod(**spec), "default") is refused


# --- cilium: the tenant label ----------------------------------------------------


def test_cilium_pods_get_and_keep_their_tenant_label():
    policies = policies_by_name("cilium")
    defaults = rules(policies[TENANT_DEFAULTS])
    assert defaults["reporting-add-label"]["mutate"]["patchStrategicMerge"] == {
        "metadata": {"labels": {f"+({TENANT_KEY})": "reporting"}}
    }
    assert defaults["reporting-require-label"]["validate"]["pattern"] == {"metadata": {"labels": {TENANT_KEY: "reporting"}}}
    assert defaults["reporting-require-label"]["match"]["any"][0]["resources"]["namespaces"] == ["reporting-prod"]
    assert not any("tolerations" in json.dumps(r) for r in policies[TENANT_DEFAULTS]["spec"]["rules"])

    isolation = rules(policies[TENANT_ISOLATION])
    own = isolation["payments-own-label"]
    assert not denied(own, pod(labels={TENANT_KEY: "payments"}), "payments")
    assert not denied(own, pod(labels={"app": "x"}), "payments")
    assert denied(own, pod(labels={TENANT_KEY: "reporting"}), "payments", "UPDATE")
    elsewhere = isolation["tenant-label-only-in-tenant-namespaces"]
    assert elsewhere["exclude"]["any"][0]["resources"]["namespaces"] == tenant_namespaces("cilium")
    assert denied(elsewhere, pod(labels={TENANT_KEY: "payments"}), "default")
    assert not denied(elsewhere, pod(labels={"app": "x"}), "default")


# --- istio: sidecar on, no opt-out ---------------------------------------------------


def test_istio_tenant_pods_keep_the_sidecar():
    policies = policies_by_name("istio")
    sidecar = rules(policies[SIDECAR])
    opt_out = sidecar["no-sidecar-opt-out"]
    assert opt_out["match"]["any"][0]["resources"]["namespaces"] == tenant_namespaces("istio")
    assert opt_out["validate"]["pattern"]["metadata"] == {
        "=(labels)": {"=(sidecar.istio.io/inject)": "true"},
        "=(annotations)": {"=(sidecar.istio.io/inject)": "true"},
    }
    bypass = sidecar["no-sidecar-bypass"]["validate"]["deny"]["conditions"]["any"]
    refused_keys = [c["value"] for c in bypass if c["operator"] == "AnyIn"]
    assert refused_keys == [list(SIDECAR_BYPASS_ANNOTATIONS)]
    assert "traffic.sidecar.istio.io/excludeOutboundIPRanges" in SIDECAR_BYPASS_ANNOTATIONS
    namespaces = rules(policies[TENANT_NAMESPACES])
    assert namespaces["reporting-namespace-labels"]["validate"]["pattern"]["metadata"]["labels"] == {
        TENANT_KEY: "reporting", "pod-security.kubernetes.io/enforce": "baseline | restricted",
        "istio-injection": "enabled",
    }
    assert namespaces["reporting-namespace-labels"]["match"]["any"][0]["resources"]["names"] == ["reporting-prod"]


# --- every pattern: gateway nodes, namespace labels, no nodeName -------------------


@pytest.mark.parametrize("pattern", PATTERN_NAMES)
def test_only_gateway_pods_tolerate_gateway_nodes(pattern):
    rule = rules(policies_by_name(pattern, ("istio-egress",))[GATEWAY_NODES])["gateway-taint-only-for-gateways"]
    assert rule["exclude"]["any"][0]["resources"]["namespaces"] == ["istio-egress"]
    assert denied(rule, pod([toleration(GATEWAY_KEY, "true")]), "payments")
    assert denied(rule, pod([{"operator": "Exists"}]), "default")  # tolerates every taint
    assert not denied(rule, pod([toleration(TENANT_KEY, "payments")]), "payments")
    assert not denied(rule, pod(), "default")
    assert "exclude" not in rules(policies_by_name(pattern, ())[GATEWAY_NODES])["gateway-taint-only-for-gateways"]


@pytest.mark.parametrize("pattern", PATTERN_NAMES)
def test_tenant_namespaces_keep_their_labels_and_pods_keep_the_scheduler(pattern):
    policies = policies_by_name(pattern)
    labels = rules(policies[TENANT_NAMESPACES])["payments-namespace-labels"]
    assert labels["match"]["any"][0]["resources"] == {
        "kinds": ["Namespace"], "names": ["payments"], "operations": ["CREATE", "UPDATE"]
    }
    assert labels["validate"]["pattern"]["metadata"]["labels"][TENANT_KEY] == "payments"
    assert labels["validate"]["pattern"]["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "baseline | restricted"
    node_name = policies[NO_NODE_NAME]
    assert node_name["spec"]["background"] is False
    rule = rules(node_name)["no-node-name"]
    assert rule["match"]["any"][0]["resources"]["operations"] == ["CREATE"]
    assert denied(rule, pod(node_name="ip-10-20-72-10.eu-west-1.compute.internal"), "default")
    assert not denied(rule, pod(), "default")


def test_kyverno_values_are_highly_available_and_leave_kube_system_alone():
    values = kyverno_values()
    assert values["admissionController"]["replicas"] >= 3
    for controller in ("admissionController", "backgroundController", "cleanupController", "reportsController"):
        assert values[controller]["replicas"] >= 2
        assert values[controller]["podDisruptionBudget"] == {"enabled": True, "minAvailable": 1}
        assert values[controller]["topologySpreadConstraints"][0]["topologyKey"] == "topology.kubernetes.io/zone"
    assert values["config"]["webhooks"]["namespaceSelector"]["matchExpressions"] == [
        {"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": ["kube-system"]}
    ]
    assert values["config"]["excludeKyvernoNamespace"] is True
    assert "forceFailurePolicyIgnore" not in json.dumps(values)
    assert values["global"]["nodeSelector"] == SYSTEM_LABEL


# --- the deployed graph ----------------------------------------------------------------


@pytest.fixture(scope="module")
def graph():
    return offline.run_stack("subnet-cidr")


def test_kyverno_release_is_pinned_and_waits_for_system_nodes(graph):
    release = graph.get("kubernetes:helm.sh/v3:Release", "egress-kyverno")
    inputs = release.inputs
    assert (inputs["chart"], inputs["version"], inputs["repositoryOpts"]["repo"]) == (
        "kyverno", "3.9.0", "https://kyverno.github.io/kyverno/"
    )
    assert inputs["namespace"] == KYVERNO_NAMESPACE and inputs["name"] == "kyverno"
    assert inputs["skipAwait"] is False and inputs["timeout"] >= 600
    assert inputs["values"] == kyverno_values()
    system = graph.get("aws:eks/nodeGroup:NodeGroup", "egress-system")
    namespace = graph.get("kubernetes:core/v1:Namespace", "egress-kyverno")
    opened = graph.get("kubernetes:networking.k8s.io/v1:NetworkPolicy", "egress-kyverno-platform-allow-all")
    assert set(release.dependencies) == {system.urn, namespace.urn, opened.urn}
    assert release.provider.endswith("egress-k8s")


def test_cluster_policies_in_the_graph_are_the_generated_ones(graph):
    release = graph.get("kubernetes:helm.sh/v3:Release", "egress-kyverno")
    deployed = {r.inputs["metadata"]["name"]: r for r in graph.by_type("kubernetes:kyverno.io/v1:ClusterPolicy")}
    plan = graph.plan
    expected = {p["metadata"]["name"]: p for p in cluster_policies(plan)}
    assert set(deployed) == set(expected)
    for name, resource in deployed.items():
        assert resource.inputs["spec"] == expected[name]["spec"]
        assert resource.dependencies == (release.urn,)
        assert resource.provider.endswith("egress-k8s")
    assert "egress-tenant-isolation" in deployed
    assert graph.get("kubernetes:kyverno.io/v1:ClusterPolicy", "egress-tenant-isolation")


def test_only_tenants_with_a_role_get_an_access_entry_and_edit_rights(graph):
    entries = graph.by_type("aws:eks/accessEntry:AccessEntry")
    assert [e.name for e in entries] == ["egress-payments-access"]
    assert entries[0].inputs["principalArn"] == "arn:aws:iam::111122223333:role/payments-developers"
    assert entries[0].inputs["kubernetesGroups"] == ["egress-tenant-payments"]
    assert entries[0].inputs["type"] == "STANDARD"
    assert not graph.by_type("aws:eks/accessPolicyAssociation:AccessPolicyAssociation")
    (role,) = graph.by_type("kubernetes:rbac.authorization.k8s.io/v1:Role")
    (binding,) = graph.by_type("kubernetes:rbac.authorization.k8s.io/v1:RoleBinding")
    assert role.inputs["metadata"] == {"name": TENANT_ROLE, "namespace": "payments"}
    assert binding.inputs["metadata"]["namespace"] == "payments"
    assert binding.inputs["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": TENANT_ROLE}
    assert binding.inputs["subjects"] == [
        {"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "egress-tenant-payments"}
    ]


def test_the_tenant_role_cannot_change_isolation():
    writes = {"create", "update", "patch", "delete", "deletecollection"}
    granted = {
        (group, resource)
        for rule in TENANT_ROLE_RULES
        if writes & set(rule["verbs"])
        for group in rule["apiGroups"]
        for resource in rule["resources"]
    }
    groups = {g for g, _ in granted}
    assert groups <= {"", "apps", "batch", "autoscaling", "policy"}  # no CRDs, no RBAC
    assert ("", "namespaces") not in granted
    assert not any(r.startswith(("pods/ephemeralcontainers", "serviceaccounts/")) for _, r in granted)
    assert all("*" not in rule["verbs"] + rule["resources"] + rule["apiGroups"] for rule in TENANT_ROLE_RULES)
    assert not any("impersonate" in rule["verbs"] or "escalate" in rule["verbs"] for rule in TENANT_ROLE_RULES)
    read_only = [r for r in TENANT_ROLE_RULES if "networkpolicies" in r["resources"]]
    assert read_only == [{"apiGroups": ["networking.k8s.io"], "resources": ["networkpolicies", "ingresses"],
                          "verbs": ["get", "list", "watch"]}]


# --- bad input ---------------------------------------------------------------------------


def _config(**tenant_changes) -> dict:
    config = offline.read_stack_file(offline.stack_path("subnet-cidr"))
    config["egress:tenants"] = [dict(t) for t in config["egress:tenants"]]
    for index, changes in tenant_changes.items():
        config["egress:tenants"][int(index.removeprefix("t"))].update(changes)
    return config


def _problems(config) -> dict[str, str]:
    with pytest.raises(ConfigError) as error:
        offline.run("bad", config)
    return {p.key: p.message for p in error.value.problems}


def test_a_malformed_tenant_role_is_named_with_the_fix():
    problems = _problems(_config(t1={"iamRoleArn": "payments-devs"}))
    assert problems == {
        "egress:tenants[1].iamRoleArn":
            "'payments-devs' is not an IAM role ARN; use arn:aws:iam::<account>:role/<name>"
    }


def test_a_tenant_role_shared_with_admins_or_tenants_is_refused():
    admin = "arn:aws:iam::111122223333:role/platform-admin"
    shared = "arn:aws:iam::111122223333:role/payments-developers"
    problems = _problems(_config(t0={"iamRoleArn": admin}))
    assert "is also in egress:clusterAdminRoleArns" in problems["egress:tenants[0].iamRoleArn"]
    assert "use a separate role" in problems["egress:tenants[0].iamRoleArn"]
    problems = _problems(_config(t1={"iamRoleArn": shared}))
    assert problems == {
        "egress:tenants[1].iamRoleArn": f"'{shared}' is already used by tenants[0]; each tenant needs its own iamRoleArn"
    }


def test_a_tenant_quota_is_validated_with_its_key_and_fix():
    from conftest import assert_problem, config_with, stack_config
    tenants = stack_config("subnet-cidr")["egress:tenants"]
    bad = [{**tenants[0], "quota": {"cpu": "eight", "pods": 0}},
           {**tenants[1], "quota": {"memory": "1Gi", "containerMemory": "2Gi"}}]
    config = config_with("subnet-cidr", tenants=bad)
    assert_problem(config, "egress:tenants[0].quota.cpu", "'eight' is not a positive Kubernetes quantity", "500m")
    assert_problem(config, "egress:tenants[0].quota.pods", "0 is out of range; use 1-10000")
    good = [{**tenants[0], "quota": {"cpu": 4, "memory": "8Gi"}}, tenants[1]]
    config = config_with("subnet-cidr", tenants=[good[0], bad[1]])
    assert_problem(config, "egress:tenants[1].quota.containerMemory", "2Gi is more than the namespace's quota.memory (1Gi)")
    plan = plan_from_config("q", offline.engine_config(config_with("subnet-cidr", tenants=good)))
    assert (plan.settings.tenants[0].quota.cpu, plan.settings.tenants[1].quota.cpu) == ("4", "8")


def test_kyvernos_admission_controller_outranks_every_tenant_pod():
    assert kyverno_values()["admissionController"]["priorityClassName"] == "system-cluster-critical"
