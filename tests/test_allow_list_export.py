"""`python -m patterns allow-list`: files the firewall team imports or pastes as they are."""

from __future__ import annotations

import csv
import io
import json
import re

import pytest

from conftest import planned, stack_config
from patterns import offline
from patterns.__main__ import main, render_text
from patterns.settings import PATTERN_NAMES
from patterns.program import plan_from_config
from patterns.views import allow_list

HEADER = "tenant,namespace,source,destination_name,destination_cidr,host,protocol,port"


def plan_of(config, name="test"):
    return plan_from_config(name, offline.engine_config(config))


def export(capsys, *args) -> str:
    assert main(["allow-list", *args]) == 0
    return capsys.readouterr().out


def test_csv_has_the_exact_header_and_one_row_per_source_destination_and_port(capsys):
    text = export(capsys, "--stack", "private-nat", "--format", "csv")
    assert text.splitlines()[0] == HEADER
    records = list(csv.DictReader(io.StringIO(text)))
    plan = planned("private-nat").plan
    expected = {
        (e.tenant, e.namespace, s, d.name, d.cidr, d.host or "", "tcp", str(p))
        for e in plan.allow_list for s in e.sources for d in e.destinations for p in d.ports
    }
    # payments: 3 NAT IPs x (443 + 1521); reporting, analytics: 6 NAT IPs x (443 + 5439) each
    assert len(records) == len(expected) == 3 * 2 + 2 * (6 * 2)
    assert {tuple(r.values()) for r in records} == expected
    first = records[0]
    assert first == {
        "tenant": "analytics", "namespace": "analytics", "source": "10.30.68.68/32",
        "destination_name": "data-warehouse", "destination_cidr": "10.102.0.0/24",
        "host": "dwh.corp.example", "protocol": "tcp", "port": "443",
    }


def test_order_is_stable_when_tenants_and_upstreams_are_listed_differently():
    config = stack_config("subnet-cidr")
    before = allow_list.to_csv(plan_of(config))
    for tenant in config["egress:tenants"]:
        tenant["slot"] = config["egress:tenants"].index(tenant)  # keep the addresses where they are
        tenant["upstreams"].reverse()
    config["egress:tenants"].reverse()
    assert allow_list.to_csv(plan_of(config)) == before
    # Sources sort by address, not as text (10.20.100.0 after 10.20.12.0).
    sources = [r.source for r in allow_list.rows(plan_of(config)) if r.tenant == "payments"]
    assert sources == sorted(sources, key=lambda s: tuple(int(x) for x in s.split("/")[0].split(".")))


def test_json_is_the_allow_list_alone(capsys):
    document = json.loads(export(capsys, "--stack", "istio", "--format", "json"))
    assert document == planned("istio").plan.allow_list_json()
    assert set(document[0]) == {"tenant", "namespace", "sources", "sourceIdentity", "sharedWith", "destinations"}


def test_markdown_is_a_table_with_a_row_per_csv_row(capsys):
    text = export(capsys, "--stack", "cilium", "--format", "md")
    table = [line for line in text.splitlines() if line.startswith("|")]
    assert table[0] == "| " + " | ".join(HEADER.split(",")) + " | source shared with |"
    assert table[1] == "|" + "---|" * 9
    rows = allow_list.rows(planned("cilium").plan)
    assert len(table) - 2 == len(rows)
    assert table[2] == "| payments | payments | 10.40.68.5/32 | core-banking | 10.100.10.0/24 | corebank.corp.example | tcp | 443 | - |"


@pytest.mark.parametrize(
    ("stack", "shared"),
    [
        ("subnet-cidr", {}),
        ("cilium", {}),
        ("private-nat", {"reporting": ["analytics"], "analytics": ["reporting"]}),
        ("istio", {"payments": ["reporting"], "reporting": ["payments"]}),
    ],
)
def test_each_tenant_says_whether_its_sources_are_its_own(stack, shared):
    for entry in planned(stack).plan.allow_list_json():
        assert entry["sharedWith"] == shared.get(entry["tenant"], [])
        assert entry["sourceIdentity"] == ("shared" if entry["tenant"] in shared else "own")


def test_stack_output_carries_the_sharing_too():
    graph = planned("istio")
    assert [e["sourceIdentity"] for e in graph.outputs["egressAllowList"]] == ["shared", "shared"]


def test_bad_stack_is_an_error_not_a_traceback(capsys, tmp_path):
    path = tmp_path / "Pulumi.bad.yaml"
    path.write_text("config:\n  egress:pattern: nope\n")
    assert main(["allow-list", "--config-file", str(path)]) == 2
    assert "egress:pattern" in capsys.readouterr().err


# --- warnings print once ------------------------------------------------------------


def test_warnings_are_logged_once_and_not_exported_again(capsys, monkeypatch):
    graph = planned("cilium")
    assert graph.plan.warnings
    # `pulumi up` shows what the program logs (here recorded, not printed); a
    # `warnings` output would repeat it.
    assert [m for level, m in graph.diagnostics if level == "warning"] == list(graph.plan.warnings)
    assert "warnings" not in graph.outputs
    monkeypatch.setattr(offline, "run_stack", lambda stack=None, config_file=None, **_: graph)
    assert main(["plan", "--stack", "cilium"]) == 0
    out = capsys.readouterr().out
    for warning in graph.plan.warnings:
        assert out.count(warning) == 1
    assert main(["plan", "--stack", "cilium", "--format", "json"]) == 0
    text = capsys.readouterr().out
    for warning in graph.plan.warnings:
        assert text.count(json.dumps(warning)) == 1
    assert render_text(graph).count(graph.plan.warnings[0]) == 1


def test_readme_promises_per_pattern_what_the_allow_list_says():
    from test_docs import README

    table = re.findall(r"^\| `([a-z-]+)` \| (.*) \| \w+ \|$", README, re.MULTILINE)
    promises = {name: cells.split(" | ")[2] for name, cells in table}
    assert set(promises) == set(PATTERN_NAMES)
    for stack, promise in promises.items():
        identities = {e.source_identity for e in planned(stack).plan.allow_list}
        expected = {"own": {"own"}, "shared by all tenants": {"shared"}}.get(promise, {"own", "shared"})
        assert identities == expected, (stack, promise)
