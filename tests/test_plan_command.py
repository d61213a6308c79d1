"""`python -m patterns plan`: the offline plan a user (and the firewall team) reads."""

from __future__ import annotations

import json

import pytest

from conftest import planned
from patterns.__main__ import main, render_text


def test_json_plan_has_the_documented_shape(capsys):
    assert main(["plan", "--stack", "private-nat", "--format", "json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert set(document) == {"stack", "pattern", "resources", "allowList", "outputs", "warnings", "estimate", "deployTime"}
    assert (document["stack"], document["pattern"]) == ("private-nat", "private-nat")
    for resource in document["resources"]:
        assert {"urn", "type", "name", "parent", "custom", "inputs", "dependencies"} <= set(resource)
    by_urn = {r["urn"]: r for r in document["resources"]}
    nat = next(r for r in document["resources"] if r["type"] == "aws:ec2/natGateway:NatGateway"
               and r["inputs"]["connectivityType"] == "private")
    # Implicit dependencies (from Output inputs) are in the graph, as URNs.
    assert any(by_urn[d]["type"] == "aws:ec2/subnet:Subnet" for d in nat["dependencies"])
    assert document["allowList"] == document["outputs"]["egressAllowList"]
    entry = document["allowList"][0]
    assert {"tenant", "sources", "destinations"} <= set(entry)
    assert {"name", "cidr", "host", "ports"} <= set(entry["destinations"][0])


@pytest.mark.parametrize("stack", ["subnet-cidr", "cilium"])
def test_text_plan_lists_every_tenants_sources_and_destinations(stack):
    graph = planned(stack)
    text = render_text(graph)
    assert f"stack {stack}: pattern {stack}" in text
    assert f"{len(graph.resources)} resources:" in text
    for entry in graph.plan.allow_list:
        assert f"tenant {entry.tenant} (namespace {entry.namespace})" in text
        assert f"sources:      {', '.join(entry.sources)}" in text
        for destination in entry.destinations:
            assert f"{destination.cidr} {destination.protocol}/" in text
