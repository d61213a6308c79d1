"""Tenant pieces shared by the patterns: the namespace with its network policy
defaults, and (for the subnet patterns) the tenant's own subnets and tainted
node group."""

from __future__ import annotations

import pulumi
import pulumi_aws as aws
import pulumi_kubernetes as k8s

from .addressing import TenantAddresses
from .cluster import Cluster, Cni, Taint
from .network import Network
from .plan import Plan
from .settings import Tenant

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

TENANT_ROLE = "egress-tenant-edit"
_READ = ["get", "list", "watch"]
_WRITE = [*_READ, "create", "update", "patch", "delete", "deletecollection"]
# What a tenant team may do in its own namespace: run and configure workloads.
# Not granted: NetworkPolicies (read only), RBAC, the namespace itself
# (cluster-scoped, out of any Role's reach), service account impersonation and
# tokens, ephemeral containers, and every CRD (Kyverno, Cilium, Istio egress
# policies); Kyverno's reports on their pods are readable.
TENANT_ROLE_RULES = [
    {"apiGroups": [""], "resources": ["pods", "services", "configmaps", "secrets", "persistentvolumeclaims",
                                      "serviceaccounts"], "verbs": _WRITE},
    {"apiGroups": [""], "resources": ["pods/exec", "pods/attach", "pods/portforward"], "verbs": ["get", "create"]},
    {"apiGroups": [""], "resources": ["pods/log", "events", "endpoints", "resourcequotas", "limitranges"],
     "verbs": _READ},
    {"apiGroups": ["apps"], "resources": ["deployments", "deployments/scale", "statefulsets", "statefulsets/scale",
                                          "daemonsets", "replicasets"], "verbs": _WRITE},
    {"apiGroups": ["batch"], "resources": ["jobs", "cronjobs"], "verbs": _WRITE},
    {"apiGroups": ["autoscaling"], "resources": ["horizontalpodautoscalers"], "verbs": _WRITE},
    {"apiGroups": ["policy"], "resources": ["poddisruptionbudgets"], "verbs": _WRITE},
    {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": _READ},
    {"apiGroups": ["networking.k8s.io"], "resources": ["networkpolicies", "ingresses"], "verbs": _READ},
    {"apiGroups": ["wgpolicyk8s.io"], "resources": ["policyreports"], "verbs": _READ},
]


def tenant_group(tenant: Tenant) -> str:
    """The Kubernetes group of the tenant team (set on its EKS access entry)."""
    return f"egress-tenant-{tenant.name}"


def tenant_taint(tenant: Tenant) -> Taint:
    return Taint(TENANT_KEY, tenant.name, "NO_SCHEDULE")


class TenantNamespace(pulumi.ComponentResource):
    """The tenant namespace: labelled with its tenant, Pod Security enforced,
    default-deny ingress and egress except DNS, its own pods and `egress_rules`,
    and (when the tenant names an IAM role) the tenant team's edit Role."""

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
        self.role = self.role_binding = None
        if tenant.iam_role_arn:
            self.role = k8s.rbac.v1.Role(
                f"{name}-edit",
                metadata=metadata(TENANT_ROLE),
                rules=TENANT_ROLE_RULES,
                opts=in_namespace,
            )
            self.role_binding = k8s.rbac.v1.RoleBinding(
                f"{name}-edit",
                metadata=metadata(TENANT_ROLE),
                role_ref={"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": self.role.metadata.name},
                subjects=[{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": tenant_group(tenant)}],
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
            taints=[tenant_taint(tenant)],
            cni=cni,
            parent=self,
        )
        self.register_outputs({"subnet_ids": [s.id for s in self.subnets.values()]})


class TenantNamespaces(pulumi.ComponentResource):
    """Every tenant's namespace, under one parent whatever the pattern: a change
    of pattern updates a namespace in place instead of creating a second one of
    the same name and then deleting it (with the tenant's workloads)."""

    def __init__(self, name: str, plan: Plan, opts: pulumi.ResourceOptions | None = None):
        super().__init__("egress:tenancy:TenantNamespaces", name, None, opts)
        self.namespaces: dict[str, TenantNamespace] = {}
        for tenant in plan.settings.tenants:
            spec = plan.spec.tenant_namespace(plan.settings, tenant)
            self.namespaces[tenant.name] = TenantNamespace(
                tenant.name, tenant, egress_rules=spec.egress_rules, labels=spec.labels,
                opts=pulumi.ResourceOptions(parent=self),
            )
        self.register_outputs({"namespaces": [t.k8s_namespace for t in plan.settings.tenants]})

    def __getitem__(self, tenant: str) -> TenantNamespace:
        return self.namespaces[tenant]
