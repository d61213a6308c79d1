"""What the program needs to know about an EC2 instance type, from its name and
from AWS's published limits: its CPU architecture and its network interfaces."""

from __future__ import annotations

import re

from .addressing import AddressPlan, usable_hosts
from .settings import NAMESPACE, Settings

# EC2 names a type series + generation + options, then the size: m7gd.xlarge
# (https://docs.aws.amazon.com/ec2/latest/instancetypes/instance-type-names.html).
# The option letter "g" marks AWS Graviton (arm64) processors; a1 is the first Graviton.
_NAME = re.compile(r"(?P<series>[a-z]+)(?P<generation>\d+)(?P<options>[a-z0-9-]*)\.(?P<size>[a-z0-9]+)")


def architecture(instance_type: str) -> str:
    """"arm64" for Graviton types, else "x86_64"."""
    name = _NAME.fullmatch(instance_type)
    if name is None:
        return "x86_64"
    graviton = "g" in name["options"] or (name["series"], name["generation"]) == ("a", "1")
    return "arm64" if graviton else "x86_64"


# EKS AMI types of Amazon Linux 2023 per architecture (EKS API, Nodegroup amiType:
# https://docs.aws.amazon.com/eks/latest/APIReference/API_Nodegroup.html).
AMI_TYPES = {"x86_64": "AL2023_x86_64_STANDARD", "arm64": "AL2023_ARM_64_STANDARD"}


def ami_type(instance_type: str) -> str:
    return AMI_TYPES[architecture(instance_type)]


# --- network interfaces -------------------------------------------------------------
# (ENIs per instance, IPv4 addresses per ENI), from AWS's per-type limits as the
# VPC resource controller carries them (aws/amazon-vpc-resource-controller-k8s,
# pkg/aws/vpc/limits.go, April 2026). The current general-purpose, compute and
# memory families share these by size; the burstable ones have their own.
_STANDARD_FAMILIES = frozenset({
    "m5", "m6i", "m7i", "m6a", "m7a", "m6g", "m7g", "m8g", "c5", "c5n", "c6i", "c7i", "c6in", "c6g", "c6gn",
    "c7g", "c7gn", "r5", "r6i", "r7i", "r6g", "r7g",
})
_STANDARD_BY_SIZE = {"medium": (2, 4), "large": (3, 10), "xlarge": (4, 15), "2xlarge": (4, 15),
                     "4xlarge": (8, 30), "8xlarge": (8, 30)}
_BURSTABLE_FAMILIES = frozenset({"t3", "t3a", "t4g"})
_BURSTABLE_BY_SIZE = {"medium": (3, 6), "large": (3, 12), "xlarge": (4, 15), "2xlarge": (4, 15)}


def eni_limits(instance_type: str) -> tuple[int, int] | None:
    """(ENIs, IPv4 addresses per ENI) of a known type, None for others."""
    family, _, size = instance_type.partition(".")
    if family in _STANDARD_FAMILIES:
        return _STANDARD_BY_SIZE.get(size)
    if family in _BURSTABLE_FAMILIES:
        return _BURSTABLE_BY_SIZE.get(size)
    return None


def ipv4_per_eni(instance_type: str) -> int | None:
    """IPv4 addresses one ENI of a known type holds, None for others."""
    limits = eni_limits(instance_type)
    return limits[1] if limits else None


def node_ip_warnings(settings: Settings, addresses: AddressPlan) -> list[str]:
    """Node groups whose subnets may run out of addresses at `max` nodes: each
    tenant's in its own subnets, and the system group in the cluster subnets.

    The VPC CNI gives pods addresses of the node's ENIs and, by default
    (WARM_ENI_TARGET=1), keeps a whole spare ENI's worth attached, so a busy node
    holds every ENI's addresses (https://github.com/aws/amazon-vpc-cni-k8s/blob/master/docs/eni-and-ip-target.md).
    A managed node group spreads its nodes evenly over its subnets' AZs."""
    groups = [
        (f"{NAMESPACE}:tenants[{index}].nodes", f"the subnets of {tenant.name!r}", tenant.nodes,
         addresses.tenants[tenant.name].subnets, "egress:tenantSubnetPrefix")
        for index, tenant in enumerate(settings.tenants)
        if tenant.name in addresses.tenants  # the pattern gives tenants subnets of their own
    ]
    if settings.pattern != "cilium":  # Cilium's own IPAM hands out the cluster subnets' addresses there
        groups.append((f"{NAMESPACE}:systemNodes", "the cluster subnets", settings.system_nodes,
                       addresses.cluster_subnets, "egress:clusterSubnetPrefix"))
    return [w for group in groups if (w := _group_warning(*group))]


def _group_warning(key: str, where: str, size, subnets, prefix_key: str) -> str | None:
    if not subnets:
        return None
    limits = eni_limits(size.instance_type)
    if limits is None:
        return (f"{key}.instanceType {size.instance_type} is not in the known list of ENI limits; make sure each "
                f"of {where} holds its share of {size.max} nodes, each taking all its ENIs' addresses under the "
                "VPC CNI's default WARM_ENI_TARGET=1")
    enis, per_eni = limits
    need = -(-size.max // len(subnets)) * enis * per_eni
    room = min(usable_hosts(s.cidr) for s in subnets)
    if need <= room:
        return None
    return (f"{key}.max: {size.max} nodes of {size.instance_type} ({enis} ENIs x {per_eni} addresses, all held by a "
            f"busy node under the VPC CNI's default WARM_ENI_TARGET=1) need up to {need} addresses per AZ, but "
            f"{where} (/{subnets[0].cidr.prefixlen}) hold {room} each: lower max, or use a shorter {prefix_key} or "
            "a larger range")
