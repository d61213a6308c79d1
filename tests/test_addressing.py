"""The address plan's properties: inside its parents, no overlaps, deterministic,
and stable when tenants or AZs are appended."""

from __future__ import annotations

import ipaddress
import itertools

from hypothesis import given, settings as hsettings, strategies as st

from patterns.addressing import AddressPlanError, plan_addresses, usable_host
from patterns.settings import Settings

REGION = "eu-west-1"


def make_settings(tenants: int, azs: int = 3, vpc: str = "10.20.0.0/16", tenant_prefix: int = 23,
                  slots: list[int | None] | None = None) -> Settings:
    return Settings.model_validate(
        {
            "pattern": "subnet-cidr",
            "region": REGION,
            "availabilityZones": [f"{REGION}{c}" for c in "abcd"[:azs]],
            "vpcCidr": vpc,
            "onPremCidrs": ["10.100.0.0/14"],
            "internetEgress": "nat",
            "kubernetesVersion": "1.35",
            "clusterAdminRoleArns": ["arn:aws:iam::111122223333:role/admin"],
            "deletionProtection": True,
            "clusterSubnetPrefix": 20,
            "egressSubnetPrefix": 24,
            "tenantSubnetPrefix": tenant_prefix,
            "gatewayInstanceType": "c6in.large",
            "tenants": [
                {
                    "name": f"t{i}",
                    "upstreams": [{"name": "u", "cidr": "10.100.0.0/24", "ports": [443]}],
                    **({"slot": slots[i]} if slots and slots[i] is not None else {}),
                }
                for i in range(tenants)
            ],
        }
    )


def test_layout_of_the_default_stack():
    plan = plan_addresses(make_settings(2), ipaddress.IPv4Network("10.20.0.0/16"))
    assert [str(s.cidr) for s in plan.cluster_subnets] == ["10.20.0.0/20", "10.20.16.0/20", "10.20.32.0/20"]
    assert [str(s.cidr) for s in plan.public_subnets] == ["10.20.64.0/26", "10.20.64.64/26", "10.20.64.128/26"]
    assert [str(s.cidr) for s in plan.egress_subnets] == ["10.20.68.0/24", "10.20.69.0/24", "10.20.70.0/24"]
    assert [str(s.cidr) for s in plan.tenants["t0"].subnets] == ["10.20.72.0/23", "10.20.74.0/23", "10.20.76.0/23"]
    assert [str(s.cidr) for s in plan.tenants["t1"].subnets] == ["10.20.80.0/23", "10.20.82.0/23", "10.20.84.0/23"]
    assert [s.az for s in plan.tenants["t1"].subnets] == ["eu-west-1a", "eu-west-1b", "eu-west-1c"]


@hsettings(max_examples=40, deadline=None)
@given(
    tenants=st.integers(min_value=1, max_value=12),
    azs=st.integers(min_value=2, max_value=4),
    prefix=st.integers(min_value=23, max_value=26),
)
def test_every_range_is_inside_its_parent_and_none_overlap(tenants, azs, prefix):
    s = make_settings(tenants, azs, tenant_prefix=prefix)
    plan = plan_addresses(s, s.vpc_cidr)
    subnets = [x.cidr for x in plan.all_subnets()]
    assert len(subnets) == azs * (3 + tenants)
    assert all(net.subnet_of(s.vpc_cidr) for net in subnets)
    for a, b in itertools.combinations(subnets, 2):
        assert not a.overlaps(b), (a, b)
    for tenant in plan.tenants.values():
        assert [x.az for x in tenant.subnets] == s.availability_zones
        assert all(x.cidr.prefixlen == prefix for x in tenant.subnets)


def test_tenants_in_a_secondary_range_start_at_its_beginning():
    s = make_settings(2)
    plan = plan_addresses(s, ipaddress.IPv4Network("100.64.0.0/16"))
    assert str(plan.tenants["t0"].subnets[0].cidr) == "100.64.0.0/23"
    assert str(plan.tenants["t1"].subnets[0].cidr) == "100.64.8.0/23"


def test_patterns_without_tenant_subnets_allocate_none():
    assert plan_addresses(make_settings(3), None).tenants == {}


@hsettings(max_examples=30, deadline=None)
@given(before=st.integers(min_value=1, max_value=10), added=st.integers(min_value=1, max_value=5))
def test_appending_tenants_never_moves_existing_ranges(before, added):
    old = plan_addresses(make_settings(before), ipaddress.IPv4Network("10.20.0.0/16"))
    new = plan_addresses(make_settings(before + added), ipaddress.IPv4Network("10.20.0.0/16"))
    for name, tenant in old.tenants.items():
        assert new.tenants[name] == tenant
    assert (old.cluster_subnets, old.egress_subnets) == (new.cluster_subnets, new.egress_subnets)


def test_appending_an_az_never_moves_existing_ranges():
    old = plan_addresses(make_settings(3, azs=2), ipaddress.IPv4Network("10.20.0.0/16"))
    new = plan_addresses(make_settings(3, azs=3), ipaddress.IPv4Network("10.20.0.0/16"))
    for old_subnets, new_subnets in zip(
        (old.cluster_subnets, old.egress_subnets, *[t.subnets for t in old.tenants.values()]),
        (new.cluster_subnets, new.egress_subnets, *[t.subnets for t in new.tenants.values()]),
    ):
        assert new_subnets[:2] == old_subnets


def test_pinned_slots_keep_ranges_when_a_tenant_is_removed():
    three = plan_addresses(make_settings(3), ipaddress.IPv4Network("10.20.0.0/16"))
    # Remove t1: t2 keeps its ranges by pinning slot 2.
    s = make_settings(3, slots=[None, None, 2])
    s = s.model_copy(update={"tenants": [s.tenants[0], s.tenants[2]]})
    two = plan_addresses(s, s.vpc_cidr)
    assert two.tenants["t2"] == three.tenants["t2"]


def test_same_input_same_plan():
    s = make_settings(7)
    assert plan_addresses(s, s.vpc_cidr) == plan_addresses(s, s.vpc_cidr)


def test_too_many_tenants_are_refused_with_the_capacity():
    s = make_settings(30, vpc="10.20.0.0/17", tenant_prefix=24)  # 14 slots
    try:
        plan_addresses(s, s.vpc_cidr)
    except AddressPlanError as error:
        messages = [str(p) for p in error.problems]
    else:
        raise AssertionError("expected the plan to refuse")
    assert any("does not fit" in m and "tenant slot(s)" in m for m in messages)


def test_usable_host_skips_aws_reserved_addresses():
    net = ipaddress.IPv4Network("10.20.68.0/24")
    assert str(usable_host(net, 0)) == "10.20.68.4"
    assert str(usable_host(net, 250)) == "10.20.68.254"
    try:
        usable_host(net, 251)
    except IndexError:
        pass
    else:
        raise AssertionError("the broadcast address is not assignable")
