"""The committed URN snapshots (tests/urns/) guard every resource's identity:
a URN that disappears without an alias would be deleted and recreated by
`pulumi up`; any other change of the resource set must show up in review."""

from __future__ import annotations

import dataclasses

import pytest

from conftest import planned
from patterns import offline, urns
from patterns.offline import Graph, Options

STACKS = offline.shipped_stacks()


@pytest.mark.parametrize("stack", STACKS)
def test_no_snapshot_urn_disappears_without_an_alias(stack):
    report = urns.compare(stack, planned(stack))
    assert not report.unaliased, (
        f"`pulumi up -s {stack}` would delete and recreate these resources (their URN changed and no resource "
        f"carries an alias to it). Add `aliases=[pulumi.Alias(...)]` to the resource (or component) that moved, "
        f"or, if the removal is intended, run `{urns.WRITE_COMMAND}`:\n" + "\n".join(report.unaliased)
    )


@pytest.mark.parametrize("stack", STACKS)
def test_snapshot_is_current(stack):
    report = urns.compare(stack, planned(stack))
    assert not report.stale, (
        f"the resource set of stack {stack} changed; review it, then run `{urns.WRITE_COMMAND}` and commit "
        f"tests/urns/:\n" + "\n".join(urns.describe(report))
    )


def test_snapshots_are_sorted_and_cover_every_shipped_stack():
    assert sorted(p.stem for p in urns.SNAPSHOT_DIR.glob("*.txt")) == STACKS
    for stack in STACKS:
        lines = urns.snapshot_path(stack).read_text().splitlines()
        assert lines == sorted(set(lines)), stack  # one URN a line, sorted: diffs stay small


# --- the guard catches a moved resource ---------------------------------------


def _moved(graph: Graph, change) -> Graph:
    """A copy of the graph with `change(resource)` applied, each URN rebuilt
    the engine's way from the (possibly changed) type, name and parent chain."""
    resources = {r.urn: r for r in graph.resources}
    new_urns: dict[str, str] = {}

    def urn_of(old: str) -> str:
        if old not in new_urns:
            resource = change(resources[old])
            parent = resource.parent
            parent = urn_of(parent) if parent in resources else parent
            new_urns[old] = urns._child_urn(parent, resource)
        return new_urns[old]

    moved = [
        dataclasses.replace(change(r), urn=urn_of(r.urn), parent=urn_of(r.parent) if r.parent in resources else r.parent)
        for r in graph.resources
    ]
    return dataclasses.replace(graph, resources=moved)


def _retyped(old: str, new: str, aliases: tuple[str, ...] = ()):
    def change(resource):
        if resource.type != old:
            return resource
        return dataclasses.replace(resource, type=new, options=Options(aliases=aliases))

    return change


def test_the_rebuilt_urns_are_the_engine_urns():
    graph = planned("subnet-cidr")
    assert {r.urn for r in _moved(graph, lambda r: r).resources} == {r.urn for r in graph.resources}


def test_renaming_a_component_type_fails_the_guard():
    graph = planned("subnet-cidr")
    renamed = _moved(graph, _retyped("egress:tenancy:TenantNamespaces", "egress:tenancy:Namespaces"))
    report = urns.compare("subnet-cidr", renamed)
    # The component and everything under it: every tenant namespace and its policies.
    gone = [u for u in report.unaliased if "kubernetes:core/v1:Namespace::" in u]
    assert len(gone) == 2 and report.stale
    assert all("egress:tenancy:TenantNamespaces" in u for u in report.unaliased)


def test_an_alias_on_the_renamed_component_covers_its_children():
    graph = planned("subnet-cidr")
    (old,) = [r.urn for r in graph.by_type("egress:tenancy:TenantNamespaces")]
    renamed = _moved(graph, _retyped("egress:tenancy:TenantNamespaces", "egress:tenancy:Namespaces", (old,)))
    report = urns.compare("subnet-cidr", renamed)
    assert report.unaliased == []
    assert len(report.aliased) == sum("egress:tenancy:TenantNamespaces" in u for u in urns.read_snapshot("subnet-cidr"))
    assert report.stale  # still a visible diff: the snapshot must be regenerated


def test_reparenting_a_node_group_fails_the_guard():
    graph = planned("subnet-cidr")
    node_group = graph.get("aws:eks/nodeGroup:NodeGroup", "payments")
    (pattern,) = graph.by_type("egress:patterns:SubnetCidr")

    def reparent(resource):
        return dataclasses.replace(resource, parent=pattern.urn) if resource.urn == node_group.urn else resource

    report = urns.compare("subnet-cidr", _moved(graph, reparent))
    assert report.unaliased == [node_group.urn]

    def reparent_with_alias(resource):
        if resource.urn != node_group.urn:
            return resource
        return dataclasses.replace(resource, parent=pattern.urn, options=Options(aliases=(node_group.urn,)))

    assert urns.compare("subnet-cidr", _moved(graph, reparent_with_alias)).unaliased == []


def test_the_engine_records_aliases_as_the_engine_resolves_them(monkeypatch):
    """A real alias through the SDK: the component once had another type and
    parent; the recorded alias is the URN it had then."""
    import pulumi

    from patterns import program

    tenant_namespaces = program.TenantNamespaces

    def aliased(name, plan, opts=None):
        alias = pulumi.Alias(type_="egress:tenancy:OldNamespaces")
        return tenant_namespaces(name, plan, opts=pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(aliases=[alias])))

    monkeypatch.setattr(program, "TenantNamespaces", aliased)
    graph = offline.run_stack("subnet-cidr")
    (component,) = graph.by_type("egress:tenancy:TenantNamespaces")
    assert component.options.aliases == ("urn:pulumi:subnet-cidr::egress::egress:tenancy:OldNamespaces::egress",)
    snapshot = [u.replace("egress:tenancy:TenantNamespaces", "egress:tenancy:OldNamespaces") for u in urns.read_snapshot("subnet-cidr")]
    report = urns.compare("subnet-cidr", graph, snapshot)
    assert report.unaliased == [] and report.aliased
