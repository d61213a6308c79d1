"""Rules AWS enforces on what a stack file asks for, kept as data with their sources,
so the plan refuses what an API call would refuse halfway through a deploy."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

Net = ipaddress.IPv4Network
RFC1918 = (Net("10.0.0.0/8"), Net("172.16.0.0/12"), Net("192.168.0.0/16"))  # private ranges, RFC 1918

# --- secondary VPC ranges ---------------------------------------------------------
# "IPv4 CIDR block association restrictions", Amazon VPC User Guide, VPC CIDR blocks
# (https://docs.aws.amazon.com/vpc/latest/userguide/vpc-cidr-blocks.html#add-cidr-block-restrictions),
# as published in April 2026: which secondary ranges a VPC accepts depends on where
# its primary range lies.
_BENCHMARK = Net("198.19.0.0/16")


@dataclass(frozen=True)
class AssociationRule:
    primary: Net  # the row applies to a primary range inside this one
    primary_described: str
    restricted: tuple[Net, ...]  # no secondary range may overlap these
    permitted: str  # the table's advice, for the message


# The first row whose `primary` holds the VPC's primary range applies.
ASSOCIATION_RULES = (
    AssociationRule(Net("10.0.0.0/15"), "10.0.0.0/15",
                    (Net("172.16.0.0/12"), Net("192.168.0.0/16"), Net("10.0.0.0/16"), _BENCHMARK),
                    "10.0.0.0/8 outside 10.0.0.0/16, or in 100.64.0.0/10"),
    AssociationRule(Net("10.0.0.0/8"), "10.0.0.0/8",
                    (Net("172.16.0.0/12"), Net("192.168.0.0/16"), _BENCHMARK),
                    "10.0.0.0/8 or in 100.64.0.0/10"),
    AssociationRule(Net("172.16.0.0/12"), "172.16.0.0/12",
                    (Net("10.0.0.0/8"), Net("192.168.0.0/16"), Net("172.31.0.0/16"), _BENCHMARK),
                    "172.16.0.0/12 outside 172.31.0.0/16, or in 100.64.0.0/10"),
    AssociationRule(Net("192.168.0.0/16"), "192.168.0.0/16",
                    (Net("10.0.0.0/8"), Net("172.16.0.0/12"), _BENCHMARK),
                    "192.168.0.0/16 or in 100.64.0.0/10"),
    AssociationRule(_BENCHMARK, "198.19.0.0/16", RFC1918, "100.64.0.0/10"),
    AssociationRule(Net("0.0.0.0/0"), "100.64.0.0/10 or a public range", (*RFC1918, _BENCHMARK),
                    "100.64.0.0/10"),
)


def association_restriction(primary: Net, secondary: Net) -> tuple[AssociationRule, Net] | None:
    """The table row and the restricted range that stop AWS from associating
    `secondary` with a VPC whose primary range is `primary`, or None if allowed."""
    rule = next(r for r in ASSOCIATION_RULES if primary.subnet_of(r.primary))
    restricted = next((r for r in rule.restricted if secondary.overlaps(r)), None)
    return (rule, restricted) if restricted else None


# --- partitions ---------------------------------------------------------------------
# A region's partition is the second field of every ARN in it, arn:aws-us-gov:...
# (https://docs.aws.amazon.com/IAM/latest/UserGuide/reference-arns.html).
# Region patterns: the "regionRegex" of each partition in botocore's endpoints.json
# (https://github.com/boto/botocore/blob/develop/botocore/data/endpoints.json), April 2026.
PARTITIONS = (
    ("aws", re.compile(r"(us|eu|ap|sa|ca|me|af|il|mx)-\w+-\d+")),
    ("aws-cn", re.compile(r"cn-\w+-\d+")),
    ("aws-us-gov", re.compile(r"us-gov-\w+-\d+")),
    ("aws-iso", re.compile(r"us-iso-\w+-\d+")),
    ("aws-iso-b", re.compile(r"us-isob-\w+-\d+")),
    ("aws-iso-e", re.compile(r"eu-isoe-\w+-\d+")),
    ("aws-iso-f", re.compile(r"us-isof-\w+-\d+")),
    ("aws-eusc", re.compile(r"eusc-(de)-\w+-\d+")),
)


# Partitions this program deploys to. The others are refused before anything is
# created: China names some interface endpoint services cn.com.amazonaws.<region>.*
# and others com.amazonaws.<region>.*, with no published rule
# (aws/aws-cdk#11140), and neither China nor the isolated partitions reach the
# public registries that Kyverno, Cilium and Istio images come from.
SUPPORTED_PARTITIONS = ("aws", "aws-us-gov")


def partition_of(region: str) -> str | None:
    """The partition a region belongs to, None if the name fits none."""
    # The commercial pattern also matches us-gov-west-1, so the specific ones go first.
    for name, pattern in sorted(PARTITIONS, key=lambda p: p[0] == "aws"):
        if pattern.fullmatch(region):
            return name
    return None


def managed_policy_arn(partition: str, name: str) -> str:
    """An AWS managed IAM policy, e.g. AmazonEKSWorkerNodePolicy."""
    return f"arn:{partition}:iam::aws:policy/{name}"


def eks_access_policy_arn(partition: str, name: str) -> str:
    """An EKS access policy, e.g. AmazonEKSClusterAdminPolicy (EKS user guide, access policies)."""
    return f"arn:{partition}:eks::aws:cluster-access-policy/{name}"


def ec2_service_principal(partition: str) -> str:
    """The principal EC2 instances assume roles as. In China EKS requires the .cn
    name in a node role's trust policy ("Following required service principals
    [ec2.amazonaws.com.cn] were not found": awslabs/cdk-eks-blueprints#558)."""
    return "ec2.amazonaws.com.cn" if partition == "aws-cn" else "ec2.amazonaws.com"
