"""`plan --format mermaid`: a picture per stack that Mermaid (GitHub's renderer)
parses, showing what the stack creates; each pattern's doc embeds its shipped
stack's picture, kept current."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import NODE_GROUP, SUBNET, planned
from patterns.__main__ import main
from patterns.offline import Graph
from patterns.registry import PATTERNS
from patterns.views import docs, mermaid

ROOT = Path(__file__).resolve().parent.parent
CHECKER = ROOT / "tests" / "mermaid"


def mermaid_parse(diagrams: list[str]) -> list[dict]:
    """Mermaid's own parser (the npm package, pinned in tests/mermaid/package.json,
    installed by `npm ci --prefix tests/mermaid`; CI always installs it)."""
    if shutil.which("node") is None or not (CHECKER / "node_modules" / "mermaid").is_dir():
        if os.environ.get("CI"):
            pytest.fail("CI must install the Mermaid checker: npm ci --prefix tests/mermaid")
        pytest.skip("Mermaid's parser is not installed: npm ci --prefix tests/mermaid")
    done = subprocess.run(["node", "parse.mjs"], cwd=CHECKER, input=json.dumps(diagrams), capture_output=True,
                          text=True, timeout=60, check=True)
    return json.loads(done.stdout)


@pytest.fixture(scope="module")
def diagrams() -> dict[str, str]:
    return {stack: mermaid.render(planned(stack)) for stack in PATTERNS}


def test_every_shipped_stacks_diagram_is_valid_mermaid_and_the_parser_can_say_no(diagrams):
    broken = diagrams["subnet-cidr"].replace('"]', "]", 1)  # an unclosed label
    results = mermaid_parse([*diagrams.values(), broken])
    for stack, result in zip(diagrams, results):
        assert result == {"ok": True, "type": "flowchart-v2", "error": None}, stack
    assert not results[-1]["ok"] and "Parse error" in results[-1]["error"]


@pytest.mark.parametrize("stack", list(PATTERNS))
def test_the_diagram_shows_what_the_stack_creates(stack, diagrams):
    graph = planned(stack)
    text = diagrams[stack]
    assert text.startswith("flowchart LR\n")
    assert f'subgraph vpc["VPC {graph.plan.settings.vpc_cidr} (eu-west-1)"]' in text
    for az in graph.plan.settings.availability_zones:
        assert f'subgraph az_{az.replace("-", "_")}["{az}"]' in text
    addresses = graph.plan.addresses
    by_role = {"cluster": addresses.cluster_subnets, "public": addresses.public_subnets,
               "gateway": addresses.egress_subnets}
    by_role |= {f"tenant {name}": t.subnets for name, t in addresses.tenants.items()}
    drawn = {s.inputs["cidrBlock"] for s in graph.by_type(SUBNET)}
    for role, subnets in by_role.items():
        for subnet in subnets:
            if str(subnet.cidr) in drawn:  # public subnets exist only with internet NAT
                assert re.search(rf'subnets_{subnet.az.replace("-", "_")}\["subnets<br/>[^"]*{role} {subnet.cidr}', text)
    for group in graph.by_type(NODE_GROUP):
        assert f"node group {group.name}<br/>{group.inputs['instanceTypes'][0]}" in text
        for taint in group.inputs.get("taints", []):
            if taint["key"].startswith("egress/"):
                assert f"taint {taint['key']}={taint['value']}:NoSchedule" in text
    assert f'tgw{{{{"transit gateway {graph.plan.settings.transit_gateway_id}"}}}}' in text
    for entry in graph.plan.allow_list:
        node = f"tenant_{entry.tenant}"
        assert f'{node}(["tenant {entry.tenant}<br/>namespace {entry.namespace}<br/>source:<br/>' in text
        assert all(f"<br/>{source}" in text for source in entry.sources)
        for d in entry.destinations:
            upstream = mermaid.node_id("up", d.name, d.cidr)
            assert re.search(rf'tgw -->\|"[^|]*{entry.tenant} :{",".join(map(str, d.ports))}[^|]*"\| {upstream}\n',
                             text), (entry.tenant, d.name)


def _path(text: str, start: str) -> set[str]:
    """Every node reachable from `start` along --> edges."""
    edges: dict[str, set[str]] = {}
    for a, b in re.findall(r"^  (\w+) -->(?:\|[^|]*\|)? (\w+)$", text, re.MULTILINE):
        edges.setdefault(a, set()).add(b)
    seen, todo = set(), [start]
    while todo:
        node = todo.pop()
        for nxt in edges.get(node, ()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def test_each_tenant_path_passes_its_own_egress_hop(diagrams):
    # subnet-cidr: own nodes, straight to the transit gateway
    assert _path(diagrams["subnet-cidr"], "tenant_payments") >= {"ng_payments", "tgw"}
    assert "ng_reporting" not in _path(diagrams["subnet-cidr"], "tenant_payments")
    # private-nat: through its profile's NAT gateways only
    payments = _path(diagrams["private-nat"], "tenant_payments")
    assert {"nat_egress_nat_payments_eu_west_1a", "tgw"} <= payments
    assert not any(node.startswith("nat_egress_nat_warehouse") for node in payments)
    assert "nat_egress_nat_warehouse_eu_west_1b" in _path(diagrams["private-nat"], "tenant_analytics")
    # cilium: through the gateway nodes, whose ENIs hold the egress IPs; istio: through the gateway group
    assert {"ng_egress_gateway_eu_west_1a", "tgw"} <= _path(diagrams["cilium"], "tenant_reporting")
    assert "ng_egress_gateway_eu_west_1a -.- eni_egress_gateway_eu_west_1a" in diagrams["cilium"]
    assert {"ng_egress_gateway", "tgw"} <= _path(diagrams["istio"], "tenant_payments")


def test_no_transit_gateway_is_drawn_as_the_users_route(diagrams):
    planned_graph = planned("subnet-cidr")
    settings = planned_graph.plan.settings.model_copy(update={"transit_gateway_id": ""})
    graph = Graph(plan=dataclasses.replace(planned_graph.plan, settings=settings),
                  resources=[r for r in planned_graph.resources if r.type != mermaid.TGW_ATTACHMENT])
    text = mermaid.render(graph)
    assert 'onprem_route{{"on-prem route (not created by this stack)"}}' in text and "tgw" not in text


def test_plan_command_prints_the_diagram(capsys, monkeypatch, diagrams):
    from patterns import offline

    monkeypatch.setattr(offline, "run_stack", lambda stack=None, config_file=None, **_: planned(stack))
    assert main(["plan", "--stack", "istio", "--format", "mermaid"]) == 0
    assert capsys.readouterr().out == diagrams["istio"]


def test_each_patterns_doc_embeds_its_shipped_stacks_current_diagram(diagrams):
    for stack in PATTERNS:
        doc = (ROOT / "docs" / f"{stack}.md").read_text()
        assert docs.block(doc, "diagram") == f"```mermaid\n{diagrams[stack]}```\n", (
            f"docs/{stack}.md shows an old picture; run `python -m patterns docs --write`")


def test_every_generated_part_of_the_docs_is_current():
    graphs = {stack: planned(stack) for stack in PATTERNS}
    assert docs.stale(graphs) == [], "run `python -m patterns docs --write` and review the change"


def test_a_generated_block_round_trips():
    doc = "intro\n" + docs.BEGIN.format(name="x") + "\nold\n" + docs.END.format(name="x") + "\nrest\n"
    assert docs.block(doc, "x") == "old\n"
    assert docs.block(docs.with_block(doc, "x", "new\n"), "x") == "new\n"
    assert docs.with_block(doc, "x", "new\n").endswith("\nrest\n")
    assert docs.block(doc, "y") is None


def test_each_pattern_has_a_doc_in_the_same_shape_linked_from_the_readme():
    readme = (ROOT / "README.md").read_text()
    for stack in PATTERNS:
        doc = (ROOT / "docs" / f"{stack}.md").read_text()
        assert f"(docs/{stack}.md)" in readme, stack
        headings = re.findall(r"^## (.+)$", doc, re.MULTILINE)
        for heading in ("The picture", "At a glance", "Deploy", "Destroy"):
            assert heading in headings, (stack, heading)
        assert any(h.startswith("Validate") for h in headings), stack
        destroy = doc.split("## Destroy", 1)[1].split("\n## ", 1)[0]
        assert "failed calling webhook" in destroy and "ENI" in destroy, stack
