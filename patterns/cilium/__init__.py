"""Pattern 3, cilium: Cilium replaces the VPC CNI and kube-proxy; one
CiliumEgressGatewayPolicy per tenant and AZ SNATs the tenant's pods on that
AZ's nodes to a fixed egress IP on the AZ's dedicated gateway node. The firewall allow-lists the
tenant's egress IPs (one per AZ), known from the address plan before deploy.

How an egress IP gets onto a gateway node (Cilium does not assign it; docs:
https://docs.cilium.io/en/stable/network/egress-gateway/egress-gateway/,
"Preliminary Considerations"): every AZ has one ENI in its egress subnet whose
private IPs are pinned to the tenants' egress IPs. The ENI is tagged
`cilium.io/no_manage=true`, which Cilium's ENI IPAM skips (Helm
`eni.nodeSpec.excludeInterfaceTags`, cilium/cilium PR #19096), and the IPs sit
in an explicit subnet CIDR reservation so AWS never hands them to a node or pod.
The AZ's gateway node attaches the ENI at boot, keeps its addresses configured
and labels itself ready (node_script), so a replacement node takes over the
same IPs and Cilium picks it without anyone re-applying a policy.

Modules: `addresses` (the pure egress-IP plan), `admission` (the tenant label), `policies` (the rendered
Kubernetes documents), `iam` (the IAM policies), `install` (the CNI),
`gateway` (the egress path), `node_script` (the gateway node's boot service,
from the package files egress-eni.sh and egress-eni.service).
"""

from __future__ import annotations

from ..plan import PatternSpec
from .admission import TenantLabelAdmission
from .addresses import (
    checks, egress_ip, egress_ips, eni_capacity, eni_ips, eni_primary_ip, sources,
    warnings,
)
from .gateway import GATEWAY_TAINT, CiliumEgress, GatewaySize
from .iam import GATEWAY_ENI_TAG, gateway_node_policy, operator_policy
from .install import AGENT_NOT_READY, CHART, CHART_REPO, CHART_VERSION, NO_MANAGE_TAG, Cilium, cilium_cluster_name, helm_values
from .node_script import READY_LABEL, gateway_user_data
from .policies import GATEWAY_LABEL, POLICY_API_VERSION, POLICY_KIND, ZONE_LABEL, gateway_selector, policy_name, policy_spec

SPEC = PatternSpec(
    name="cilium",
    summary="Cilium egress gateway, one gateway node per AZ; source = the tenant's egress IPs",
    component=CiliumEgress,
    cni=lambda name, plan, cluster, opts: Cilium(name, plan, cluster, opts),
    tenant_range=lambda settings: None,
    sources=sources,
    admission=TenantLabelAdmission(),
    checks=checks,
    warnings=warnings,
    node_group_count=lambda settings: 1 + len(settings.availability_zones),
    pins_gateway_addresses=True,
    replaces_cni=True,
)

__all__ = [
    "AGENT_NOT_READY", "CHART", "CHART_REPO", "CHART_VERSION", "GATEWAY_ENI_TAG", "GATEWAY_LABEL",
    "GATEWAY_TAINT", "NO_MANAGE_TAG", "POLICY_API_VERSION", "POLICY_KIND", "READY_LABEL",
    "SPEC", "ZONE_LABEL", "Cilium", "CiliumEgress", "GatewaySize", "checks", "cilium_cluster_name", "egress_ip",
    "egress_ips", "eni_capacity", "eni_ips", "eni_primary_ip", "gateway_node_policy",
    "gateway_selector", "gateway_user_data", "helm_values", "operator_policy", "policy_name", "policy_spec",
    "sources", "warnings",
]
