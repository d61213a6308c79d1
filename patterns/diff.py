"""`python -m patterns diff OLD NEW`: what `pulumi up` would do to a stack when
its stack file (or the program) changes from OLD to NEW, before anything runs.

Each side is a stack file (planned offline) or a saved `plan --format json`;
NEW is planned with OLD's stack outputs read back, as `pulumi up` reads the
deployed stack's (so tenant slots and AZ positions persist as they would).
Resources are matched by URN (aliases included, as the engine matches them) and
sorted into created, updated (with the changed input paths), replaced and
deleted. "Replaced" follows the providers' replace-on-change properties
(data/replacements.yaml), the resources' own replaceOnChanges, a replaced
provider, and inputs taken from a resource that is itself replaced or
recreated (the engine sees them unknown, so a replace-on-change input among
them replaces the dependent too). Inputs under ignoreChanges are not diffed.

The report ends with the allow-list changes the firewall team must make, and
the exit code gates CI: 0, or 3 (GATE) when the allow-list changes or a
resource the firewall or the tenants' workloads stand on would be replaced or
deleted (see GATED_TYPES).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from .offline import Graph, Options, RecordedResource, _load_stack_yaml, read_stack_file, run
from .urns import alias_urns

GATE = 3
RULES_FILE = Path(__file__).parent / "data" / "replacements.yaml"
# Replacing (or deleting) one of these moves what the firewall trusts or takes
# running workloads down: a node group drains its nodes, the cluster takes every
# workload, a subnet or the VPC takes everything in it; NAT gateways, egress
# ENIs and Elastic IPs carry the source addresses on-prem allow-lists.
GATED_TYPES = {
    "aws:eks/nodeGroup:NodeGroup": "node group",
    "eks:index:Cluster": "EKS cluster",
    "aws:eks/cluster:Cluster": "EKS cluster",
    "aws:ec2/subnet:Subnet": "subnet",
    "aws:ec2/vpc:Vpc": "VPC",
    "aws:ec2/natGateway:NatGateway": "NAT gateway",
    "aws:ec2/networkInterface:NetworkInterface": "egress network interface",
    "aws:ec2/eip:Eip": "Elastic IP",
}
MAX_PATHS_SHOWN = 8  # per resource in the text report; --format json lists every path
_STACK_FILE = re.compile(r"^Pulumi\.(?P<stack>[^/]+)\.ya?ml$")
_URN_STACK = re.compile(r"^urn:pulumi:[^:]*::")

Path_ = tuple[str | int, ...]


class DiffError(Exception):
    """An input the diff cannot read; the message says which and why."""


# --- reading the two sides ---------------------------------------------------------


@dataclass(frozen=True)
class Side:
    label: str
    stack: str
    resources: dict[str, RecordedResource]  # by URN, normalised to the compared stack's name
    allow_list: list[dict[str, Any]]
    outputs: dict[str, Any] = field(default_factory=dict)  # the stack outputs it exports


def _saved_plan(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        raise DiffError(f"{path}: no such file")
    text = path.read_text()
    if not text.lstrip().startswith("{"):
        return None
    try:
        document = json.loads(text)
    except json.JSONDecodeError as error:
        raise DiffError(f"{path}: not valid JSON ({error.msg}); give a stack file or `plan --format json` output") from None
    if not {"stack", "resources", "allowList"} <= set(document):
        raise DiffError(f"{path}: not a saved plan (`python -m patterns plan --format json` output)")
    return document


def stack_name(old: Path, new: Path, explicit: str | None = None) -> str:
    """The stack compared: --stack, else a saved plan's own stack, else the
    name in a stack file's name (Pulumi.<stack>.yaml), NEW's before OLD's."""
    if explicit:
        return explicit
    for path in (new, old):
        if (plan := _saved_plan(path)) is not None:
            return plan["stack"]
    for path in (new, old):
        if match := _STACK_FILE.match(path.name):
            return match["stack"]
    raise DiffError(
        f"cannot tell which stack {old.name} and {new.name} belong to: pass --stack NAME "
        "(stack files are named Pulumi.<stack>.yaml; saved plans name their stack)"
    )


def _normalised(urn: str, stack: str) -> str:
    return _URN_STACK.sub(f"urn:pulumi:{stack}::", urn, count=1)


def _resource(data: Mapping[str, Any], stack: str) -> RecordedResource:
    options = data.get("options") or {}
    norm = lambda urn: _normalised(urn, stack) if urn else urn  # noqa: E731
    return RecordedResource(
        urn=norm(data["urn"]),
        id="",
        type=data["type"],
        name=data["name"],
        parent=norm(data.get("parent", "")),
        custom=data.get("custom", True),
        remote=False,
        provider=norm(data.get("provider", "")),
        inputs=data.get("inputs") or {},
        dependencies=tuple(norm(d) for d in data.get("dependencies", ())),
        property_dependencies={
            key: tuple(norm(d) for d in deps) for key, deps in (data.get("propertyDependencies") or {}).items()
        },
        options=Options(
            aliases=tuple(norm(a) for a in options.get("aliases", ())),
            protect=options.get("protect", False),
            ignore_changes=tuple(options.get("ignoreChanges", ())),
            replace_on_changes=tuple(options.get("replaceOnChanges", ())),
            retain_on_delete=options.get("retainOnDelete", False),
            delete_before_replace=options.get("deleteBeforeReplace", False),
            deleted_with=options.get("deletedWith", ""),
        ),
    )


def load_side(path: Path, stack: str, previous_outputs: Mapping[str, Any] | None = None) -> Side:
    """A saved plan as it is, or a stack file planned offline as `stack`,
    reading back `previous_outputs` (what the stack last exported: its
    persisted assignment) as `pulumi up` does."""
    document = _saved_plan(path)
    if document is None:
        document = run(stack, read_stack_file(path), previous_outputs).to_json()
    resources = [_resource(r, stack) for r in document["resources"]]
    return Side(str(path), document["stack"], {r.urn: r for r in resources}, document["allowList"],
                document.get("outputs") or {})


def side_from_graph(label: str, graph: Graph) -> Side:
    return Side(label, graph.plan.stack, {r.urn: r for r in graph.resources}, graph.plan.allow_list_json(),
                graph.outputs)


# --- input paths -------------------------------------------------------------------


def format_path(path: Path_) -> str:
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        elif re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", part):
            text += f".{part}" if text else part
        else:
            text += f"[{json.dumps(part)}]"
    return text


def parse_path(text: str) -> Path_:
    """`a.b[0]["c/d"]` -> ("a", "b", 0, "c/d"); the form of rules and ignoreChanges."""
    parts: list[str | int] = []
    for name, index, quoted in re.findall(r'([A-Za-z_][A-Za-z0-9_]*)|\[(\d+)\]|\["((?:[^"\\]|\\.)*)"\]', text):
        parts.append(name or (int(index) if index else json.loads(f'"{quoted}"')))
    return tuple(parts)


def changed_paths(old: Any, new: Any, path: Path_ = ()) -> list[Path_]:
    """The leaf paths where two input values differ (a whole added or removed
    key or list item counts as one path)."""
    if isinstance(old, dict) and isinstance(new, dict):
        return [p for key in sorted(set(old) | set(new), key=str)
                for p in (changed_paths(old[key], new[key], (*path, key)) if key in old and key in new
                          else [(*path, key)])]
    if isinstance(old, list) and isinstance(new, list):
        common = [p for i, (a, b) in enumerate(zip(old, new)) for p in changed_paths(a, b, (*path, i))]
        return common + [(*path, i) for i in range(min(len(old), len(new)), max(len(old), len(new)))]
    return [] if old == new else [path]


def _overlaps(a: Path_, b: Path_) -> bool:
    """One path is at or below the other."""
    n = min(len(a), len(b))
    return a[:n] == b[:n]


def _under(path: Path_, prefixes: Iterable[Path_]) -> bool:
    return any(path[: len(p)] == p for p in prefixes)


# --- replace-on-change rules -------------------------------------------------------------


@cache
def replacement_rules() -> dict[str, Any]:
    # Strict YAML: a type listed twice would otherwise keep only its last entry.
    return _load_stack_yaml(RULES_FILE)


def replace_paths(type_: str) -> tuple[Path_, ...] | None:
    """The type's replace-on-change input paths; None for a type without rules."""
    types = replacement_rules()["types"]
    spec = types.get(type_) or types.get(f"{type_.split(':', 1)[0]}:*")
    return None if spec is None else tuple(parse_path(p) for p in spec["replace"])


# --- the diff ---------------------------------------------------------------------------


@dataclass
class Change:
    resource: RecordedResource
    paths: list[str] = field(default_factory=list)  # changed input paths
    because: list[str] = field(default_factory=list)  # why it is replaced

    def to_json(self) -> dict[str, Any]:
        data = {"urn": self.resource.urn, "type": self.resource.type, "name": self.resource.name}
        if self.paths:
            data["paths"] = self.paths
        if self.because:
            data["replacedBecause"] = self.because
            data["deleteBeforeReplace"] = self.resource.options.delete_before_replace
        return data


@dataclass
class TenantChange:
    tenant: str
    status: str  # "added", "removed" or "changed"
    sources_added: list[str]
    sources_removed: list[str]
    destinations_added: list[str]
    destinations_removed: list[str]

    def to_json(self) -> dict[str, Any]:
        return {
            "tenant": self.tenant,
            "status": self.status,
            "sourcesAdded": self.sources_added,
            "sourcesRemoved": self.sources_removed,
            "destinationsAdded": self.destinations_added,
            "destinationsRemoved": self.destinations_removed,
        }


@dataclass
class Diff:
    stack: str
    old: str
    new: str
    created: list[Change]
    updated: list[Change]
    replaced: list[Change]
    deleted: list[Change]
    unchanged: int
    allow_list: list[TenantChange]
    untyped: list[str]  # replaced-or-not unknown: types without rules

    @property
    def gate_reasons(self) -> list[str]:
        reasons = [f"allow-list of tenant {t.tenant} {t.status}" for t in self.allow_list]
        for verb, changes in (("replaced", self.replaced), ("deleted", self.deleted)):
            reasons += [f"{GATED_TYPES[c.resource.type]} {c.resource.name} {verb}"
                        for c in changes if c.resource.type in GATED_TYPES]
        return reasons

    @property
    def exit_code(self) -> int:
        return GATE if self.gate_reasons else 0

    def to_json(self) -> dict[str, Any]:
        return {
            "stack": self.stack,
            "old": self.old,
            "new": self.new,
            "created": [c.to_json() for c in self.created],
            "updated": [c.to_json() for c in self.updated],
            "replaced": [c.to_json() for c in self.replaced],
            "deleted": [c.to_json() for c in self.deleted],
            "unchanged": self.unchanged,
            "allowListChanges": [t.to_json() for t in self.allow_list],
            "typesWithoutRules": self.untyped,
            "gate": {"exitCode": self.exit_code, "reasons": self.gate_reasons},
        }


def _destinations(entry: Mapping[str, Any]) -> set[str]:
    """One firewall rule line per destination port."""
    return {
        f"{d['cidr']} {d.get('protocol', 'TCP')}/{port} ({d['name']}{', ' + d['host'] if d.get('host') else ''})"
        for d in entry.get("destinations", ())
        for port in d.get("ports", ())
    }


def allow_list_changes(old: list[dict[str, Any]], new: list[dict[str, Any]]) -> list[TenantChange]:
    before, after = {e["tenant"]: e for e in old}, {e["tenant"]: e for e in new}
    changes = []
    for tenant in [*after, *(t for t in before if t not in after)]:
        a, b = before.get(tenant, {}), after.get(tenant, {})
        old_sources, new_sources = set(a.get("sources", ())), set(b.get("sources", ()))
        old_destinations, new_destinations = _destinations(a), _destinations(b)
        if old_sources == new_sources and old_destinations == new_destinations:
            continue
        changes.append(TenantChange(
            tenant=tenant,
            status="added" if not a else "removed" if not b else "changed",
            sources_added=sorted(new_sources - old_sources),
            sources_removed=sorted(old_sources - new_sources),
            destinations_added=sorted(new_destinations - old_destinations),
            destinations_removed=sorted(old_destinations - new_destinations),
        ))
    return changes


def compare(old: Side, new: Side, stack: str) -> Diff:
    # A new resource that aliases an old URN is that resource, moved.
    previous = {urn: urn for urn in new.resources if urn in old.resources}
    for urn, olds in alias_urns(new.resources.values()).items():
        moved_from = [o for o in sorted(olds) if o in old.resources and o not in new.resources]
        if urn not in previous and moved_from:
            previous[urn] = moved_from[0]
    taken = set(previous.values())
    now_known_as = {old_urn: urn for urn, old_urn in previous.items()}
    created = [Change(r) for urn, r in new.resources.items() if urn not in previous]
    deleted = [Change(r) for urn, r in old.resources.items() if urn not in taken]

    changes: dict[str, Change] = {}
    untyped: set[str] = set()
    for urn, old_urn in previous.items():
        before, after = old.resources[old_urn], new.resources[urn]
        ignored = [parse_path(p) for p in after.options.ignore_changes]
        paths = [p for p in changed_paths(before.inputs, after.inputs) if not _under(p, ignored)]
        change = changes[urn] = Change(after, [format_path(p) for p in paths])
        if paths:
            # Custom resources, and components whose inputs reach a resource's
            # replace-on-change property (pulumi-eks's cluster): the rules file.
            rules = replace_paths(after.type)
            if rules is None and after.custom:
                untyped.add(after.type)
            forcing = [*(rules or ()), *map(parse_path, after.options.replace_on_changes)]
            forced = [p for p in paths if any(_overlaps(p, r) for r in forcing)]
            change.because += [f"{format_path(p)} forces replacement" for p in forced]
        if before.provider and now_known_as.get(before.provider, before.provider) != after.provider:
            change.because.append("its provider changed")

    # Inputs taken from a replaced or recreated resource are unknown until it
    # exists: a replace-on-change one among them replaces the dependent too.
    fresh = {c.resource.urn for c in created}
    replaced_urns = {urn for urn, c in changes.items() if c.because}
    cascaded: set[tuple[str, str]] = set()  # (dependent, input) already reported
    grown = True
    while grown:
        grown = False
        for urn, change in changes.items():
            resource = change.resource
            rules = replace_paths(resource.type) or ()
            ignored = [parse_path(p) for p in resource.options.ignore_changes]
            causes = [("provider", resource.provider)] + [
                (key, dep) for key, deps in resource.property_dependencies.items() for dep in sorted(deps)
            ]
            for key, dep in causes:
                if (urn, key) in cascaded or dep not in replaced_urns | fresh or _under((key,), ignored):
                    continue
                cascaded.add((urn, key))
                how = "replaced" if dep in replaced_urns else "recreated"
                if key == "provider":
                    change.because.append(f"its provider {_short(dep)} is {how}")
                    continue
                if format_path((key,)) not in change.paths:
                    change.paths.append(format_path((key,)))
                if any(_overlaps((key,), r) for r in rules):
                    change.because.append(f"{format_path((key,))} comes from {_short(dep)}, which is {how}")
            if change.because and urn not in replaced_urns:
                replaced_urns.add(urn)
                grown = True

    replaced = [c for c in changes.values() if c.because]
    updated = [c for c in changes.values() if not c.because and c.paths]
    return Diff(
        stack=stack,
        old=old.label,
        new=new.label,
        created=created,
        updated=updated,
        replaced=replaced,
        deleted=deleted,
        unchanged=len(changes) - len(replaced) - len(updated),
        allow_list=allow_list_changes(old.allow_list, new.allow_list),
        untyped=sorted(untyped),
    )


def diff_files(old: str | Path, new: str | Path, stack: str | None = None) -> Diff:
    old, new = Path(old), Path(new)
    name = stack_name(old, new, stack)
    before = load_side(old, name)
    # NEW is what `pulumi up` would make of the stack as OLD left it.
    return compare(before, load_side(new, name, before.outputs), name)


# --- text -------------------------------------------------------------------------------


def _short(urn: str) -> str:
    type_chain, name = urn.split("::")[2:4]
    return f"{type_chain.rsplit('$', 1)[-1]} {name}"


def render_text(diff: Diff) -> str:
    lines = [
        f"stack {diff.stack}: {diff.old} -> {diff.new}",
        f"  {len(diff.created)} to create, {len(diff.updated)} to update, {len(diff.replaced)} to replace, "
        f"{len(diff.deleted)} to delete, {diff.unchanged} unchanged",
    ]
    for title, mark, changes in (("create", "+", diff.created), ("update", "~", diff.updated),
                                 ("replace", "+-", diff.replaced), ("delete", "-", diff.deleted)):
        if changes:
            lines += ["", f"{title}:"]
        for change in sorted(changes, key=lambda c: (c.resource.type, c.resource.name)):
            resource = change.resource
            detail = ""
            if change.because:
                order = "delete first" if resource.options.delete_before_replace else "create first"
                detail = f": {'; '.join(change.because)} ({order})"
            elif change.paths:
                shown = change.paths[:MAX_PATHS_SHOWN]
                more = f" (and {len(change.paths) - len(shown)} more)" if len(change.paths) > len(shown) else ""
                detail = f": {', '.join(shown)}{more}"
            if resource.options.protect and (change.because or changes is diff.deleted):
                detail += " [protected: pulumi up refuses until `protect` is lifted]"
            if resource.options.retain_on_delete and (change.because or changes is diff.deleted):
                detail += " [retainOnDelete: the old one stays in the account]"
            lines.append(f"  {mark} {resource.type} {resource.name}{detail}")
    if diff.untyped:
        lines += ["", "no replace-on-change data for (treated as updates): " + ", ".join(diff.untyped)]
    lines += ["", "firewall allow-list changes:"]
    if not diff.allow_list:
        lines.append("  none")
    for tenant in diff.allow_list:
        lines.append(f"  tenant {tenant.tenant} ({tenant.status}):")
        lines += [f"    + source       {s}" for s in tenant.sources_added]
        lines += [f"    - source       {s}" for s in tenant.sources_removed]
        lines += [f"    + destination  {d}" for d in tenant.destinations_added]
        lines += [f"    - destination  {d}" for d in tenant.destinations_removed]
    reasons = diff.gate_reasons
    lines += ["", f"gate: exit {diff.exit_code}" + (": " + "; ".join(reasons) if reasons else " (nothing the firewall "
                                                                                              "trusts or the workloads "
                                                                                              "stand on is replaced)")]
    return "\n".join(lines)
