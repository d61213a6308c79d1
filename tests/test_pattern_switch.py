"""A change of pattern never collides on an address: every pattern pins inside
one explicitly reserved block no gateway node can take, a direct switch between
two pinning patterns is refused (it takes two updates), and no deployed NAT or
egress IP ever moves."""

from __future__ import annotations

import ipaddress

import pytest

from conftest import NODE_GROUP, config_with, planned, problems, stack_config
from patterns import offline
from patterns.program import plan_from_config
from patterns.registry import PATTERNS

RESERVATION = "aws:ec2/subnetCidrReservation:SubnetCidrReservation"


def _reservations(graph) -> dict[str, ipaddress.IPv4Network]:
    """Reserved block by the id of its subnet."""
    found = {}
    for r in graph.by_type(RESERVATION):
        assert r.inputs["reservationType"] == "explicit"  # AWS assigns none of it on its own
        found[r.inputs["subnetId"]] = ipaddress.IPv4Network(r.inputs["cidrBlock"])
    return found


@pytest.mark.parametrize("stack", sorted(PATTERNS))
def test_every_pattern_reserves_the_pinned_half_of_every_gateway_subnet(stack):
    graph = planned(stack)
    reserved = _reservations(graph)
    for subnet in graph.plan.addresses.egress_subnets:
        resource = graph.get("aws:ec2/subnet:Subnet", f"egress-gateway-{subnet.az}")
        assert reserved[resource.id] == next(subnet.cidr.subnets(prefixlen_diff=1))
    assert len(reserved) == len(graph.plan.addresses.egress_subnets)  # one per subnet: AWS refuses overlaps


def test_cilium_keeps_its_reservation_as_it_was():
    graph = planned("cilium")
    reservation = graph.get(RESERVATION, "egress-gateway-eu-west-1a-egress-ips")
    assert reservation.urn == (
        "urn:pulumi:cilium::egress::egress:base:Network$aws:ec2/vpc:Vpc$aws:ec2/subnet:Subnet"
        "$aws:ec2/subnetCidrReservation:SubnetCidrReservation::egress-gateway-eu-west-1a-egress-ips"
    )
    assert reservation.inputs["cidrBlock"] == "10.40.68.0/25"
    assert reservation.inputs["description"] == "Pinned egress IPs of the tenants"
    eni = graph.get("aws:ec2/networkInterface:NetworkInterface", "egress-gateway-eu-west-1a")
    assert reservation.urn in eni.dependencies  # pinned IPs inside the reservation: it comes first


def test_shipped_layouts_keep_their_nat_and_egress_ips():
    cilium = {e.tenant: list(e.sources) for e in planned("cilium").plan.allow_list}
    assert cilium == {"payments": ["10.40.68.5/32", "10.40.69.5/32", "10.40.70.5/32"],
                      "reporting": ["10.40.68.6/32", "10.40.69.6/32", "10.40.70.6/32"]}
    nat = {e.tenant: list(e.sources) for e in planned("private-nat").plan.allow_list}
    assert nat["payments"] == ["10.30.68.4/32", "10.30.69.4/32", "10.30.70.4/32"]
    assert nat["reporting"] == nat["analytics"] == [
        "10.30.68.68/32", "10.30.68.69/32", "10.30.69.68/32", "10.30.69.69/32", "10.30.70.68/32", "10.30.70.69/32"]


@pytest.mark.parametrize("stack", ["cilium", "private-nat"])
def test_every_pinned_address_lies_in_the_reserved_block(stack):
    graph = planned(stack)
    reserved = _reservations(graph)
    pinned = []
    for nat in graph.by_type("aws:ec2/natGateway:NatGateway"):
        if nat.inputs.get("connectivityType") == "private":
            pinned += [(nat.inputs["subnetId"], ip) for ip in [nat.inputs["privateIp"],
                                                               *nat.inputs["secondaryPrivateIpAddresses"]]]
    for eni in graph.by_type("aws:ec2/networkInterface:NetworkInterface"):
        pinned += [(eni.inputs["subnetId"], ip) for ip in eni.inputs["privateIpLists"]]
    assert pinned
    for subnet_id, ip in pinned:
        assert ipaddress.IPv4Address(ip) in reserved[subnet_id], ip


@pytest.mark.parametrize("stack", ["cilium", "istio"])
def test_gateway_nodes_run_in_subnets_whose_pinned_half_is_reserved(stack):
    graph = planned(stack)
    reserved = _reservations(graph)
    groups = [g for g in graph.by_type(NODE_GROUP) if "gateway" in g.name]
    assert groups
    for group in groups:
        assert all(subnet_id in reserved for subnet_id in group.inputs["subnetIds"])


def _previous(pattern: str) -> dict:
    plan = plan_from_config("test", offline.engine_config(stack_config(pattern)))
    return {"assignment": plan.settings.assignment.to_output()}


def _switched(source: str, target: str) -> dict:
    """The `source` stack's tenants and ranges under `target`."""
    config = stack_config(source)
    config["egress:pattern"] = target
    if target == "istio":
        for tenant in config["egress:tenants"]:
            for upstream in tenant["upstreams"]:
                upstream.setdefault("host", f"{upstream['name']}.corp.example")
    return config


@pytest.mark.parametrize(("old", "new"), [("cilium", "private-nat"), ("private-nat", "cilium")])
def test_a_direct_switch_between_pinning_patterns_is_refused(old, new):
    found = problems(_switched(old, new), _previous(old))
    assert any(p.startswith(f"egress:pattern: a switch from {old} to {new} in one update would create")
               and "switch to subnet-cidr or istio first" in p for p in found), found


def test_the_two_step_switch_is_accepted_and_moves_no_address():
    first = plan_from_config("test", offline.engine_config(_switched("cilium", "istio")), _previous("cilium"))
    assert first.settings.pattern == "istio"
    previous = {"assignment": first.settings.assignment.to_output()}
    second = plan_from_config("test", offline.engine_config(_switched("cilium", "private-nat")), previous)
    fresh = plan_from_config("test", offline.engine_config(_switched("cilium", "private-nat")))
    assert second.allow_list == fresh.allow_list
    assert any(w.startswith("switching from istio: its gateway nodes") for w in second.warnings)


def test_nat_ips_beyond_the_reserved_half_are_kept_and_said():
    config = config_with("private-nat")
    config["egress:privateNat"]["profiles"]["warehouse"]["slot"] = 20
    plan = plan_from_config("test", offline.engine_config(config))
    (entry,) = [e for e in plan.allow_list if e.tenant == "reporting"]
    assert entry.sources[0] == "10.30.68.164/32"  # index 160: where slot 20 always put it
    assert any(w.startswith("profile 'warehouse' (slot 20): its NAT IPs lie beyond the reserved half")
               for w in plan.warnings)
