"""Cost and capacity as data, the modeled deploy time, and `python -m patterns compare`."""

from __future__ import annotations

import dataclasses
import json
import random
import re

import pytest
import yaml

from conftest import NODE_GROUP, config_with, planned
from patterns import offline
from patterns.__main__ import estimate_text, main, render_text
from patterns.offline import Graph, RecordedResource
from patterns.registry import PATTERNS
from patterns.settings import PATTERN_NAMES
from patterns.views import compare as views
from patterns.views.cost import estimate, price_data
from patterns.views.deploy_time import create_times, modeled, typical_seconds

HOURS = 730


# --- the price data -----------------------------------------------------------------


def test_every_price_names_its_source_date_and_whether_it_is_confirmed():
    data = price_data()
    assert data["label"] == "estimate" and data["currency"] == "USD" and data["hoursPerMonth"] == HOURS
    for name, entry in data["prices"].items():
        assert entry["source"] in data["sources"], name
        assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", str(entry["checked"])), name
        for region, price in entry["regions"].items():
            assert price["usd"] > 0 and isinstance(price["confirmed"], bool), (name, region)
    for instance_type, regions in data["instances"]["types"].items():
        for region, price in regions.items():
            assert price["usd"] > 0 and isinstance(price["confirmed"], bool), (instance_type, region)


def test_the_shipped_stacks_and_the_defaults_are_priced_everywhere_they_run():
    data = price_data()
    project = yaml.safe_load((offline.PROJECT_FILE).read_text())
    types = {project["config"]["gatewayInstanceType"]["default"], "m7i.large"}  # m7i.large: NodeGroupSize default
    regions = set()
    for stack in PATTERN_NAMES:
        graph = planned(stack)
        regions.add(graph.plan.settings.region)
        types |= {r.inputs["instanceTypes"][0] for r in graph.by_type(NODE_GROUP)}
        assert estimate(graph).unknown == ()
    for instance_type in types:
        assert regions <= set(data["instances"]["types"][instance_type]), instance_type
        assert instance_type in data["capacity"]["instanceBandwidth"]["types"], instance_type
    for entry in data["prices"].values():
        assert regions <= set(entry["regions"])


# --- the estimate ---------------------------------------------------------------------


def test_subnet_cidr_estimate_counts_what_the_stack_creates():
    cost = estimate(planned("subnet-cidr"))
    prices = {k: v["regions"]["eu-west-1"]["usd"] for k, v in price_data()["prices"].items()}
    m7i = price_data()["instances"]["types"]["m7i.large"]["eu-west-1"]["usd"]
    lines = {line.item: line for line in cost.lines}
    assert lines["EKS control plane"].monthly_usd == round(HOURS * prices["eksCluster"], 2)
    # system 2 + payments 2 + reporting 2 nodes at the minimum; 50 GB root volume each
    assert lines["system nodes (m7i.large, 2 at minimum)"].quantity == 2 * HOURS
    assert lines["tenant nodes (m7i.large, 4 at minimum)"].monthly_usd == round(4 * HOURS * m7i, 2)
    assert lines["node root volumes (gp3)"].quantity == 6 * 50
    assert lines["NAT gateways, public"].quantity == 3 * HOURS
    assert "NAT gateways, private" not in lines
    # 9 interface endpoints, each in the 3 cluster subnets
    assert lines["interface endpoints (per endpoint per AZ)"].quantity == 9 * 3 * HOURS
    assert lines["transit gateway attachment"].quantity == HOURS
    assert cost.monthly_usd == round(sum(line.monthly_usd for line in cost.lines), 2)
    # at the maximum: system 4 + payments 6 + reporting 4 nodes
    fixed = sum(line.monthly_usd for line in cost.lines if not line.per_node)
    assert cost.monthly_usd_at_max_nodes == round(fixed + 14 * HOURS * m7i + 14 * 50 * prices["ebsGp3"], 2)
    assert {rate.item for rate in cost.rates} == {
        "NAT gateway data processed", "interface endpoint data processed", "transit gateway data processed"}


def test_private_nat_estimate_has_the_private_gateways_and_their_capacity():
    cost = estimate(planned("private-nat"))
    lines = {line.item: line for line in cost.lines}
    assert lines["NAT gateways, private"].quantity == 2 * 3 * HOURS  # two profiles x three AZs
    nat = cost.capacity["privateNat"]
    assert nat["connectionsPerNatIpPerDestination"] == 55_000
    assert nat["connectionsPerGatewayPerDestination"] == [55_000, 110_000]  # payments 1 IP, warehouse 2


def test_gateway_capacity_names_bandwidth_and_ips_per_eni():
    gateway = estimate(planned("cilium")).capacity["gatewayNodes"]["instanceTypes"]["c6in.large"]
    assert gateway == {"bandwidth": "up to 25 Gbps", "ipv4PerEni": 10}


def _elsewhere(graph: Graph, **settings) -> Graph:
    """The same resources, as if planned with other settings (no second engine run)."""
    plan = dataclasses.replace(graph.plan, settings=graph.plan.settings.model_copy(update=settings))
    return Graph(plan=plan, resources=graph.resources)


def test_an_unknown_region_is_named_not_guessed():
    cost = estimate(_elsewhere(planned("subnet-cidr"), region="ap-south-1"))
    assert "eksCluster in region ap-south-1" in cost.unknown
    assert "instance type m7i.large in region ap-south-1" in cost.unknown
    assert all(line.unit_usd is None and line.monthly_usd is None for line in cost.lines)
    assert cost.monthly_usd == 0
    text = "\n".join(estimate_text(cost))
    assert "no price" in text and "not priced" in text and "eksCluster in region ap-south-1" in text


def test_an_unknown_instance_type_is_named_and_the_rest_still_priced():
    graph = planned("subnet-cidr")
    resources = [
        dataclasses.replace(r, inputs={**r.inputs, "instanceTypes": ["m7i.2xlarge"]})
        if r.type == NODE_GROUP and r.name == "payments" else r
        for r in graph.resources
    ]
    cost = estimate(Graph(plan=graph.plan, resources=resources))
    assert cost.unknown == ("instance type m7i.2xlarge in region eu-west-1",)
    lines = {line.item: line for line in cost.lines}
    assert lines["tenant nodes (m7i.2xlarge, 2 at minimum)"].monthly_usd is None
    assert lines["tenant nodes (m7i.large, 2 at minimum)"].monthly_usd > 0


def test_plan_prints_the_estimate_in_text_and_json(capsys, monkeypatch):
    monkeypatch.setattr(offline, "run_stack", lambda stack, config_file, previous=None: planned(stack))
    text = render_text(planned("istio"))
    cost = estimate(planned("istio"))
    assert f"monthly cost ESTIMATE (on-demand list prices, eu-west-1): ${cost.monthly_usd:,.2f}" in text
    assert "(unconfirmed price)" in text
    assert main(["plan", "--stack", "istio", "--format", "json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["estimate"]["label"] == "estimate"
    assert document["estimate"]["monthlyUsd"] == cost.monthly_usd
    assert document["estimate"]["unknownPrices"] == []
    assert document["deployTime"]["modeledSeconds"] == modeled(planned("istio")).seconds


# --- modeled deploy time --------------------------------------------------------------


def test_create_times_cite_their_source():
    for type_, entry in create_times()["types"].items():
        assert entry["source"] and isinstance(entry["observed"], bool) and entry["seconds"] >= 0, type_


def test_the_critical_path_runs_through_the_recorded_dependencies():
    graph = planned("subnet-cidr")
    deploy = modeled(graph)
    steps = deploy.critical_path
    assert [s.type for s in steps][:3] == ["aws:ec2/vpc:Vpc", "aws:ec2/subnet:Subnet", "eks:index:Cluster"]
    assert deploy.seconds == sum(s.seconds for s in steps) == steps[-1].done_at
    assert all(a.done_at <= b.done_at for a, b in zip(steps, steps[1:]))
    assert any(s.type == NODE_GROUP for s in steps)  # nodes wait for the cluster and the CNI
    assert deploy.seconds >= 540 + 120


def _resource(urn, type_="aws:ec2/vpc:Vpc", *, deps=(), parent="", custom=True, provider=""):
    return RecordedResource(urn=urn, id=urn, type=type_, name=urn, parent=parent, custom=custom, remote=False,
                            provider=provider, inputs={}, dependencies=tuple(deps), property_dependencies={})


def test_waits_for_dependencies_providers_custom_parents_and_everything_under_a_component():
    node = "aws:eks/nodeGroup:NodeGroup"
    resources = [
        _resource("vpc"),  # 24 s
        _resource("component", "egress:x:Thing", custom=False),
        _resource("group", node, parent="component", deps=["vpc"]),  # waits for vpc: 24 + 120
        _resource("provider", "pulumi:providers:kubernetes", deps=["component"]),  # waits for the group: 0 s
        _resource("namespace", "kubernetes:core/v1:Namespace", provider="provider"),  # 144 + 2
        _resource("child", "aws:ec2/subnet:Subnet", parent="namespace"),  # custom parent: 146 + 10
    ]
    graph = Graph(plan=None, resources=resources)
    deploy = modeled(graph)
    assert deploy.seconds == 24 + 120 + 0 + 2 + 10
    assert [s.name for s in deploy.critical_path] == ["vpc", "group", "component", "provider", "namespace", "child"]
    assert typical_seconds(resources[1]) == 0


@pytest.mark.parametrize("stack", offline.shipped_stacks())
def test_the_critical_path_does_not_depend_on_registration_order(stack):
    # The SDK registers resources in whatever order their inputs resolve; the
    # docs embed the path, so equal-length branches must not swap between runs.
    graph = planned(stack)
    expected = modeled(graph)
    for seed in range(3):
        shuffled = list(graph.resources)
        random.Random(seed).shuffle(shuffled)
        assert modeled(dataclasses.replace(graph, resources=shuffled)) == expected


def test_a_helm_release_that_does_not_wait_takes_less():
    releases = {r.name: r for r in planned("cilium").by_type("kubernetes:helm.sh/v3:Release")}
    assert typical_seconds(releases["egress-cilium"]) < typical_seconds(releases["egress-kyverno"])


# --- compare --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compared():
    # subnet-cidr's tenants in two AZs, with a tenant range that private-nat refuses (it overlaps the VPC)
    config = config_with("subnet-cidr", availabilityZones=["eu-west-1a", "eu-west-1b"],
                         privateNat={"tenantCidr": "10.20.0.0/16"})
    return views.compare("subnet-cidr", config)


KEYS = ["pattern", "ok", "problems", "monthlyCostUsd", "costBreakdown", "routableIps", "natGateways", "nodes",
        "sourcesPerTenant", "sharedSources", "modeledDeploySeconds", "azLossImpact"]


def test_compare_json_has_exactly_the_documented_keys(compared):
    document = views.to_json(compared)
    assert list(document) == ["patterns"]
    assert [row["pattern"] for row in document["patterns"]] == list(PATTERNS)
    for row in document["patterns"]:
        assert list(row) == KEYS
    json.dumps(document)


def test_compare_tabulates_each_pattern_from_its_own_plan(compared):
    rows = {row["pattern"]: row for row in views.to_json(compared)["patterns"]}
    subnet, nat, cilium, istio = (rows[p] for p in ("subnet-cidr", "private-nat", "cilium", "istio"))
    assert subnet["ok"] and cilium["ok"] and istio["ok"]
    assert not nat["ok"] and any(p.startswith("egress:privateNat.tenantCidr:") for p in nat["problems"])
    assert nat["monthlyCostUsd"] is None
    # subnet-cidr takes a /23 per tenant per AZ of the routable range; cilium and istio only the shared blocks
    assert subnet["routableIps"] - cilium["routableIps"] == 2 * 2 * 512
    assert cilium["routableIps"] == istio["routableIps"]
    assert subnet["nodes"]["byRole"] == {"system": {"min": 2, "max": 4, "groups": 1},
                                         "tenant": {"min": 4, "max": 10, "groups": 2}}
    assert cilium["nodes"]["byRole"]["gateway"] == {"min": 2, "max": 2, "groups": 2}
    assert subnet["natGateways"] == {"public": 2, "private": 0}
    assert subnet["sourcesPerTenant"] == {"payments": 2, "reporting": 2}
    assert subnet["sharedSources"] == {"payments": [], "reporting": []}
    assert istio["sharedSources"] == {"payments": ["reporting"], "reporting": ["payments"]}
    assert subnet["monthlyCostUsd"] == round(sum(line["monthlyUsd"] for line in subnet["costBreakdown"]), 2)
    assert subnet["modeledDeploySeconds"] > 600
    assert "1/2" in subnet["azLossImpact"]["az"] and "no egress IP failover" in cilium["azLossImpact"]["gateway"]


def test_compare_text_ends_with_the_seeds_guidance_applied(compared):
    text = views.to_text("subnet-cidr", compared)
    guidance = text.split("when to consider each pattern:")[1].strip().splitlines()
    assert [line.split(":")[0].strip() for line in guidance] == list(PATTERNS)
    assert "room for about" in guidance[0] and "does not plan under it" in guidance[1]
    assert "private-nat does not plan for this stack:" in text


def test_every_pattern_has_guidance_and_a_blast_radius():
    assert set(views.SEED_GUIDANCE) == set(views.IMPACT) == set(PATTERNS)


def test_compare_command(capsys, monkeypatch, compared):
    monkeypatch.setattr(views, "compare", lambda stack, config: compared)
    assert main(["compare", "--stack", "subnet-cidr", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out) == views.to_json(compared)
    assert main(["compare", "--stack", "subnet-cidr"]) == 0
    assert "when to consider each pattern:" in capsys.readouterr().out


def test_compare_names_what_it_could_not_price():
    graph = _elsewhere(planned("subnet-cidr"), region="ap-south-1")
    row = views.PatternRow("subnet-cidr", graph, (), estimate(graph), modeled(graph).seconds)
    text = views.to_text("south", [row])
    assert "$0 + unpriced: EKS control plane, system nodes (m7i.large, 2 at minimum)" in text
    assert row.to_json()["costBreakdown"][0]["monthlyUsd"] is None


def test_cilium_blast_radius_follows_how_the_policies_pick_gateways():
    graph = planned("cilium")
    assert "only the tenants' pods on nodes in that AZ" in views.impact(graph)["az"]
    policy = "kubernetes:cilium.io/v2:CiliumEgressGatewayPolicy"
    kept = {}
    for r in graph.resources:
        if r.type == policy:
            kept.setdefault(r.name.rsplit("-", 3)[0], r)  # one policy per tenant, listing every AZ's gateway
    one_each = Graph(plan=graph.plan, resources=[r for r in graph.resources
                                                 if r.type != policy or r in kept.values()])
    assert "in every AZ" in views.impact(one_each)["az"]


@pytest.mark.parametrize("source", [["--stack", "no-such-stack"], ["--config-file", "BROKEN"]])
def test_compare_refuses_a_missing_or_broken_stack_file_without_a_traceback(source, capsys, tmp_path):
    broken = tmp_path / "Pulumi.broken.yaml"
    broken.write_text("config:\n  egress:pattern: istio\n  egress:pattern: cilium\n")
    argv = ["compare", *[str(broken) if a == "BROKEN" else a for a in source]]
    assert main(argv) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: invalid stack configuration") and "Traceback" not in error
