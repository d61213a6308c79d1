"""Tenant pieces shared by the patterns: the namespace with its network policy
defaults and quotas, and (for the subnet patterns) the tenant's own subnets,
its tainted node group and the admission rules that keep its pods on it."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_aws as aws
import pulumi_kubernetes as k8s

from . import admission as rules
from .addressing import TenantAddresses
from .cluster import Cluster, Cni, Taint
from .network import Network
from .plan import NamespaceSpec, Plan, path_role
from .settings import Tenant, TenantQuota

TENANT_KEY = "egress/tenant"  # node label, node taint and namespace/pod label
# Dedicated egress gateway nodes (cilium, istio): labelled egress/gateway=<pattern>
# and tainted egress/gateway=<pattern>:NoSchedule, so only gateway work lands there.
GATEWAY_KEY = "egress/gateway"


def gateway_labels(pattern: str) -> dict[str, str]:
    return {GATEWAY_KEY: pattern}


def gateway_taint(pattern: str) -> Taint:
    return Taint(GATEWAY_KEY, pattern, "NO_SCHEDULE")
DNS_PEER = {
    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
    "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
}
DNS_PORTS = [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]

def tenant_taint(tenant: Tenant) -> Taint:
    return Taint(TENANT_KEY, tenant.name, "NO_SCHEDULE")


# The priority classes Kubernetes keeps for its own add-ons; every name starting
# "system-" is reserved to it (https://kubernetes.io/docs/concepts/scheduling-eviction/pod-priority-preemption/).
SYSTEM_PRIORITY_CLASSES = ("system-node-critical", "system-cluster-critical")


def quota_specs(quota: TenantQuota) -> dict[str, dict[str, Any]]:
    """The namespace's ResourceQuotas, enforced by the API server itself (not by
    a webhook that could be down or bypassed): its size, no NodePort or
    LoadBalancer Service, and no pod of a system priority class (the quota
    scope for priority classes, https://kubernetes.io/docs/concepts/policy/resource-quotas/#resource-quota-per-priorityclass)."""
    return {
        "tenant-quota": {
            "hard": {
                "requests.cpu": quota.cpu,
                "requests.memory": quota.memory,
                "pods": str(quota.pods),
                "services.loadbalancers": "0",
                "services.nodeports": "0",
            }
        },
        "no-system-priority": {
            "hard": {"pods": "0"},
            "scopeSelector": {
                "matchExpressions": [
                    {"scopeName": "PriorityClass", "operator": "In", "values": list(SYSTEM_PRIORITY_CLASSES)}
                ]
            },
        },
    }


def limit_range_spec(quota: TenantQuota) -> dict[str, Any]:
    """Requests for containers that name none, so every pod counts against the
    quota (a quota on requests refuses pods without them)."""
    return {
        "limits": [
            {
                "type": "Container",
                "defaultRequest": {"cpu": quota.container_cpu, "memory": quota.container_memory},
                "default": {"memory": quota.container_memory},
            }
        ]
    }


class TenantNamespace(pulumi.ComponentResource):
    """The tenant namespace: labelled with its tenant, Pod Security enforced,
    default-deny ingress and egress except DNS, its own pods and `egress_rules`,
    its ResourceQuotas and container request defaults (quota_specs,
    limit_range_spec). The tenant team's access is granted by patterns.access."""

    def __init__(self, name: str, tenant: Tenant, *,
                 egress_rules: list[dict], labels: dict[str, str] | None = None,
                 pod_security: str = "baseline", opts: pulumi.ResourceOptions | None = None):
        super().__init__("egress:tenancy:TenantNamespace", name, None, opts)
        namespace_name = tenant.k8s_namespace
        self.namespace = k8s.core.v1.Namespace(
            name,
            metadata={
                "name": namespace_name,
                "labels": {
                    TENANT_KEY: tenant.name,
                    "pod-security.kubernetes.io/enforce": pod_security,
                    "pod-security.kubernetes.io/warn": "restricted",
                    "pod-security.kubernetes.io/audit": "restricted",
                    **(labels or {}),
                },
            },
            opts=pulumi.ResourceOptions(parent=self),
        )
        in_namespace = pulumi.ResourceOptions(parent=self.namespace)
        metadata = lambda policy: {"name": policy, "namespace": self.namespace.metadata.name}  # noqa: E731
        self.policies = {
            "default-deny": k8s.networking.v1.NetworkPolicy(
                f"{name}-default-deny",
                metadata=metadata("default-deny"),
                spec={"podSelector": {}, "policyTypes": ["Ingress", "Egress"]},
                opts=in_namespace,
            ),
            "allow-dns": k8s.networking.v1.NetworkPolicy(
                f"{name}-allow-dns",
                metadata=metadata("allow-dns"),
                spec={"podSelector": {}, "policyTypes": ["Egress"], "egress": [{"to": [DNS_PEER], "ports": DNS_PORTS}]},
                opts=in_namespace,
            ),
            "allow-same-namespace": k8s.networking.v1.NetworkPolicy(
                f"{name}-allow-same-namespace",
                metadata=metadata("allow-same-namespace"),
                spec={
                    "podSelector": {},
                    "policyTypes": ["Ingress", "Egress"],
                    "ingress": [{"from": [{"podSelector": {}}]}],
                    "egress": [{"to": [{"podSelector": {}}]}],
                },
                opts=in_namespace,
            ),
            "allow-egress": k8s.networking.v1.NetworkPolicy(
                f"{name}-allow-egress",
                metadata=metadata("allow-egress"),
                spec={"podSelector": {}, "policyTypes": ["Egress"], "egress": egress_rules},
                opts=in_namespace,
            ),
        }
        self.quotas = {
            key: k8s.core.v1.ResourceQuota(f"{name}-{key}", metadata=metadata(key), spec=spec, opts=in_namespace)
            for key, spec in quota_specs(tenant.quota).items()
        }
        self.limit_range = k8s.core.v1.LimitRange(
            f"{name}-container-defaults",
            metadata=metadata("container-defaults"),
            spec=limit_range_spec(tenant.quota),
            opts=in_namespace,
        )
        self.register_outputs({"namespace": self.namespace.metadata.name})


class DedicatedTenant(pulumi.ComponentResource):
    """A tenant with its own subnet in every AZ and its own tainted node group
    there, so everything it sends leaves from its subnets (seed, patterns 1-2).
    Its namespace is one of the TenantNamespaces, shared by every pattern."""

    def __init__(self, name: str, tenant: Tenant, addresses: TenantAddresses, *,
                 network: Network, cluster: Cluster, cni: Cni,
                 route_tables: dict[str, aws.ec2.RouteTable],
                 subnet_depends_on: list[pulumi.Resource] | None = None,
                 extra_taints: Sequence[Taint] = (),
                 opts: pulumi.ResourceOptions | None = None):
        super().__init__("egress:tenancy:DedicatedTenant", name, None, opts)
        self.subnets = {
            subnet.az: network.routed_subnet(
                name, subnet, {TENANT_KEY: tenant.name}, parent=self,
                route_table=route_tables[subnet.az], depends_on=subnet_depends_on,
            )
            for subnet in addresses.subnets
        }
        self.node_group = cluster.node_group(
            name,
            subnet_ids=[s.id for s in self.subnets.values()],
            size=tenant.nodes,
            labels={TENANT_KEY: tenant.name},
            taints=[tenant_taint(tenant), *extra_taints],
            cni=cni,
            parent=self,
        )
        self.register_outputs({"subnet_ids": [s.id for s in self.subnets.values()]})


def tenant_namespace_spec(plan: Plan, tenant: Tenant) -> NamespaceSpec:
    """The namespace under the tenant's own pattern; during a cutover its
    egress rules also keep the previous path open, so pods not yet restarted
    (still on that path) keep working until the old path is retired."""
    part = plan.parts[plan.settings.pattern_of(tenant)]
    spec = part.spec.tenant_namespace(part.settings, tenant)
    if tenant.previous_pattern:
        previous = plan.parts[tenant.previous_pattern]
        old = previous.spec.tenant_namespace(previous.settings, tenant).egress_rules
        spec = NamespaceSpec(spec.egress_rules + [r for r in old if r not in spec.egress_rules], spec.labels)
    return spec


# A path the tenant's new pods must not use yet (publish) or any more (cutover):
# its node group carries this NoSchedule taint too, so when both paths have
# dedicated nodes (both labelled and tainted egress/tenant=<tenant>) pods land
# on the current path only. Running pods stay (NoSchedule evicts nothing). EKS
# updates a managed node group's taints in place (UpdateNodegroupConfig,
# https://docs.aws.amazon.com/eks/latest/APIReference/API_UpdateNodegroupConfig.html).
PATH_KEY = "egress/path"


def path_taints(plan: Plan, tenant: Tenant) -> list[Taint]:
    role = path_role(plan.settings, tenant, plan.spec.name)
    return [] if role == "current" else [Taint(PATH_KEY, {"next": "pending", "previous": "retiring"}[role], "NO_SCHEDULE")]


class TenantNamespaces(pulumi.ComponentResource):
    """Every tenant's namespace, under one parent whatever the pattern: a change
    of pattern updates a namespace in place instead of creating a second one of
    the same name and then deleting it (with the tenant's workloads)."""

    def __init__(self, name: str, plan: Plan, opts: pulumi.ResourceOptions | None = None):
        super().__init__("egress:tenancy:TenantNamespaces", name, None, opts)
        self.namespaces: dict[str, TenantNamespace] = {}
        for tenant in plan.settings.tenants:
            spec = tenant_namespace_spec(plan, tenant)
            self.namespaces[tenant.name] = TenantNamespace(
                tenant.name, tenant, egress_rules=spec.egress_rules, labels=spec.labels,
                opts=pulumi.ResourceOptions(parent=self),
            )
        self.register_outputs({"namespaces": [t.k8s_namespace for t in plan.settings.tenants]})

    def __getitem__(self, tenant: str) -> TenantNamespace:
        return self.namespaces[tenant]


# --- admission: each tenant's pods on its own nodes (patterns 1-2) ------------------

_SELECTOR = f'request.object.spec.nodeSelector."{TENANT_KEY}"'


def _toleration(tenant: str, operator: str = "Equal") -> dict[str, str]:
    if operator == "Exists":
        return {"key": TENANT_KEY, "operator": operator, "effect": "NoSchedule"}
    return {"key": TENANT_KEY, "operator": operator, "value": tenant, "effect": "NoSchedule"}


@dataclass(frozen=True)
class DedicatedNodeAdmission:
    """Tenants told apart by their nodes: a tenant's pods get its nodeSelector
    and toleration, keep them, and no other pod may select or tolerate them."""

    def policies(self, tenants: Sequence[Tenant]) -> list[dict[str, Any]]:
        defaults, isolation = [], []
        for tenant in tenants:
            defaults += self._defaults(tenant)
            isolation.append(self._isolation(tenant))
        isolation.append(self._outside(tenants))
        return rules.identity_policies(defaults, isolation)

    def escapes(self, tenant: Tenant, tenants: Sequence[Tenant]) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = [{"spec": {"tolerations": [_toleration(tenant.name, "Exists")]}}]
        for other in tenants:
            if other.name != tenant.name:
                found += [
                    {"spec": {"nodeSelector": {TENANT_KEY: other.name}}},
                    {"spec": {"tolerations": [_toleration(other.name)]}},
                    {"spec": {"tolerations": [_toleration(tenant.name), _toleration(other.name)]}},
                ]
        return found

    def outside_escapes(self, tenants: Sequence[Tenant]) -> list[dict[str, Any]]:
        return [{"spec": {"tolerations": [_toleration(tenants[0].name, "Exists")]}}] + [
            escape for t in tenants
            for escape in ({"spec": {"nodeSelector": {TENANT_KEY: t.name}}},
                           {"spec": {"tolerations": [_toleration(t.name)]}})
        ]

    @staticmethod
    def _defaults(tenant: Tenant) -> list[dict]:
        ns = tenant.k8s_namespace
        return [
            {
                "name": f"{tenant.name}-node-selector",
                "match": rules.pods([ns], ["CREATE"]),
                # `+(key)` adds only when absent: a foreign value is left for the
                # isolation policy to refuse, not silently overwritten.
                "mutate": {"patchStrategicMerge": {"spec": {"nodeSelector": {f"+({TENANT_KEY})": tenant.name}}}},
            },
            {
                "name": f"{tenant.name}-toleration",
                "match": rules.pods([ns], ["CREATE"]),
                "preconditions": {
                    "all": [{"key": rules.count(f"{rules.TOLERATIONS}[?key=='{TENANT_KEY}']"), "operator": "Equals",
                             "value": 0}]
                },
                # Appended with a JSON patch: a strategic merge would replace the
                # toleration list, which has no merge key
                # (https://kyverno.io/policies/other/add-tolerations/add-tolerations/).
                "mutate": {"patchesJson6902": json.dumps(
                    [{"op": "add", "path": "/spec/tolerations/-", "value": _toleration(tenant.name)}]
                )},
            },
            {
                "name": f"{tenant.name}-on-own-nodes",
                "match": rules.pods([ns]),
                "validate": rules.validate(
                    f"Pods in namespace {ns} run on the nodes of tenant {tenant.name}: set spec.nodeSelector "
                    f"{TENANT_KEY}: {tenant.name} (or leave it out; it is added on creation).",
                    pattern={"spec": {"nodeSelector": {TENANT_KEY: tenant.name}}},
                ),
            },
        ]

    @staticmethod
    def _isolation(tenant: Tenant) -> dict:
        ns = tenant.k8s_namespace
        return {
            "name": f"{tenant.name}-no-foreign-nodes",
            "match": rules.pods([ns]),
            "validate": rules.validate(
                f"Pods in namespace {ns} may only select and tolerate the nodes of tenant {tenant.name}: use "
                f"nodeSelector {TENANT_KEY}: {tenant.name} and the toleration {TENANT_KEY}={tenant.name}:NoSchedule "
                "(operator Equal), or leave both out; they are added on creation.",
                deny=rules.deny_if(
                    (rules.value(_SELECTOR), "AnyNotIn", ["", tenant.name]),
                    (
                        rules.count(f"{rules.TOLERATIONS}[?key=='{TENANT_KEY}' && (operator=='Exists' || value!='{tenant.name}')]"),
                        "GreaterThan",
                        0,
                    ),
                ),
            ),
        }

    @staticmethod
    def _outside(tenants: Sequence[Tenant]) -> dict:
        namespaces = [t.k8s_namespace for t in tenants]
        return {
            "name": "tenant-nodes-only-for-tenants",
            "match": rules.pods(),
            "exclude": rules.excluding(namespaces),
            "validate": rules.validate(
                f"Only pods in tenant namespaces ({', '.join(namespaces)}) may tolerate or select tenant nodes; "
                f"remove the {TENANT_KEY} toleration and nodeSelector, or deploy the pod into its tenant's namespace.",
                deny=rules.deny_if(
                    (rules.count(f"{rules.TOLERATIONS}[?key=='{TENANT_KEY}']"), "GreaterThan", 0),
                    (rules.value(_SELECTOR), "NotEquals", ""),
                ),
            ),
        }


DEDICATED_NODES = DedicatedNodeAdmission()
