"""The cilium pattern's IAM policies, pure data, each statement scoped to what
it serves. What IAM cannot express is in docs/cilium.md ("IAM and residual
risk").

Condition keys used (AWS Service Authorization Reference, Amazon EC2):
`ec2:Vpc` on subnet, security-group and network-interface resources,
`aws:ResourceTag/...` and `aws:RequestTag/...`, `ec2:CreateAction` (tag on
create), `aws:TagKeys`; `${ec2:SourceInstanceARN}` is the policy variable EC2
sets for requests signed with an instance profile's credentials (IAM user
guide, policy variables), so a statement on it names the calling instance only.
"""

from __future__ import annotations

from ..settings.aws_rules import partition_of

GATEWAY_ENI_TAG = "egress/gateway-eni"  # value: the stack; marks the egress ENIs
CILIUM_CLUSTER_TAG = "io.cilium/cluster-name"  # Cilium tags the ENIs it creates (eni.gcTags)
EKS_CLUSTER_TAG = "eks:cluster-name"  # EKS tags managed node group instances with it

# What the ENI IPAM only reads; EC2 has no resource-level permissions for them.
OPERATOR_READ_ACTIONS = [
    "ec2:DescribeInstanceTypes", "ec2:DescribeInstances", "ec2:DescribeManagedPrefixLists",
    "ec2:DescribeNetworkInterfaces", "ec2:DescribeRouteTables", "ec2:DescribeSecurityGroups",
    "ec2:DescribeSubnets", "ec2:DescribeTags", "ec2:DescribeVpcs", "ec2:GetManagedPrefixListEntries",
]
# Everything that changes an ENI or its addresses.
ENI_WRITE_ACTIONS = [
    "ec2:AssignPrivateIpAddresses", "ec2:AttachNetworkInterface", "ec2:CreateTags", "ec2:DeleteNetworkInterface",
    "ec2:DeleteTags", "ec2:DetachNetworkInterface", "ec2:ModifyNetworkInterfaceAttribute",
    "ec2:UnassignPrivateIpAddresses",
]


def _arn(region: str, resource: str) -> str:
    return f"arn:{partition_of(region)}:ec2:{region}:*:{resource}"


def operator_policy(region: str, vpc_id: str, cluster_name: str) -> dict:
    """Cilium's ENI IPAM (the operator) on this cluster's VPC and instances
    only, and never on the egress ENIs. The actions are those of
    https://docs.cilium.io/en/stable/network/concepts/ipam/eni/ "Required
    Privileges" as the operator calls them (pkg/aws/ec2/ec2.go)."""
    vpc = {"ArnLike": {"ec2:Vpc": _arn(region, f"vpc/{vpc_id}")}}
    cilium_eni = {"StringEquals": {f"aws:ResourceTag/{CILIUM_CLUSTER_TAG}": cluster_name}}
    return {
        "Version": "2012-10-17",
        "Statement": [
            {"Sid": "Read", "Effect": "Allow", "Action": OPERATOR_READ_ACTIONS, "Resource": "*",
             "Condition": {"StringEquals": {"aws:RequestedRegion": region}}},
            {"Sid": "CreateEnisInTheVpc", "Effect": "Allow", "Action": "ec2:CreateNetworkInterface",
             "Resource": [_arn(region, "subnet/*"), _arn(region, "security-group/*")], "Condition": vpc},
            # Cilium creates ENIs with its tags (TagSpecifications), never untagged.
            {"Sid": "CreateTaggedEnis", "Effect": "Allow", "Action": "ec2:CreateNetworkInterface",
             "Resource": _arn(region, "network-interface/*"),
             "Condition": {"StringEquals": {f"aws:RequestTag/{CILIUM_CLUSTER_TAG}": cluster_name}}},
            # Tags only as part of that create, as AWS's VPC CNI policy limits CreateTags to ENIs.
            {"Sid": "TagOnCreateOnly", "Effect": "Allow", "Action": "ec2:CreateTags",
             "Resource": _arn(region, "network-interface/*"),
             "Condition": {"StringEquals": {"ec2:CreateAction": "CreateNetworkInterface"}}},
            {"Sid": "ManageItsOwnEnis", "Effect": "Allow",
             "Action": ["ec2:AttachNetworkInterface", "ec2:DeleteNetworkInterface",
                        "ec2:ModifyNetworkInterfaceAttribute"],
             "Resource": _arn(region, "network-interface/*"), "Condition": cilium_eni},
            # Pod IPs also go on the nodes' primary ENIs, which EC2 creates untagged.
            {"Sid": "PodIpsOnTheVpcsEnis", "Effect": "Allow",
             "Action": ["ec2:AssignPrivateIpAddresses", "ec2:UnassignPrivateIpAddresses"],
             "Resource": _arn(region, "network-interface/*"), "Condition": vpc},
            {"Sid": "AttachToTheClustersNodes", "Effect": "Allow", "Action": "ec2:AttachNetworkInterface",
             "Resource": _arn(region, "instance/*"),
             "Condition": {"StringEquals": {f"aws:ResourceTag/{EKS_CLUSTER_TAG}": cluster_name}}},
            *_egress_eni_guard(region),
        ],
    }


def _egress_eni_guard(region: str) -> list[dict]:
    """Explicit denies: no change to an egress ENI, and no adding or removing
    the tag that makes an ENI one (which would let gateway nodes attach it)."""
    return [
        {"Sid": "NeverTouchEgressEnis", "Effect": "Deny", "Action": ENI_WRITE_ACTIONS,
         "Resource": f"arn:{partition_of(region)}:ec2:*:*:network-interface/*",
         "Condition": {"Null": {f"aws:ResourceTag/{GATEWAY_ENI_TAG}": "false"}}},
        {"Sid": "NeverMarkEgressEnis", "Effect": "Deny", "Action": ["ec2:CreateTags", "ec2:DeleteTags"],
         "Resource": "*", "Condition": {"ForAnyValue:StringEquals": {"aws:TagKeys": [GATEWAY_ENI_TAG]}}},
    ]


def gateway_node_policy(stack: str, region: str) -> dict:
    """Gateway nodes may attach this stack's egress ENIs, each to itself only,
    and nothing else (no detach, no address changes)."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {"Sid": "TheStacksEgressEnis", "Effect": "Allow", "Action": "ec2:AttachNetworkInterface",
             "Resource": _arn(region, "network-interface/*"),
             "Condition": {"StringEquals": {f"aws:ResourceTag/{GATEWAY_ENI_TAG}": stack}}},
            # The instance side of the same call: the calling instance itself.
            {"Sid": "ToItselfOnly", "Effect": "Allow", "Action": "ec2:AttachNetworkInterface",
             "Resource": "${ec2:SourceInstanceARN}"},
            {"Sid": "Read", "Effect": "Allow", "Action": "ec2:DescribeNetworkInterfaces", "Resource": "*",
             "Condition": {"StringEquals": {"aws:RequestedRegion": region}}},
        ],
    }
