"""Tenant access: a tenant team's IAM role (`iamRoleArn`) gets an EKS access
entry whose Kubernetes group is bound to an edit Role in the tenant namespace
only, and only once the admission policies are in force.

Kyverno never re-admits a running pod, so a pod admitted before the policies
hold would keep another tenant's egress identity for good; the RoleBinding and
the access entry (the tenant's only ways in) therefore depend on every
ClusterPolicy, each of which Pulumi awaits until Kyverno reports it Ready, and
on the namespace's quotas. Residual: Kyverno marks a policy Ready once its
webhook configuration covers it, which one replica decides before every
replica's policy cache may hold it (kyverno/kyverno#11145); the EKS access entry
and RBAC propagation that follow take longer than that cache sync in practice,
but nothing here can prove it.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_aws as aws
import pulumi_kubernetes as k8s

from .cluster import Cluster
from .plan import Plan
from .settings import Tenant
from .tenancy import TENANT_KEY, TenantNamespaces

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


@dataclass(frozen=True)
class TenantAccess:
    role: k8s.rbac.v1.Role
    role_binding: k8s.rbac.v1.RoleBinding
    access_entry: aws.eks.AccessEntry


def grant_tenant_access(name: str, plan: Plan, cluster: Cluster, namespaces: TenantNamespaces, *,
                        entry_parent: pulumi.Resource, in_force: list[pulumi.Resource]) -> dict[str, TenantAccess]:
    """Access for every tenant that names an IAM role, after `in_force`. The
    Role and RoleBinding live under the tenant's Namespace, the access entry
    under `entry_parent` (where they have always been: their URNs stay)."""
    granted = {}
    for tenant in plan.settings.tenants:
        if not tenant.iam_role_arn:
            continue
        tenant_namespace = namespaces[tenant.name]
        namespace = tenant_namespace.namespace
        # The namespace's quotas are in force too, so the first pods count against them.
        after = [*in_force, *tenant_namespace.quotas.values(), tenant_namespace.limit_range]
        in_namespace = pulumi.ResourceOptions(parent=namespace)
        metadata = {"name": TENANT_ROLE, "namespace": namespace.metadata.name}
        role = k8s.rbac.v1.Role(f"{tenant.name}-edit", metadata=metadata, rules=TENANT_ROLE_RULES, opts=in_namespace)
        binding = k8s.rbac.v1.RoleBinding(
            f"{tenant.name}-edit",
            metadata=metadata,
            role_ref={"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": role.metadata.name},
            subjects=[{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": tenant_group(tenant)}],
            opts=pulumi.ResourceOptions.merge(in_namespace, pulumi.ResourceOptions(depends_on=after)),
        )
        entry = aws.eks.AccessEntry(
            f"{name}-{tenant.name}-access",
            cluster_name=cluster.name,
            principal_arn=tenant.iam_role_arn,
            type="STANDARD",
            # No EKS access policy: the group's rights come from the tenant
            # namespace's edit Role alone (AmazonEKSEditPolicy would let the
            # tenant rewrite its NetworkPolicies).
            kubernetes_groups=[tenant_group(tenant)],
            tags={"egress/stack": plan.stack, TENANT_KEY: tenant.name},
            opts=pulumi.ResourceOptions(parent=entry_parent, depends_on=after),
        )
        granted[tenant.name] = TenantAccess(role, binding, entry)
    return granted
