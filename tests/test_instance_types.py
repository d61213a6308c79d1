"""Node groups get the AMI of their instance type's architecture; tenant subnets are
checked against the addresses their nodes may hold."""

from __future__ import annotations

import pytest

from conftest import NODE_GROUP, config_with, planned
from patterns import offline
from patterns.instance_types import ami_type, architecture, eni_limits
from patterns.program import plan_from_config


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


def _warm_ip_warnings(config: dict) -> list[str]:
    plan = plan_from_config("test", offline.engine_config(config))
    return [w for w in plan.warnings if "WARM_ENI_TARGET" in w]


def test_enis_of_known_types():
    assert eni_limits("m7i.large") == (3, 10)
    assert eni_limits("m7g.4xlarge") == (8, 30)
    assert eni_limits("t3.medium") == (3, 6)
    assert eni_limits("x2idn.large") is None


def test_warns_when_a_tenants_subnets_cannot_hold_its_max_nodes_warm_ips():
    # /22 VPC: /27 tenant subnets (27 addresses); 4 m7i.large nodes over 3 AZs: 2 per AZ x 3 ENIs x 10.
    config = config_with(vpcCidr="10.20.0.0/22")
    config["egress:tenants"][1]["nodes"] = {"instanceType": "m7i.large", "max": 4}
    warnings = _warm_ip_warnings(config)
    assert any(w.startswith("egress:tenants[1].nodes.max: 4 nodes of m7i.large (3 ENIs x 10 addresses")
               and "need up to 60 addresses per AZ, but the subnets of 'reporting' (/27) hold 27 each" in w
               and "egress:tenantSubnetPrefix" in w for w in warnings), warnings
    config["egress:tenants"][1]["nodes"] = {"instanceType": "t3.medium", "min": 2, "max": 2}  # 1 per AZ x 18
    assert not any("tenants[1]" in w for w in _warm_ip_warnings(config))


def test_warns_when_the_cluster_subnets_cannot_hold_the_system_nodes():
    # /22 VPC: /26 cluster subnets (59 addresses); 4 system nodes over 3 AZs: 2 per AZ x 30.
    warnings = _warm_ip_warnings(config_with(vpcCidr="10.20.0.0/22"))
    assert any(w.startswith("egress:systemNodes.max: 4 nodes of m7i.large") and "the cluster subnets (/26) hold 59 "
               "each" in w and "egress:clusterSubnetPrefix" in w for w in warnings), warnings
    config = config_with(vpcCidr="10.20.0.0/22", systemNodes={"max": 3})
    assert not any(w.startswith("egress:systemNodes") for w in _warm_ip_warnings(config))


def test_no_warm_ip_warning_for_the_shipped_stacks_and_an_unknown_type_is_said():
    assert _warm_ip_warnings(config_with()) == []
    config = config_with()
    config["egress:tenants"][0]["nodes"] = {"instanceType": "x2idn.large"}
    (warning,) = _warm_ip_warnings(config)
    assert warning.startswith("egress:tenants[0].nodes.instanceType x2idn.large is not in the known list")
