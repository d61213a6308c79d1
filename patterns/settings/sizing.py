"""Default subnet sizes, derived from the size of the range they are carved from.

Derived from the range alone, never from the number of tenants or AZs: adding a
tenant or an AZ must never resize a block, since that would move every
tenant's addresses. Explicit prefixes in the stack file win.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SubnetSizes:
    cluster: int  # prefix length of each subnet, one per AZ
    public: int
    egress: int
    tenant: int


# By the VPC's (or, for tenant subnets, the tenant range's) prefix length.
# /16 and /17 keep the sizes every stack has been deployed with, so no deployed
# range moves (a /17 was the smallest VPC they fit). Smaller ranges never fitted
# them; for those the cluster block stays a quarter of the VPC (its subnets hold
# the system nodes, the VPC endpoints' interfaces and EKS's own), public subnets
# shrink to /28 (two NAT gateways fit), and egress and tenant subnets keep /26 and
# /27 at least, room for a few nodes each. AWS accepts subnets of /16 to /28.
_BY_PREFIX = {
    16: SubnetSizes(cluster=20, public=26, egress=24, tenant=23),
    17: SubnetSizes(cluster=20, public=26, egress=24, tenant=23),
    18: SubnetSizes(cluster=22, public=28, egress=25, tenant=24),
    19: SubnetSizes(cluster=23, public=28, egress=26, tenant=25),
    20: SubnetSizes(cluster=24, public=28, egress=26, tenant=25),
    21: SubnetSizes(cluster=25, public=28, egress=26, tenant=26),
    22: SubnetSizes(cluster=26, public=28, egress=26, tenant=27),
}
SMALLEST_SIZED = max(_BY_PREFIX)


def default_sizes(range_prefixlen: int) -> SubnetSizes:
    """The default subnet sizes for a range of this prefix length (smaller ranges
    than /22 get the /22 sizes, which they cannot hold: the plan says so)."""
    return _BY_PREFIX[min(max(range_prefixlen, 16), SMALLEST_SIZED)]
