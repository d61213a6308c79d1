"""The cilium pattern's Kubernetes documents, pure data: one
CiliumEgressGatewayPolicy per tenant."""

from __future__ import annotations

import ipaddress

from ..settings import Tenant
from ..tenancy import TENANT_KEY, gateway_labels

GATEWAY_LABEL = gateway_labels("cilium")
ZONE_LABEL = "topology.kubernetes.io/zone"
POLICY_API_VERSION = "cilium.io/v2"
POLICY_KIND = "CiliumEgressGatewayPolicy"


def policy_spec(tenant: Tenant, ips: dict[str, ipaddress.IPv4Address]) -> dict:
    """CiliumEgressGatewayPolicy spec: the tenant's labelled pods, in its own
    namespace only, to its upstreams, through one gateway per AZ."""
    gateways = [
        {"nodeSelector": {"matchLabels": {**GATEWAY_LABEL, ZONE_LABEL: az}}, "egressIP": str(ip)}
        for az, ip in ips.items()
    ]
    return {
        "selectors": [
            {
                "podSelector": {
                    "matchLabels": {
                        TENANT_KEY: tenant.name,
                        # The label alone is not the identity: it counts only inside
                        # the tenant's namespace (Cilium's namespace label).
                        "io.kubernetes.pod.namespace": tenant.k8s_namespace,
                    }
                }
            }
        ],
        "destinationCIDRs": list(dict.fromkeys(str(u.cidr) for u in tenant.upstreams)),
        # Ignored when egressGateways is set, but still required by the CRD schema.
        "egressGateway": gateways[0],
        "egressGateways": gateways,
    }


def policy_name(tenant: Tenant) -> str:
    return f"egress-{tenant.name}"

