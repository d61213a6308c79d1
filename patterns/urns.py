"""URN snapshots: the identity of every resource of every shipped stack, committed
under tests/urns/, so that a change of the resource set is a diff in review.

A URN is what `pulumi up` matches a resource by. When it changes (a renamed
component type, a new parent, a renamed resource) the engine deletes the old
resource and creates a new one, unless the new resource carries an alias to
the old URN. The check below fails on exactly that: a snapshot URN that no
current resource has, nor aliases, directly or through an aliased parent (the
engine derives a child's aliases from its parent's, which is how moving a
component moves its children too).

    python -m patterns urns            # compare every stack with its snapshot
    python -m patterns urns --write    # regenerate the snapshots after a reviewed change
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from .offline import ROOT, Graph, RecordedResource, qualified_type

SNAPSHOT_DIR = ROOT / "tests" / "urns"
WRITE_COMMAND = "python -m patterns urns --write"


def snapshot_path(stack: str) -> Path:
    return SNAPSHOT_DIR / f"{stack}.txt"


def read_snapshot(stack: str) -> list[str]:
    path = snapshot_path(stack)
    return path.read_text().split() if path.exists() else []


def render(graph: Graph) -> str:
    return "".join(f"{urn}\n" for urn in sorted(r.urn for r in graph.resources))


def write_snapshot(stack: str, graph: Graph) -> Path:
    path = snapshot_path(stack)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render(graph))
    return path


def _child_urn(parent_urn: str, resource: RecordedResource) -> str:
    """The URN `resource` would have under `parent_urn`."""
    prefix, project = parent_urn.split("::")[:2]  # urn:pulumi:<stack>, <project>
    return f"{prefix}::{project}::{qualified_type(parent_urn, resource.type)}::{resource.name}"


def alias_urns(resources: Iterable[RecordedResource]) -> dict[str, set[str]]:
    """Every URN each resource answers to besides its own: its own aliases and,
    for each URN its parent answers to, the URN it would have had there."""
    by_urn = {r.urn: r for r in resources}
    known: dict[str, set[str]] = {}

    def of(urn: str) -> set[str]:
        if urn not in known:
            resource = by_urn[urn]
            aliases = set(resource.options.aliases)
            if resource.parent in by_urn:
                aliases |= {_child_urn(p, resource) for p in of(resource.parent)}
            known[urn] = aliases - {urn}
        return known[urn]

    for urn in by_urn:
        of(urn)
    return known


@dataclass(frozen=True)
class UrnReport:
    stack: str
    unaliased: list[str]  # snapshot URNs that `pulumi up` would delete
    aliased: dict[str, str]  # snapshot URN -> the current resource that takes it over
    added: list[str]  # current URNs not in the snapshot

    @property
    def stale(self) -> bool:
        return bool(self.unaliased or self.aliased or self.added)


def compare(stack: str, graph: Graph, snapshot: list[str] | None = None) -> UrnReport:
    snapshot = read_snapshot(stack) if snapshot is None else snapshot
    current = {r.urn for r in graph.resources}
    taken_over = {old: urn for urn, olds in alias_urns(graph.resources).items() for old in olds}
    gone = [urn for urn in snapshot if urn not in current]
    return UrnReport(
        stack=stack,
        unaliased=[urn for urn in gone if urn not in taken_over],
        aliased={urn: taken_over[urn] for urn in gone if urn in taken_over},
        added=sorted(current - set(snapshot)),
    )


def describe(report: UrnReport) -> list[str]:
    lines = []
    for urn in report.unaliased:
        lines.append(f"  - {urn}  (deleted and recreated by `pulumi up`: no resource aliases it)")
    for old, new in report.aliased.items():
        lines.append(f"  ~ {old}  (now {new}, through an alias)")
    for urn in report.added:
        lines.append(f"  + {urn}")
    return lines
