"""The cilium pattern's Kubernetes documents, pure data: per tenant and AZ one
CiliumEgressGatewayPolicy that sends the tenant's pods on that AZ's nodes
through that AZ's gateway.

Why one policy per AZ rather than one policy listing every AZ's gateway in
`egressGateways`: with several gateways Cilium spreads a policy's endpoints
over all of them by a hash of the endpoint (cilium/cilium#39304), so losing any
one gateway cuts a share of every AZ's pods and moves the rest around, breaking
their connections twice. AZ-local pinning (source `selectors[].nodeSelector` on
the zone, CRD field "selects Pods by Node") keeps a gateway's failure inside
its AZ and traffic off cross-AZ links. A gateway is selected only while its
node carries the ready label, which the node's egress-eni service sets once the
ENI's addresses are up and removes when they go (or the service stops), so a
new node without the ENI is never chosen and a label change makes every agent
re-run gateway selection (Cilium re-reads the egress IP's interface then).
"""

from __future__ import annotations

import ipaddress

from ..settings import Tenant
from ..tenancy import TENANT_KEY, gateway_labels
from .node_script import READY_LABEL

GATEWAY_LABEL = gateway_labels("cilium")
ZONE_LABEL = "topology.kubernetes.io/zone"
POLICY_API_VERSION = "cilium.io/v2"
POLICY_KIND = "CiliumEgressGatewayPolicy"


def gateway_selector(az: str) -> dict:
    """The AZ's gateway node, once its egress IPs are up."""
    return {"matchLabels": {**GATEWAY_LABEL, ZONE_LABEL: az, READY_LABEL: "true"}}


def policy_spec(tenant: Tenant, az: str, ip: ipaddress.IPv4Address) -> dict:
    """The tenant's labelled pods, in its own namespace only, on nodes in `az`,
    to its upstreams, through the AZ's gateway with the tenant's IP there."""
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
                },
                "nodeSelector": {"matchLabels": {ZONE_LABEL: az}},
            }
        ],
        "destinationCIDRs": list(dict.fromkeys(str(u.cidr) for u in tenant.upstreams)),
        "egressGateway": {"nodeSelector": gateway_selector(az), "egressIP": str(ip)},
    }


def policy_name(tenant: Tenant, az: str) -> str:
    return f"egress-{tenant.name}-{az}"
