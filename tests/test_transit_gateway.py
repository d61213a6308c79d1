"""The transit gateway learns only what on-prem must reach: the VPC's primary
range, never private-nat's reusable tenant range; a cross-account attachment
waiting for acceptance is said, not silent."""

from __future__ import annotations

import pytest

from conftest import config_with, planned
from patterns import offline
from patterns.network import pending_acceptance

ATTACHMENT = "aws:ec2transitgateway/vpcAttachment:VpcAttachment"
TGW_ROUTE = "aws:ec2transitgateway/route:Route"
TABLE = "tgw-rtb-0123456789abcdef0"


def test_a_vpc_with_a_reusable_tenant_range_does_not_propagate_it():
    graph = offline.run("private-nat", config_with("private-nat", transitGatewayRouteTableId=None))
    attachment = graph.get(ATTACHMENT, "egress-tgw")
    # Propagation would advertise 100.64.0.0/16 along with the primary range.
    assert attachment.inputs["transitGatewayDefaultRouteTablePropagation"] is False
    assert not graph.by_type(TGW_ROUTE)
    (warning,) = [w for w in graph.plan.warnings if w.startswith("the transit gateway attachment does not propagate")]
    assert "100.64.0.0/16 (egress:privateNat.tenantCidr)" in warning and "route 10.30.0.0/16 (egress:vpcCidr)" in warning


@pytest.mark.parametrize("stack", ["subnet-cidr", "cilium", "istio"])
def test_a_vpc_with_only_its_primary_range_keeps_propagating(stack):
    graph = planned(stack)
    assert graph.get(ATTACHMENT, "egress-tgw").inputs["transitGatewayDefaultRouteTablePropagation"] is True
    assert not [w for w in graph.plan.warnings if "does not propagate" in w]


@pytest.mark.parametrize("stack", ["private-nat", "subnet-cidr"])
def test_a_named_route_table_gets_a_static_route_for_the_primary_range_only(stack):
    graph = planned(stack) if stack == "private-nat" else offline.run(stack, config_with(stack, transitGatewayRouteTableId=TABLE))
    attachment = graph.get(ATTACHMENT, "egress-tgw")
    assert attachment.inputs["transitGatewayDefaultRouteTablePropagation"] is False
    (route,) = graph.by_type(TGW_ROUTE)
    assert route.inputs["transitGatewayRouteTableId"] == graph.plan.settings.transit_gateway_route_table_id
    assert route.inputs["destinationCidrBlock"] == graph.plan.settings.vpc_cidr.compressed
    assert route.inputs["transitGatewayAttachmentId"] == attachment.id
    assert not [w for w in graph.plan.warnings if "does not propagate" in w]


def test_a_bad_route_table_id_is_refused():
    from conftest import assert_problem

    assert_problem(config_with(transitGatewayRouteTableId="rtb-123"), "egress:transitGatewayRouteTableId",
                   "tgw-rtb-0123456789abcdef0")


@pytest.mark.parametrize(("owner", "auto_accept", "said"), [
    ("444455556666", "disable", True),  # another account, manual acceptance
    ("444455556666", "enable", False),  # another account that auto-accepts
    (offline.ACCOUNT, "disable", False),  # this account: no acceptance
])
def test_only_an_attachment_waiting_for_acceptance_is_said(owner, auto_accept, said):
    settings = planned("subnet-cidr").plan.settings
    message = pending_acceptance(settings, owner, auto_accept, offline.ACCOUNT)
    assert bool(message) == said
    if said:
        assert "belongs to account 444455556666" in message and "routes 10.20.0.0/16 to it" in message


def test_the_program_says_it_at_preview_and_update(monkeypatch):
    monkeypatch.setitem(offline.SHARED_TRANSIT_GATEWAYS, "tgw-0a1b2c3d4e5f60718", ("444455556666", False))
    graph = offline.run("subnet-cidr", config_with())
    assert [m for level, m in graph.diagnostics if level == "warning" and "pendingAcceptance" in m]
    assert not [m for _, m in planned("subnet-cidr").diagnostics if "pendingAcceptance" in m]
