"""Attacks by a tenant team acting alone: its IAM role, hence its access entry
and the edit Role in its own namespace, against each pattern's shipped stack.

One test per attack, over every pattern of the registry where it applies. Each
asserts the attack is refused by the rendered policies (evaluated as Kyverno
would, on the object the mutating webhook leaves: tests/kyverno_engine.py) or made
impossible by the resource graph, and shows the same attack getting through
once its guard is removed.
"""

from __future__ import annotations

import copy
import json
from dataclasses import replace
from functools import lru_cache

import pytest

from conftest import ADDON, NETPOL, assert_problem, planned, problems, stack_config
from kyverno_engine import api_server_pod, review, without_rule
from patterns import offline
from patterns import program as program_module
from patterns import plan as plan_module
from patterns.admission import KYVERNO_NAMESPACE, PLATFORM_NAMESPACES, WAIT_FOR_READY
from patterns.cluster import PLATFORM_POLICY
from patterns.guardrails import (
    GATEWAY_NODES,
    NO_EXTERNAL_IPS,
    NO_NODE_NAME,
    SERVICE_ACCOUNT_TOKEN,
    TENANT_OBJECTS,
    cluster_policies,
)
from patterns.plan import Plan, reserved_namespaces
from patterns.registry import PATTERNS
from patterns.tenancy import GATEWAY_KEY, SYSTEM_PRIORITY_CLASSES, TENANT_KEY
from patterns.versions import KUBERNETES_MINORS

PATTERN_NAMES = sorted(PATTERNS)
CLUSTER_POLICY = "kubernetes:kyverno.io/v1:ClusterPolicy"
ROLE_BINDING = "kubernetes:rbac.authorization.k8s.io/v1:RoleBinding"
ACCESS_ENTRY = "aws:eks/accessEntry:AccessEntry"
RESOURCE_QUOTA = "kubernetes:core/v1:ResourceQuota"
LIMIT_RANGE = "kubernetes:core/v1:LimitRange"


@lru_cache(maxsize=None)
def plan_of(pattern: str) -> Plan:
    return offline.plan_from_config(pattern, offline.engine_config(stack_config(pattern)))


def policies(pattern: str) -> list[dict]:
    return cluster_policies(plan_of(pattern))


def attacker(pattern: str):
    """The first tenant (the attacker) and another tenant (the victim)."""
    tenants = plan_of(pattern).settings.tenants
    return tenants[0], tenants[1]


def pod(**fragment) -> dict:
    obj = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "attack"},
           "spec": {"containers": [{"name": "app", "image": "public.ecr.aws/docker/library/busybox:1.36"}]}}
    for part, values in fragment.items():
        obj.setdefault(part, {}).update(copy.deepcopy(values))
    return api_server_pod(obj)


def service(**spec) -> dict:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "attack"},
            "spec": {"type": "ClusterIP", "selector": {"app": "x"}, "ports": [{"port": 443}], **spec}}


def assert_refused_only_by(pattern: str, obj: dict, namespace: str, policy: str, rule: str) -> None:
    """Refused with the guard, admitted without it (the guard is what stops it)."""
    guarded = review(policies(pattern), obj, namespace)
    assert f"{policy}/{rule}" in guarded.refused_by(), guarded.refusals
    assert review(without_rule(policies(pattern), policy, rule), obj, namespace).admitted


@pytest.mark.parametrize("pattern", PATTERN_NAMES)
def test_an_ordinary_tenant_pod_and_service_are_admitted(pattern):
    """The baseline the attacks are measured against: refusals are not blanket."""
    tenant, _ = attacker(pattern)
    assert review(policies(pattern), pod(), tenant.k8s_namespace).admitted
    assert review(policies(pattern), service(), tenant.k8s_namespace).admitted


# --- egress identity: every pattern says how a pod could claim one ---------------------------


@pytest.mark.parametrize("pattern", PATTERN_NAMES)
def test_a_tenant_pod_cannot_leave_with_another_identity_or_around_the_egress_path(pattern):
    spec, plan = PATTERNS[pattern], plan_of(pattern)
    tenants = plan.settings.tenants
    own = {p["metadata"]["name"] for p in spec.admission.policies(tenants)}
    shared_only = [p for p in policies(pattern) if p["metadata"]["name"] not in own]
    for tenant in tenants:
        escapes = spec.admission.escapes(tenant, tenants)
        assert escapes, f"{pattern} names no way for a pod to escape its tenant's identity"
        for escape in escapes:
            attack = pod(**escape)
            assert not review(policies(pattern), attack, tenant.k8s_namespace).admitted, escape
            # Without the pattern's own policies, the shared guardrails let it through.
            assert review(shared_only, attack, tenant.k8s_namespace).admitted, escape


@pytest.mark.parametrize("pattern", [p for p in PATTERN_NAMES
                                     if PATTERNS[p].admission.outside_escapes(plan_of(p).settings.tenants)])
def test_a_pod_outside_the_tenant_namespaces_cannot_take_a_tenant_identity(pattern):
    spec, tenants = PATTERNS[pattern], plan_of(pattern).settings.tenants
    own = {p["metadata"]["name"] for p in spec.admission.policies(tenants)}
    shared_only = [p for p in policies(pattern) if p["metadata"]["name"] not in own]
    for escape in spec.admission.outside_escapes(tenants):
        attack = pod(**escape)
        assert not review(policies(pattern), attack, "apps").admitted, escape
        assert review(shared_only, attack, "apps").admitted, escape


@pytest.mark.parametrize("pattern", PATTERN_NAMES)
def test_a_tenant_pod_cannot_run_on_egress_gateway_nodes(pattern):
    tenant, _ = attacker(pattern)
    for toleration in ({"key": GATEWAY_KEY, "operator": "Exists"}, {"operator": "Exists"}):
        attack = pod(spec={"tolerations": [toleration]})
        assert_refused_only_by(pattern, attack, tenant.k8s_namespace, GATEWAY_NODES, "gateway-taint-only-for-gateways")


@pytest.mark.parametrize("pattern", PATTERN_NAMES)
def test_a_tenant_pod_cannot_bypass_the_scheduler(pattern):
    tenant, _ = attacker(pattern)
    attack = pod(spec={"nodeName": "ip-10-20-0-10.eu-west-1.compute.internal"})
    assert_refused_only_by(pattern, attack, tenant.k8s_namespace, NO_NODE_NAME, "no-node-name")


# --- Services: CVE-2020-8554 and ways in ------------------------------------------------------


@pytest.mark.parametrize("pattern", PATTERN_NAMES)
def test_a_service_cannot_capture_another_tenants_upstream_with_external_ips(pattern):
    tenant, victim = attacker(pattern)
    upstream = str(next(victim.upstreams[0].cidr.hosts()))
    attack = service(externalIPs=[upstream])
    assert_refused_only_by(pattern, attack, tenant.k8s_namespace, NO_EXTERNAL_IPS, "no-external-ips")


@pytest.mark.parametrize("pattern", PATTERN_NAMES)
@pytest.mark.parametrize("kind", [
    {"type": "LoadBalancer"},
    {"type": "LoadBalancer", "loadBalancerSourceRanges": ["10.0.0.0/8"]},
    {"type": "NodePort"},
    {"type": "ExternalName", "externalName": "corebank.corp.example"},
])
def test_a_tenant_service_opens_no_way_in(pattern, kind):
    tenant, _ = attacker(pattern)
    attack = service(**kind)
    assert_refused_only_by(pattern, attack, tenant.k8s_namespace, TENANT_OBJECTS, "cluster-ip-services-only")


# --- priority, tokens ------------------------------------------------------------------------


@pytest.mark.parametrize("pattern", PATTERN_NAMES)
@pytest.mark.parametrize("priority_class", SYSTEM_PRIORITY_CLASSES)
def test_a_tenant_pod_cannot_preempt_the_platform(pattern, priority_class):
    tenant, _ = attacker(pattern)
    attack = pod(spec={"priorityClassName": priority_class})
    assert_refused_only_by(pattern, attack, tenant.k8s_namespace, TENANT_OBJECTS, "no-system-priority")


@pytest.mark.parametrize("pattern", PATTERN_NAMES)
def test_a_tenant_cannot_mint_a_long_lived_service_account_token(pattern):
    tenant, _ = attacker(pattern)
    attack = {"apiVersion": "v1", "kind": "Secret", "type": SERVICE_ACCOUNT_TOKEN,
              "metadata": {"name": "forever", "annotations": {"kubernetes.io/service-account.name": "default"}}}
    assert_refused_only_by(pattern, attack, tenant.k8s_namespace, TENANT_OBJECTS, "no-service-account-tokens")
    opaque = {**attack, "type": "Opaque"}
    assert review(policies(pattern), opaque, tenant.k8s_namespace).admitted


# --- the first deploy: no way in before the policies hold ----------------------------------


def tenants_wait_for_the_policies(graph: offline.Graph) -> list[str]:
    """Why a tenant could get in before every ClusterPolicy and its namespace's
    quotas are in force (empty: it cannot)."""
    by_urn = graph.by_urn()

    def ancestors(urn: str) -> set[str]:
        seen, todo = set(), [urn]
        while todo:
            resource = by_urn.get(todo.pop())  # children of remote components are not recorded
            for dep in resource.dependencies if resource else ():
                if dep not in seen:
                    seen.add(dep)
                    todo.append(dep)
        return seen

    found = []
    policies_ = graph.by_type(CLUSTER_POLICY)
    for policy in policies_:
        annotations = policy.inputs["metadata"].get("annotations", {})
        if any(annotations.get(k) != v for k, v in WAIT_FOR_READY.items()):
            found.append(f"{policy.name} is not awaited until Kyverno reports it Ready")
    guards = [*policies_, *graph.by_type(RESOURCE_QUOTA), *graph.by_type(LIMIT_RANGE)]
    for way_in in graph.by_type(ROLE_BINDING) + graph.by_type(ACCESS_ENTRY):
        tenant = way_in.inputs["tags"][TENANT_KEY] if "tags" in way_in.inputs else None
        namespace = way_in.inputs["metadata"]["namespace"] if "metadata" in way_in.inputs else None
        if tenant:  # an access entry: its tenant's namespace
            namespace = next(t.k8s_namespace for t in graph.plan.settings.tenants if t.name == tenant)
        needed = [g for g in guards if g.type == CLUSTER_POLICY or g.inputs["metadata"]["namespace"] == namespace]
        missing = {g.urn for g in needed} - ancestors(way_in.urn)
        if missing:
            found.append(f"{way_in.name} does not wait for {sorted(by_urn[u].name for u in missing)}")
    return found


@lru_cache(maxsize=None)
def graph_with_tenant_roles(pattern: str) -> offline.Graph:
    """The shipped stack's graph if a tenant there has a role, else planned with one for each."""
    config = stack_config(pattern)
    if any("iamRoleArn" in t for t in config["egress:tenants"]):
        return planned(pattern)
    config["egress:tenants"] = [
        {**t, "iamRoleArn": f"arn:aws:iam::111122223333:role/{t['name']}-developers"} for t in config["egress:tenants"]
    ]
    return offline.run(pattern, config)


@pytest.mark.parametrize("pattern", PATTERN_NAMES)
def test_tenants_get_no_way_in_before_the_admission_policies_are_in_force(pattern):
    graph = graph_with_tenant_roles(pattern)
    with_role = [t for t in graph.plan.settings.tenants if t.iam_role_arn]
    assert with_role and len(graph.by_type(ACCESS_ENTRY)) == len(graph.by_type(ROLE_BINDING)) == len(with_role)
    assert graph.by_type(CLUSTER_POLICY)
    assert tenants_wait_for_the_policies(graph) == []


def test_without_the_wait_a_tenant_gets_in_during_the_first_deploy(monkeypatch):
    grant = program_module.grant_tenant_access

    def grant_at_once(*args, **kwargs):
        return grant(*args, **{**kwargs, "in_force": []})

    monkeypatch.setattr(program_module, "grant_tenant_access", grant_at_once)
    graph = offline.run_stack("subnet-cidr")
    assert any("does not wait for" in p for p in tenants_wait_for_the_policies(graph))
    # A policy Pulumi does not await counts as created before Kyverno enforces it.
    awaited = planned("subnet-cidr")
    first = awaited.by_type(CLUSTER_POLICY)[0]
    unawaited_policy = replace(first, inputs={**first.inputs, "metadata": {"name": first.inputs["metadata"]["name"]}})
    unawaited = replace(awaited, resources=[unawaited_policy if r is first else r for r in awaited.resources])
    assert any("not awaited" in p for p in tenants_wait_for_the_policies(unawaited))


# --- reserved namespaces --------------------------------------------------------------------

NAMESPACE_TYPE = "kubernetes:core/v1:Namespace"


def test_every_namespace_a_stack_creates_is_reserved():
    """The reserved list is derived from the code (PatternSpec.own_namespaces and
    the platform's); every shipped stack's graph shows it is complete."""
    reserved = set(reserved_namespaces(PATTERNS))
    for pattern in PATTERN_NAMES:
        graph = planned(pattern)
        tenant_namespaces = {t.k8s_namespace for t in graph.plan.settings.tenants}
        created = {r.inputs["metadata"]["name"] for r in graph.by_type(NAMESPACE_TYPE)}
        assert created - tenant_namespaces <= reserved, pattern


@pytest.mark.parametrize("pattern", PATTERN_NAMES)
@pytest.mark.parametrize("namespace", sorted({*PLATFORM_NAMESPACES, "kube-flannel",
                                              *(n for s in PATTERNS.values() for n in s.own_namespaces)}))
def test_a_tenant_cannot_be_given_a_reserved_namespace(pattern, namespace):
    config = stack_config(pattern)
    config["egress:tenants"][0] = {**config["egress:tenants"][0], "namespace": namespace}
    assert_problem(config, "egress:tenants[0].namespace", f"{namespace!r} is reserved",
                   "set the tenant's namespace to another name")


def test_a_tenant_named_like_a_reserved_namespace_is_told_to_set_one():
    config = stack_config("subnet-cidr")
    config["egress:tenants"][0] = {**config["egress:tenants"][0], "name": "kyverno"}
    assert_problem(config, "egress:tenants[0].name", "'kyverno' is reserved")


def test_without_the_reserved_list_the_kyverno_namespace_would_be_accepted(monkeypatch):
    config = stack_config("istio")
    config["egress:tenants"][0] = {**config["egress:tenants"][0], "namespace": "istio-system"}
    assert_problem(config, "egress:tenants[0].namespace", "reserved")
    monkeypatch.setattr(plan_module, "PLATFORM_NAMESPACES", ())
    monkeypatch.setitem(PATTERNS, "istio", replace(PATTERNS["istio"], own_namespaces=()))
    assert not problems(config)


# --- the API server's own backstop: ResourceQuotas a webhook outage cannot lift ---------------


def quota_refuses(quotas: list[dict], obj: dict) -> bool:
    """ResourceQuota admission for the objects these attacks create: a hard limit
    of 0 on what the object would consume, within the quota's scope
    (https://kubernetes.io/docs/concepts/policy/resource-quotas/)."""
    for quota in quotas:
        hard, scope = quota["hard"], quota.get("scopeSelector", {}).get("matchExpressions", [])
        if obj["kind"] == "Service":
            kind = obj["spec"].get("type")
            # A LoadBalancer Service also takes node ports unless told otherwise.
            used = {"LoadBalancer": ["services.loadbalancers", "services.nodeports"],
                    "NodePort": ["services.nodeports"]}.get(kind, [])
            if any(hard.get(resource) == "0" for resource in used):
                return True
        if obj["kind"] == "Pod":
            in_scope = all(
                e["scopeName"] == "PriorityClass" and e["operator"] == "In"
                and obj["spec"].get("priorityClassName") in e["values"]
                for e in scope
            )
            if in_scope and hard.get("pods") == "0":
                return True
    return False


def namespace_quotas(graph: offline.Graph, namespace: str) -> list[dict]:
    return [r.inputs["spec"] for r in graph.by_type(RESOURCE_QUOTA) if r.inputs["metadata"]["namespace"] == namespace]


@pytest.mark.parametrize("pattern", PATTERN_NAMES)
def test_the_api_server_itself_refuses_ways_in_and_system_priorities_in_tenant_namespaces(pattern):
    graph = planned(pattern)
    attacks = [service(type="LoadBalancer"), service(type="NodePort"),
               *(pod(spec={"priorityClassName": c}) for c in SYSTEM_PRIORITY_CLASSES)]
    for tenant in graph.plan.settings.tenants:
        quotas = namespace_quotas(graph, tenant.k8s_namespace)
        for attack in attacks:
            assert quota_refuses(quotas, attack), (tenant.name, attack["spec"])
        assert not quota_refuses(quotas, service()) and not quota_refuses(quotas, pod())
        # Without the quotas the API server admits them all.
        assert not any(quota_refuses([], attack) for attack in attacks)


@pytest.mark.parametrize("pattern", PATTERN_NAMES)
def test_every_tenant_namespace_is_sized_by_its_quota(pattern):
    graph = planned(pattern)
    for tenant in graph.plan.settings.tenants:
        (size,) = [q for q in namespace_quotas(graph, tenant.k8s_namespace) if "scopeSelector" not in q]
        quota = tenant.quota
        assert size["hard"]["requests.cpu"] == quota.cpu and size["hard"]["requests.memory"] == quota.memory
        assert size["hard"]["pods"] == str(quota.pods)
        (limits,) = [r.inputs["spec"]["limits"] for r in graph.by_type("kubernetes:core/v1:LimitRange")
                     if r.inputs["metadata"]["namespace"] == tenant.k8s_namespace]
        assert limits == [{"type": "Container",
                           "defaultRequest": {"cpu": quota.container_cpu, "memory": quota.container_memory},
                           "default": {"memory": quota.container_memory}}]


# --- NetworkPolicy from a pod's first packet (VPC CNI) -----------------------------------------

VPC_CNI_PATTERNS = [p for p in PATTERN_NAMES if any(a.inputs["addonName"] == "vpc-cni" for a in planned(p).by_type(ADDON))]


def unselected_namespaces(graph: offline.Graph) -> set[str]:
    """Namespaces where a pod could run that no NetworkPolicy selects (under
    strict mode such a pod has no traffic at all)."""
    namespaces = {r.inputs["metadata"]["name"] for r in graph.by_type(NAMESPACE_TYPE)} | {"kube-system"}
    selected = {r.inputs["metadata"]["namespace"] for r in graph.by_type(NETPOL)
                if r.inputs["spec"]["podSelector"] == {} and set(r.inputs["spec"]["policyTypes"]) == {"Ingress", "Egress"}}
    return namespaces - selected


@pytest.mark.parametrize("pattern", VPC_CNI_PATTERNS)
def test_a_new_tenant_pod_gets_no_traffic_before_its_network_policies(pattern):
    graph = planned(pattern)
    (addon,) = [a for a in graph.by_type(ADDON) if a.inputs["addonName"] == "vpc-cni"]
    configuration = json.loads(addon.inputs["configurationValues"])
    assert configuration["enableNetworkPolicy"] == "true"
    assert configuration["env"]["NETWORK_POLICY_ENFORCING_MODE"] == "strict"
    # No subnet but the node's own gives a tenant's pods their addresses.
    assert configuration["env"]["ENABLE_SUBNET_DISCOVERY"] == "false"
    # Strict mode denies a pod no policy selects: the add-ons' namespaces are opened explicitly.
    assert unselected_namespaces(graph) == set()
    without_platform_policies = replace(graph, resources=[
        r for r in graph.resources if not (r.type == NETPOL and r.inputs["metadata"]["name"] == PLATFORM_POLICY)
    ])
    assert unselected_namespaces(without_platform_policies) >= {"kube-system", KYVERNO_NAMESPACE}
    # Kyverno starts only once its namespace is open (the API server must reach its webhooks).
    release = graph.get("kubernetes:helm.sh/v3:Release", "egress-kyverno")
    opened = graph.get(NETPOL, "egress-kyverno-platform-allow-all")
    assert opened.urn in release.dependencies


def test_every_pinned_vpc_cni_has_strict_mode_and_the_subnet_discovery_switch():
    # NETWORK_POLICY_ENFORCING_MODE needs v1.17.1, ENABLE_SUBNET_DISCOVERY v1.18.0
    # (amazon-vpc-cni-k8s README); older add-ons ignore the variables silently.
    for minor, pins in KUBERNETES_MINORS.items():
        version = tuple(int(n) for n in pins.vpc_cni.removeprefix("v").split("-")[0].split("."))
        assert version >= (1, 18, 0), (minor, pins.vpc_cni)


@pytest.mark.parametrize("pattern", PATTERN_NAMES)
def test_the_admission_and_mesh_control_planes_outrank_tenant_pods(pattern):
    """Tenant pods run at the default priority (system classes are refused), so
    a critical add-on with a system class preempts them, never the reverse."""
    graph = planned(pattern)
    releases = {r.name: r.inputs["values"] for r in graph.by_type("kubernetes:helm.sh/v3:Release")}
    assert releases["egress-kyverno"]["admissionController"]["priorityClassName"] in SYSTEM_PRIORITY_CLASSES
    if "egress-istiod" in releases:
        assert releases["egress-istiod"]["global"]["priorityClassName"] in SYSTEM_PRIORITY_CLASSES


@pytest.mark.parametrize("pattern", PATTERN_NAMES)
def test_a_future_system_priority_class_is_refused_too(pattern):
    tenant, _ = attacker(pattern)
    attack = pod(spec={"priorityClassName": "system-future-critical"})
    assert_refused_only_by(pattern, attack, tenant.k8s_namespace, TENANT_OBJECTS, "no-system-priority")
    assert review(policies(pattern), pod(spec={"priorityClassName": "batch-low"}), tenant.k8s_namespace).admitted


# --- the engine the attacks run through ------------------------------------------------------


@pytest.mark.parametrize("pattern", PATTERN_NAMES)
def test_the_engine_reads_every_rule_the_stack_renders(pattern):
    """Every rule is evaluated, not skipped: the engine raises on any feature it
    does not implement, so no attack passes for want of reading a rule."""
    tenant, _ = attacker(pattern)
    namespace_object = {"apiVersion": "v1", "kind": "Namespace",
                        "metadata": {"name": tenant.k8s_namespace, "labels": {}}}
    secret = {"apiVersion": "v1", "kind": "Secret", "type": "Opaque", "metadata": {"name": "s"}}
    for obj, namespace in ((pod(), tenant.k8s_namespace), (pod(), "apps"), (service(), tenant.k8s_namespace),
                           (secret, tenant.k8s_namespace), (namespace_object, "")):
        for operation in ("CREATE", "UPDATE"):
            review(policies(pattern), obj, namespace, operation)
    # A namespace stripped of its tenant label is refused (the namespace rule is read too).
    assert not review(policies(pattern), namespace_object, "", "UPDATE").admitted


def test_the_engine_refuses_to_guess():
    rule = {"name": "r", "match": {"any": [{"resources": {"kinds": ["Pod"], "selector": {}}}]},
            "validate": {"failureAction": "Enforce", "message": "m", "deny": {}}}
    with pytest.raises(NotImplementedError):
        review([{"metadata": {"name": "p"}, "spec": {"rules": [rule]}}], pod(), "apps")
