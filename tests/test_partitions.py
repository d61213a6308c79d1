"""Every ARN the program builds carries the region's partition, so GovCloud
stacks deploy; a role ARN of another partition is refused, and so are the
partitions the program does not deploy to."""

from __future__ import annotations

import json
import re

import pytest

from conftest import assert_problem, config_with, problems, stack_config
from patterns import offline
from patterns.settings.aws_rules import partition_of

ARN_PARTITION = re.compile(r"\barn:([a-z0-9-]+):")


def _in_region(stack: str, region: str, partition: str) -> dict:
    config = stack_config(stack)
    config["aws:region"] = region
    config["egress:availabilityZones"] = [f"{region}{suffix}" for suffix in "ab"]
    admin = f"arn:{partition}:iam::111122223333:role/platform-admin"
    config["egress:clusterAdminRoleArns"] = [admin]
    for tenant in config["egress:tenants"]:
        if "iamRoleArn" in tenant:
            tenant["iamRoleArn"] = tenant["iamRoleArn"].replace("arn:aws:", f"arn:{partition}:")
    return config


@pytest.mark.parametrize(
    "region, partition",
    [("us-gov-west-1", "aws-us-gov"), ("cn-north-1", "aws-cn"), ("us-isob-east-1", "aws-iso-b")],
)
def test_regions_belong_to_their_partition(region, partition):
    assert partition_of(region) == partition
    assert partition_of("eu-west-1") == "aws"


@pytest.mark.parametrize(
    "stack, region, partition",
    [("subnet-cidr", "us-gov-west-1", "aws-us-gov"), ("cilium", "us-gov-east-1", "aws-us-gov")],
)
def test_every_arn_in_the_graph_is_of_the_regions_partition(stack, region, partition):
    graph = offline.run(stack, _in_region(stack, region, partition))
    text = json.dumps([r.inputs for r in graph.resources])
    found = set(ARN_PARTITION.findall(text))
    assert found == {partition}, found
    # The ARNs the program writes itself, not only those the provider returns.
    cluster = graph.by_type("eks:index:Cluster")[0].inputs
    admin = cluster["accessEntries"]
    policies = {p["policyArn"] for entry in admin.values() for p in entry["accessPolicies"].values()}
    assert policies == {f"arn:{partition}:eks::aws:cluster-access-policy/AmazonEKSClusterAdminPolicy"}
    attachments = {r.inputs["policyArn"] for r in graph.by_type("aws:iam/rolePolicyAttachment:RolePolicyAttachment")
                   if ":policy/Amazon" in r.inputs["policyArn"]}
    assert f"arn:{partition}:iam::aws:policy/AmazonEKSWorkerNodePolicy" in attachments
    assert f"arn:{partition}:iam::aws:policy/AmazonEKS_CNI_Policy" in attachments or stack == "cilium"
    node_role = graph.get("aws:iam/role:Role", "egress-node").inputs["assumeRolePolicy"]
    assert json.loads(node_role)["Statement"][0]["Principal"] == {"Service": "ec2.amazonaws.com"}


def test_a_role_of_another_partition_is_refused():
    config = config_with(**{"aws:region": "us-gov-west-1",
                            "availabilityZones": ["us-gov-west-1a", "us-gov-west-1b"]})
    assert_problem(config, "egress:clusterAdminRoleArns[0]", "partition 'aws'", "us-gov-west-1 is in 'aws-us-gov'",
                   "use arn:aws-us-gov:iam::<account>:role/<name>")
    config["egress:tenants"][0]["iamRoleArn"] = "arn:aws-cn:iam::111122223333:role/payments"
    assert_problem(config, "egress:tenants[0].iamRoleArn", "partition 'aws-cn'")


@pytest.mark.parametrize("region, partition", [("cn-north-1", "aws-cn"), ("us-isob-east-1", "aws-iso-b")])
def test_partitions_the_program_does_not_deploy_to_are_refused(region, partition):
    found = problems(_in_region("subnet-cidr", region, partition))
    assert [p for p in found if p.startswith("aws:region:")] == [
        f"aws:region: {region} is in partition {partition!r}, which this program does not deploy to (its interface "
        "endpoint names and the public image registries the add-ons pull from differ there); use a region of the "
        "commercial or GovCloud partition"
    ]


def test_govcloud_stack_with_its_own_arns_is_valid():
    assert problems(_in_region("subnet-cidr", "us-gov-west-1", "aws-us-gov")) == []
