"""`python -m patterns diff OLD NEW`: created, updated (with paths), replaced and
deleted resources, the firewall's allow-list changes, and the CI gate."""

from __future__ import annotations

import copy
import dataclasses
import json
import shutil
from functools import lru_cache

import pytest
import yaml

from conftest import NODE_GROUP, SUBNET, planned, stack_config
from patterns import offline
from patterns.__main__ import main
from patterns.diff import (
    GATE, DiffError, Side, changed_paths, compare, diff_files, format_path, load_side, parse_path,
    render_text, replace_paths, replacement_rules, side_from_graph, stack_name,
)
from patterns.offline import Options

STACK = "subnet-cidr"
NEW_TENANT = {"name": "ledger", "upstreams": [{"name": "ledger-db", "cidr": "10.100.20.0/24", "ports": [5432],
                                               "protocol": "TCP"}]}


def _edited_config() -> dict:
    """Append a tenant, let payments grow to 8 nodes, move reporting to
    bigger instances, and open a second port to payments' core banking."""
    config = stack_config(STACK)
    tenants = config["egress:tenants"]
    payments = next(t for t in tenants if t["name"] == "payments")
    reporting = next(t for t in tenants if t["name"] == "reporting")
    payments["nodes"] = {**payments.get("nodes", {}), "max": 8}
    payments["upstreams"][0]["ports"] = [443, 8443]
    reporting["nodes"] = {**reporting.get("nodes", {}), "instanceType": "m7i.xlarge"}
    tenants.append(NEW_TENANT)
    return config


@lru_cache(maxsize=None)
def edited_graph():
    return offline.run(STACK, _edited_config(), planned(STACK).outputs)  # as the command plans NEW


@lru_cache(maxsize=None)
def edited():
    return compare(side_from_graph("old", planned(STACK)), side_from_graph("new", edited_graph()), STACK)


def _by_name(changes, type_: str, name: str):
    (change,) = [c for c in changes if c.resource.type == type_ and c.resource.name == name]
    return change


def _side(graph, change=lambda r: r, allow_list=None) -> Side:
    """A copy of a planned stack with `change(resource)` applied to each resource."""
    resources = {r.urn: change(copy.deepcopy(r)) for r in graph.resources}
    return Side("edited", graph.plan.stack, {r.urn: r for r in resources.values()},
                allow_list if allow_list is not None else graph.plan.allow_list_json())


def _with_inputs(type_: str, name: str, edit):
    def change(resource):
        if resource.type == type_ and resource.name == name:
            inputs = copy.deepcopy(resource.inputs)
            edit(inputs)
            return dataclasses.replace(resource, inputs=inputs)
        return resource

    return change


# --- the rules -----------------------------------------------------------------------------


def test_every_registered_type_has_replacement_rules_with_a_source():
    types = {r.type for stack in offline.shipped_stacks() for r in planned(stack).resources if r.custom}
    missing = {t for t in types if replace_paths(t) is None}
    assert missing == set(), (
        "add the replace-on-change properties of these types, with their source, to patterns/data/replacements.yaml"
    )
    rules = replacement_rules()
    assert {"aws", "eks", "kubernetes"} <= set(rules["providers"])
    for provider in rules["providers"].values():
        assert "==" in provider["package"]  # the pinned version the rules were read for
    requirements = (offline.ROOT / "requirements.txt").read_text()
    for provider in rules["providers"].values():
        assert provider["package"].split(" ")[0] in requirements, provider["package"]
    for type_, spec in rules["types"].items():
        assert spec["source"], type_


def test_replace_rules_name_inputs_the_program_sends():
    """A misspelt rule would never fire: every rule of a type the stacks use
    names an input some resource of that type has (or a documented one)."""
    sent: dict[str, set[str]] = {}
    for stack in offline.shipped_stacks():
        for r in planned(stack).resources:
            sent.setdefault(r.type, set()).update(r.inputs)
    assert ("subnetIds",) in replace_paths(NODE_GROUP) and "subnetIds" in sent[NODE_GROUP]
    assert ("cidrBlock",) in replace_paths(SUBNET) and "cidrBlock" in sent[SUBNET]
    assert {p[0] for p in replace_paths("aws:ec2/networkInterface:NetworkInterface")} & sent[
        "aws:ec2/networkInterface:NetworkInterface"] == {"subnetId", "privateIpLists"}


def test_paths_round_trip_and_list_changed_leaves():
    path = ("tags", "egress/stack")
    assert format_path(path) == 'tags["egress/stack"]' and parse_path(format_path(path)) == path
    assert parse_path("launchTemplate.id") == ("launchTemplate", "id")
    assert parse_path("privateIpLists[0]") == ("privateIpLists", 0)
    old = {"a": {"b": 1, "c": [1, 2]}, "gone": True}
    new = {"a": {"b": 2, "c": [1, 2, 3]}, "added": 1}
    assert [format_path(p) for p in changed_paths(old, new)] == ["a.b", "a.c[2]", "added", "gone"]


# --- each class of change, from a real edit of a stack file ----------------------------------


def test_an_unchanged_stack_has_nothing_to_do():
    graph = planned(STACK)
    result = compare(side_from_graph("old", graph), side_from_graph("new", graph), STACK)
    assert (result.created, result.updated, result.replaced, result.deleted, result.allow_list) == ([],) * 5
    assert result.unchanged == len(graph.resources) and result.exit_code == 0


def test_a_new_tenant_is_created_with_its_subnets_node_group_and_namespace():
    created = {(c.resource.type, c.resource.name) for c in edited().created}
    assert {(SUBNET, f"ledger-{az}") for az in ("eu-west-1a", "eu-west-1b", "eu-west-1c")} <= created
    assert (NODE_GROUP, "ledger") in created
    assert ("kubernetes:core/v1:Namespace", "ledger") in created


def test_an_update_names_the_changed_input_paths():
    payments = _by_name(edited().updated, NODE_GROUP, "payments")
    assert payments.paths == ["scalingConfig.maxSize"]
    assert not payments.because


def test_a_replace_on_change_input_replaces_and_says_why():
    reporting = _by_name(edited().replaced, NODE_GROUP, "reporting")
    assert "instanceTypes[0]" in reporting.paths
    assert reporting.because == ["instanceTypes[0] forces replacement"]


def test_ignored_inputs_are_not_diffed():
    """scalingConfig.desiredSize follows min but is the autoscaler's (ignoreChanges)."""
    graph = planned(STACK)

    def grow(inputs):
        inputs["scalingConfig"].update(minSize=3, desiredSize=3)

    result = compare(side_from_graph("old", graph), _side(graph, _with_inputs(NODE_GROUP, "payments", grow)), STACK)
    (change,) = result.updated
    assert change.paths == ["scalingConfig.minSize"] and result.exit_code == 0


def test_a_replaced_subnet_replaces_what_takes_its_id():
    graph = planned(STACK)

    def move(inputs):
        inputs["cidrBlock"] = "10.20.200.0/23"

    result = compare(side_from_graph("old", graph), _side(graph, _with_inputs(SUBNET, "payments-eu-west-1a", move)), STACK)
    replaced = {(c.resource.type, c.resource.name) for c in result.replaced}
    assert replaced == {
        (SUBNET, "payments-eu-west-1a"),
        (NODE_GROUP, "payments"),  # subnetIds forces replacement
        ("aws:ec2/routeTableAssociation:RouteTableAssociation", "payments-eu-west-1a"),
    }
    node_group = _by_name(result.replaced, NODE_GROUP, "payments")
    assert node_group.because == [f"subnetIds comes from {SUBNET} payments-eu-west-1a, which is replaced"]
    assert result.exit_code == GATE
    assert "subnet payments-eu-west-1a replaced" in result.gate_reasons


def test_a_replaced_cluster_replaces_every_kubernetes_object_and_gates():
    """bootstrapSelfManagedAddons is decided at creation (aws_eks_cluster
    ForceNew): changing it replaces the cluster, so the provider built from its
    kubeconfig, and with it every Kubernetes object of the stack."""
    graph = planned(STACK)

    def flip(inputs):
        inputs["bootstrapSelfManagedAddons"] = True

    result = compare(side_from_graph("old", graph), _side(graph, _with_inputs("eks:index:Cluster", "egress", flip)), STACK)
    cluster = _by_name(result.replaced, "eks:index:Cluster", "egress")
    assert cluster.because == ["bootstrapSelfManagedAddons forces replacement"]
    (provider,) = [c for c in result.replaced if c.resource.type == "pulumi:providers:kubernetes"]
    assert provider.because == ["kubeconfig comes from eks:index:Cluster egress, which is replaced"]
    objects = {r.urn for r in graph.resources if r.custom and r.type.startswith("kubernetes:")}
    assert objects and objects <= {c.resource.urn for c in result.replaced}
    node_group = _by_name(result.replaced, NODE_GROUP, "payments")
    assert "clusterName comes from eks:index:Cluster egress, which is replaced" in node_group.because
    assert "EKS cluster egress replaced" in result.gate_reasons


def test_the_resources_own_replace_on_changes_option_counts():
    graph = planned(STACK)

    def retag(resource):
        if resource.type == "aws:ec2/vpc:Vpc":
            return dataclasses.replace(resource, inputs={**resource.inputs, "tags": {"team": "x"}},
                                       options=Options(replace_on_changes=("tags",)))
        return resource

    result = compare(side_from_graph("old", graph), _side(graph, retag), STACK)
    assert [c.resource.name for c in result.replaced if c.resource.type == "aws:ec2/vpc:Vpc"] == ["egress-vpc"]
    assert "VPC egress-vpc replaced" in result.gate_reasons


def test_a_removed_tenant_is_deleted_and_leaves_the_allow_list():
    graph = planned(STACK)
    kept = [e for e in graph.plan.allow_list_json() if e["tenant"] != "reporting"]
    gone = {r.urn for r in graph.resources if r.name.startswith("reporting")}
    new = _side(graph, allow_list=kept)
    new = dataclasses.replace(new, resources={u: r for u, r in new.resources.items() if u not in gone})
    result = compare(side_from_graph("old", graph), new, STACK)
    assert {c.resource.urn for c in result.deleted} == gone
    assert (NODE_GROUP, "reporting") in {(c.resource.type, c.resource.name) for c in result.deleted}
    (tenant,) = result.allow_list
    assert tenant.tenant == "reporting" and tenant.status == "removed"
    assert result.exit_code == GATE and "node group reporting deleted" in result.gate_reasons


def test_deleting_a_protected_or_retained_resource_is_pointed_out():
    graph = planned(STACK)
    vpc = graph.get("aws:ec2/vpc:Vpc", "egress-vpc")
    old = _side(graph, lambda r: dataclasses.replace(r, options=Options(protect=True, retain_on_delete=True))
                if r.urn == vpc.urn else r)
    new = dataclasses.replace(old, resources={u: r for u, r in old.resources.items() if u != vpc.urn})
    text = render_text(compare(old, new, STACK))
    assert (f"  - aws:ec2/vpc:Vpc egress-vpc [protected: pulumi up refuses until `protect` is lifted]"
            " [retainOnDelete: the old one stays in the account]") in text


def test_a_moved_resource_with_an_alias_is_not_deleted():
    graph = planned(STACK)
    node_group = graph.get(NODE_GROUP, "payments")
    moved_urn = node_group.urn.replace("egress:tenancy:DedicatedTenant$", "egress:tenancy:Tenant$")

    def move(resource):
        if resource.urn == node_group.urn:
            return dataclasses.replace(resource, urn=moved_urn, options=Options(aliases=(node_group.urn,)))
        return resource

    result = compare(side_from_graph("old", graph), _side(graph, move), STACK)
    assert (result.created, result.deleted, result.replaced) == ([], [], [])
    unaliased = _side(graph, lambda r: dataclasses.replace(r, urn=moved_urn) if r.urn == node_group.urn else r)
    result = compare(side_from_graph("old", graph), unaliased, STACK)
    assert [c.resource.urn for c in result.deleted] == [node_group.urn]
    assert [c.resource.urn for c in result.created] == [moved_urn]


# --- the allow-list and the gate ----------------------------------------------------------------


def test_allow_list_changes_list_sources_and_destinations_per_tenant():
    changes = {t.tenant: t for t in edited().allow_list}
    assert set(changes) == {"ledger", "payments"}  # reporting's sources and upstreams stay
    ledger = changes["ledger"]
    assert ledger.status == "added"
    assert ledger.sources_added == sorted(planned_sources("ledger")) and ledger.sources_removed == []
    assert ledger.destinations_added == ["10.100.20.0/24 TCP/5432 (ledger-db)"]
    payments = changes["payments"]
    assert (payments.sources_added, payments.sources_removed) == ([], [])
    assert payments.destinations_added == ["10.100.10.0/24 TLS/8443 (core-banking, corebank.corp.example)"]
    assert payments.destinations_removed == []


def planned_sources(tenant: str) -> list[str]:
    (entry,) = [e for e in edited_graph().plan.allow_list if e.tenant == tenant]
    return list(entry.sources)


def test_the_gate_names_each_reason():
    result = edited()
    assert result.exit_code == GATE
    assert "allow-list of tenant ledger added" in result.gate_reasons
    assert "allow-list of tenant payments changed" in result.gate_reasons
    assert "node group reporting replaced" in result.gate_reasons
    # An update of a node group's size does not gate.
    assert not any("node group payments" in reason for reason in result.gate_reasons)


# --- inputs, naming and the command -----------------------------------------------------------------


def test_a_saved_plan_compares_with_a_stack_file(tmp_path):
    saved = tmp_path / "before.json"
    saved.write_text(json.dumps(planned(STACK).to_json()))
    # The stack file's own name says nothing: the saved plan names the stack.
    renamed = tmp_path / "Pulumi.candidate.yaml"
    shutil.copy(offline.stack_path(STACK), renamed)
    assert stack_name(saved, renamed) == STACK
    result = diff_files(saved, renamed)
    assert result.stack == STACK
    assert (result.created, result.updated, result.replaced, result.deleted) == ([], [], [], [])


def test_new_is_planned_with_what_old_persisted(tmp_path):
    """Reordering tenants in the stack file moves nothing: NEW reads back the
    assignment OLD exported, as `pulumi up` reads the deployed stack's."""
    saved = tmp_path / "deployed.json"
    saved.write_text(json.dumps(planned(STACK).to_json()))
    config = stack_config(STACK)
    config["egress:tenants"].reverse()
    reordered = tmp_path / f"Pulumi.{STACK}.yaml"
    reordered.write_text(yaml.safe_dump({"config": config}))
    result = diff_files(saved, reordered)
    assert (result.created, result.replaced, result.deleted, result.allow_list) == ([], [], [], [])
    assert result.exit_code == 0


def test_stack_files_are_named_by_their_file_name_or_stack_option(tmp_path):
    old, new = tmp_path / "old.yaml", tmp_path / "Pulumi.prod.yaml"
    for path in (old, new):
        shutil.copy(offline.stack_path(STACK), path)
    assert stack_name(old, new) == "prod"  # NEW's name: Pulumi.<stack>.yaml
    assert stack_name(old, old, "prod") == "prod"
    with pytest.raises(DiffError, match="pass --stack"):
        stack_name(old, old)


def test_urns_of_a_saved_plan_are_compared_under_the_stack_compared(tmp_path):
    document = planned(STACK).to_json()
    document = json.loads(json.dumps(document).replace(f"urn:pulumi:{STACK}::", "urn:pulumi:old-name::"))
    document["stack"] = "old-name"
    saved = tmp_path / "plan.json"
    saved.write_text(json.dumps(document))
    side = load_side(saved, STACK)
    assert set(side.resources) == {r.urn for r in planned(STACK).resources}
    assert all(r.parent.startswith(f"urn:pulumi:{STACK}::") for r in side.resources.values())


def test_the_command_prints_the_report_and_exits_with_the_gate(tmp_path, capsys):
    old = tmp_path / "before.json"  # a saved plan: `plan --format json` of the stack as deployed
    old.write_text(json.dumps(planned(STACK).to_json()))
    new = tmp_path / f"Pulumi.{STACK}.yaml"
    new.write_text(yaml.safe_dump({"config": _edited_config()}))
    assert main(["diff", str(old), str(new)]) == GATE
    text = capsys.readouterr().out
    assert f"stack {STACK}: {old} -> {new}" in text
    assert f"  ~ {NODE_GROUP} payments: scalingConfig.maxSize" in text
    assert f"  +- {NODE_GROUP} reporting: instanceTypes[0] forces replacement (create first)" in text
    assert "  tenant ledger (added):" in text and "    + destination  10.100.20.0/24 TCP/5432 (ledger-db)" in text
    assert text.rstrip().splitlines()[-1].startswith("gate: exit 3: ")
    assert main(["diff", str(old), str(old), "--format", "json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["gate"] == {"exitCode": 0, "reasons": []} and document["stack"] == STACK


def test_unreadable_inputs_are_an_error_not_a_traceback(tmp_path, capsys):
    broken = tmp_path / "plan.json"
    broken.write_text("{not json")
    assert main(["diff", str(broken), str(offline.stack_path(STACK))]) == 2
    assert "not valid JSON" in capsys.readouterr().err
    assert main(["diff", str(tmp_path / "missing.yaml"), str(offline.stack_path(STACK))]) == 2
    assert "no such file" in capsys.readouterr().err


def test_the_readme_example_is_what_the_command_prints():
    """The README's example: its node group, allow-list and gate lines are
    those of this very change (Kyverno policy details may move on)."""
    readme = (offline.ROOT / "README.md").read_text()
    example = readme.split("## Seeing a change before it is made", 1)[1].split("```text\n", 1)[1].split("```", 1)[0]
    output = render_text(dataclasses.replace(edited(), old="deployed.json", new="Pulumi.subnet-cidr.yaml"))
    stable = [line for line in example.splitlines()
              if line.startswith(("stack ", f"  ~ {NODE_GROUP}", "  +- ", "  tenant ", "    + ", "    - ", "gate:"))]
    assert len(stable) >= 8
    assert [line for line in stable if line not in output.splitlines()] == []


def test_a_type_listed_twice_in_the_rules_is_refused(tmp_path, monkeypatch):
    from patterns import diff
    from patterns.settings import ConfigError

    rules = tmp_path / "replacements.yaml"
    rules.write_text("types:\n  aws:ec2/vpc:Vpc: {replace: [cidrBlock]}\n  aws:ec2/vpc:Vpc: {replace: []}\n")
    monkeypatch.setattr(diff, "RULES_FILE", rules)
    diff.replacement_rules.cache_clear()
    try:
        with pytest.raises(ConfigError, match="given twice"):
            diff.replacement_rules()
    finally:
        diff.replacement_rules.cache_clear()
