"""Node groups get the AMI of their instance type's architecture; capacity warnings."""

from __future__ import annotations

import pytest

from conftest import NODE_GROUP, config_with, planned
from patterns import offline
from patterns.instance_types import ami_type, architecture


@pytest.mark.parametrize(
    "instance_type, arch",
    [("m7i.large", "x86_64"), ("m7g.large", "arm64"), ("c7gn.xlarge", "arm64"), ("im4gn.large", "arm64"),
     ("t4g.medium", "arm64"), ("a1.large", "arm64"), ("g5.xlarge", "x86_64"), ("g5g.xlarge", "arm64"),
     ("m7i-flex.large", "x86_64"), ("c6in.large", "x86_64"), ("g4ad.xlarge", "x86_64")],
)
def test_architecture_follows_the_type_name(instance_type, arch):
    assert architecture(instance_type) == arch


def test_graviton_node_groups_get_the_arm64_ami_and_the_others_keep_theirs():
    config = config_with()
    config["egress:tenants"][0]["nodes"] = {"instanceType": "m7g.large"}
    config["egress:systemNodes"] = {"instanceType": "c7g.xlarge"}
    groups = {g.name: g.inputs for g in offline.run("graviton", config).by_type(NODE_GROUP)}
    assert groups["payments"]["amiType"] == "AL2023_ARM_64_STANDARD"
    assert groups["egress-system"]["amiType"] == "AL2023_ARM_64_STANDARD"
    others = [g for name, g in groups.items() if name not in ("payments", "egress-system")]
    assert others and all(g["amiType"] == "AL2023_x86_64_STANDARD" for g in others)


@pytest.mark.parametrize("stack", ["subnet-cidr", "private-nat", "cilium", "istio"])
def test_shipped_stacks_keep_the_x86_ami_on_every_group(stack):
    groups = planned(stack).by_type(NODE_GROUP)
    assert groups and {g.inputs["amiType"] for g in groups} == {"AL2023_x86_64_STANDARD"}
    assert all(ami_type(g.inputs["instanceTypes"][0]) == "AL2023_x86_64_STANDARD" for g in groups)
