"""The modeled time of a first `pulumi up`: the longest chain of creations
through the dependency graph the offline engine records, each resource taking
the typical time of its type (data/create_times.yaml).

The engine starts a resource once every resource it depends on exists: its
explicit and implicit dependencies, its provider, and a custom parent (whose
URN the SDK awaits). Components take no time of their own; a dependency on one
waits for everything under it. Pulumi runs independent creations in parallel,
so the total is the critical path, not the sum."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from ..offline import Graph, RecordedResource

DATA = Path(__file__).with_name("data")


@cache
def create_times() -> dict[str, Any]:
    return yaml.safe_load((DATA / "create_times.yaml").read_text())


def typical_seconds(resource: RecordedResource) -> int:
    if not resource.custom and not resource.remote:
        return 0  # a local component: only its children take time
    data = create_times()
    entry = data["types"].get(resource.type)
    if entry is None:
        return data["default"].get(resource.type.split(":", 1)[0], {"seconds": 0})["seconds"]
    if resource.inputs.get("skipAwait") is True and "secondsWithSkipAwait" in entry:
        return entry["secondsWithSkipAwait"]
    return entry["seconds"]


@dataclass(frozen=True)
class Step:
    type: str
    name: str
    seconds: int
    done_at: int  # seconds after the start of `pulumi up`

    def __str__(self) -> str:
        return f"{self.type.rsplit(':', 1)[-1]} {self.name} ({self.seconds} s)"


@dataclass(frozen=True)
class DeployTime:
    seconds: int
    critical_path: tuple[Step, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "modeledSeconds": self.seconds,
            "criticalPath": [
                {"type": s.type, "name": s.name, "seconds": s.seconds, "doneAt": s.done_at}
                for s in self.critical_path if s.seconds
            ],
        }


def modeled(graph: Graph) -> DeployTime:
    by_urn = graph.by_urn()
    children: dict[str, list[str]] = {}
    for r in graph.resources:
        children.setdefault(r.parent, []).append(r.urn)

    def waits_for(r: RecordedResource) -> list[str]:
        edges = [d for d in r.dependencies if d in by_urn]
        if r.provider in by_urn:
            edges.append(r.provider)
        parent = by_urn.get(r.parent)
        if parent is not None and (parent.custom or parent.remote):
            edges.append(parent.urn)
        return edges

    done: dict[str, tuple[int, str | None]] = {}  # urn -> (done at, the predecessor on its critical path)

    def finish(urn: str) -> int:
        # Iterative post-order: dependency chains can be longer than Python's recursion limit.
        stack = [urn]
        while stack:
            current = stack[-1]
            if current in done:
                stack.pop()
                continue
            r = by_urn[current]
            local_component = not r.custom and not r.remote
            before = children.get(current, []) if local_component else waits_for(r)
            pending = [u for u in before if u not in done]
            if pending:
                stack.extend(pending)
                continue
            # Ties go to the greatest URN, so the path does not depend on the
            # order in which the program happened to register resources.
            latest = max(before, key=lambda u: (done[u][0], u), default=None)
            start = done[latest][0] if latest else 0
            done[current] = (start + typical_seconds(r), latest)
            stack.pop()
        return done[urn][0]

    last = max((r.urn for r in graph.resources), key=lambda u: (finish(u), u), default=None)
    path = []
    while last is not None:
        r = by_urn[last]
        path.append(Step(r.type, r.name, typical_seconds(r), done[last][0]))
        last = done[last][1]
    path.reverse()
    return DeployTime(path[-1].done_at if path else 0, tuple(path))
