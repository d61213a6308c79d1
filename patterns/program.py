"""The Pulumi program: plan -> shared base -> the selected pattern -> outputs.

Only `__main__.py` and the offline engine call into here; both pass the full
stack config, so the real run and the offline plan take the same path.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pulumi

from .access import grant_tenant_access
from .addons import ClusterAddons
from .assignment import OUTPUT as ASSIGNMENT_OUTPUT
from .cluster import Cluster, SystemNodes
from .guardrails import Guardrails
from .network import Network
from .plan import Plan, make_plan
from .registry import PATTERNS
from .tenancy import TenantNamespaces

NAME = "egress"  # logical name of the top-level components; part of every URN


def plan_from_config(stack: str, config: Mapping[str, Any],
                     previous_outputs: Mapping[str, Any] | None = None) -> Plan:
    """`previous_outputs`: the stack's outputs from its last deploy (empty on the first)."""
    return make_plan(stack, config, PATTERNS, previous_outputs)


def deploy(plan: Plan) -> dict[str, Any]:
    """Register every resource of the plan and return the stack outputs. The
    plan's warnings are not an output: the entry point logs them, and `pulumi up`
    would otherwise print each twice (diagnostics and outputs)."""
    network = Network(NAME, plan)
    cluster = Cluster(NAME, plan, network)
    # Every component built on the cluster hands its Kubernetes provider down to
    # its children through `parent`; no Kubernetes object names a provider itself,
    # and default Kubernetes providers are disabled (Pulumi.yaml).
    on_cluster = pulumi.ResourceOptions(providers=[cluster.provider])
    cni = plan.cni_spec.cni(NAME, plan.parts[plan.cni_spec.name], cluster, on_cluster)
    system_nodes = SystemNodes(NAME, plan, network, cluster, cni, opts=on_cluster)
    ClusterAddons(NAME, plan, cluster, system_nodes, opts=on_cluster)
    guardrails = Guardrails(NAME, plan, cni, system_nodes, opts=on_cluster)
    namespaces = TenantNamespaces(NAME, plan, opts=on_cluster)
    grant_tenant_access(NAME, plan, cluster, namespaces, entry_parent=guardrails, in_force=guardrails.in_force)
    # Each pattern in use, built for its own tenants (Plan.parts): its
    # cluster-wide pieces exist only while some tenant has a path under it.
    for part in plan.parts.values():
        part.spec.component(NAME, part, network, cluster, cni, namespaces, opts=on_cluster)
    return {
        "pattern": plan.settings.pattern,
        "vpcId": network.vpc_id,
        "clusterName": cluster.name,
        "egressAllowList": plan.allow_list_json(),
        # Read back by the next run: what keeps identities independent of list order.
        ASSIGNMENT_OUTPUT: plan.settings.assignment.to_output(),
    }
