"""Default subnet sizes derive from the range alone: a /16 keeps the sizes every
deployed stack has, small routable VPCs work out of the box, and a range that
is too small is told the keys and the smallest size that would fit."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from conftest import config_with, problems, stack_config
from patterns import offline
from patterns.program import plan_from_config
from patterns.settings.sizing import default_sizes

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()
STACKS = ["subnet-cidr", "private-nat", "cilium", "istio"]
TODAY = {"clusterSubnetPrefix": 20, "egressSubnetPrefix": 24, "tenantSubnetPrefix": 23}


def plan(config: dict):
    return plan_from_config("test", offline.engine_config(config))


def ranges(p) -> list[str]:
    return [f"{s.az} {s.cidr}" for s in p.addresses.all_subnets()] + [
        f"{name} {s.cidr}" for name, t in p.addresses.tenants.items() for s in t.subnets
    ]


def tenant(name: str) -> dict:
    return {"name": name, "upstreams": [{"name": "db", "cidr": "10.100.10.0/24", "ports": [443]}]}


@pytest.mark.parametrize("stack", STACKS)
@pytest.mark.parametrize("vpc", ["10.20.0.0/16", "10.20.0.0/17"])
def test_a_16_or_17_vpc_keeps_todays_sizes_so_no_deployed_address_moves(stack, vpc):
    derived = plan(config_with(stack, vpcCidr=vpc))
    explicit = plan(config_with(stack, vpcCidr=vpc, **TODAY))
    assert ranges(derived) == ranges(explicit)
    assert {s.cidr.prefixlen for s in derived.addresses.public_subnets} == {26}
    settings = derived.settings
    assert (settings.cluster_subnet_prefix, settings.egress_subnet_prefix, settings.tenant_subnet_prefix) == (20, 24, 23)


def test_the_shipped_private_nat_tenant_range_keeps_its_sizes_too():
    p = plan(stack_config("private-nat"))
    assert {s.cidr.prefixlen for t in p.addresses.tenants.values() for s in t.subnets} == {23}


@pytest.mark.parametrize("stack", ["subnet-cidr", "cilium", "istio"])
@pytest.mark.parametrize("vpc", ["10.20.0.0/20", "10.20.0.0/22"])
def test_small_routable_vpcs_work_out_of_the_box(stack, vpc):
    assert problems(config_with(stack, vpcCidr=vpc)) == []


def test_private_nat_in_a_22_keeps_tenants_in_the_tenant_range():
    config = config_with("private-nat", vpcCidr="10.20.0.0/22")
    config["egress:privateNat"]["profiles"]["warehouse"]["slot"] = 4  # a /26 egress subnet holds 7 profiles
    p = plan(config)
    assert all(s.cidr.subnet_of(p.addresses.vpc_cidr) for s in p.addresses.egress_subnets)
    assert {s.cidr.prefixlen for t in p.addresses.tenants.values() for s in t.subnets} == {23}


def test_private_nat_tenant_subnets_follow_the_tenant_range_size():
    config = config_with("private-nat")
    config["egress:privateNat"]["tenantCidr"] = "100.64.0.0/20"
    p = plan(config)
    assert {s.cidr.prefixlen for t in p.addresses.tenants.values() for s in t.subnets} == {default_sizes(20).tenant}
    assert p.settings.cluster_subnet_prefix == 20  # the VPC is still a /16


def test_sizes_never_depend_on_tenants_or_azs():
    one = plan(config_with(vpcCidr="10.20.0.0/20", tenants=[tenant("a")]))
    more = plan(config_with(vpcCidr="10.20.0.0/20", tenants=[tenant("a"), tenant("b"), tenant("c")],
                            availabilityZones=["eu-west-1a", "eu-west-1b", "eu-west-1c", "eu-west-1d"]))
    assert set(ranges(one)) <= set(ranges(more))  # nothing of the first plan moved or resized


def test_explicit_prefixes_win():
    p = plan(config_with(vpcCidr="10.20.0.0/20", clusterSubnetPrefix=25, tenantSubnetPrefix=26))
    assert p.settings.cluster_subnet_prefix == 25 and p.settings.tenant_subnet_prefix == 26
    assert {s.cidr.prefixlen for s in p.addresses.cluster_subnets} == {25}


def test_a_vpc_too_small_is_told_the_keys_and_the_smallest_size_that_fits():
    (message,) = problems(config_with(vpcCidr="10.20.0.0/23"))
    assert message.startswith("egress:vpcCidr: 10.20.0.0/23 is too small for the shared subnets")
    assert "use a /22 or larger egress:vpcCidr" in message
    assert "egress:clusterSubnetPrefix" in message and "egress:egressSubnetPrefix" in message
    assert "publicSubnetPrefix" not in message
    (message,) = problems(config_with(vpcCidr="10.20.0.0/20", clusterSubnetPrefix=20))
    assert "use a /17 or larger egress:vpcCidr" in message  # the explicit /20 cluster subnets are kept


def test_tenants_beyond_the_vpcs_room_are_told_the_smallest_vpc_that_holds_them():
    found = problems(config_with(vpcCidr="10.20.0.0/22", tenants=[tenant(n) for n in "abc"]))
    assert found == ["egress:tenants[2]: tenant 'c' (slot 2) does not fit: 10.20.0.0/22 (egress:vpcCidr) holds "
                     "2 tenant slot(s) of 4 x /27; use a /21 or larger egress:vpcCidr, or a longer "
                     "egress:tenantSubnetPrefix"]
    assert problems(config_with(vpcCidr="10.20.0.0/21", tenants=[tenant(n) for n in "abc"])) == []


def test_readme_minimum_vpc_table_is_what_the_plan_accepts():
    rows = re.findall(r"^\| `/(\d\d)` \| (\d+) \|", README, re.MULTILINE)
    assert rows, "README lists the tenant slots per VPC size"
    for prefix, slots in rows:
        names = [f"t{i}" for i in range(int(slots))]
        fits = config_with(vpcCidr=f"10.20.0.0/{prefix}", tenants=[tenant(n) for n in names])
        assert problems(fits) == [], prefix
        too_many = config_with(vpcCidr=f"10.20.0.0/{prefix}", tenants=[tenant(n) for n in [*names, "extra"]])
        assert problems(too_many), prefix
    smallest = re.search(r"smallest VPC that works with the default sizes is a /(\d\d)", README)
    assert smallest and problems(config_with(vpcCidr=f"10.20.0.0/{int(smallest[1]) + 1}"))


def test_in_a_mixed_stack_each_tenant_range_sizes_its_own_subnets():
    config = stack_config("mixed")
    config["egress:vpcCidr"] = "10.50.0.0/22"
    p = plan(config)
    sizes = {name: {s.cidr.prefixlen for s in t.subnets} for name, t in p.addresses.tenants.items()}
    assert sizes["payments"] == {27}  # subnet-cidr: carved from the /22 VPC
    assert sizes["reporting"] == {23}  # private-nat: carved from the /16 tenantCidr
