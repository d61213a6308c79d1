"""The parts of the docs that are generated from the shipped stacks, so they
cannot drift: each pattern's picture and numbers in docs/<pattern>.md, and the
README's expected plan output and modeled deploy times. `python -m patterns
docs` checks them; `--write` regenerates them after a reviewed change."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from ..offline import ROOT, Graph
from ..registry import PATTERNS
from . import compare, mermaid
from .cost import estimate
from .deploy_time import modeled

BEGIN = "<!-- generated: {name} (python -m patterns docs --write) -->"
END = "<!-- end generated: {name} -->"


def block(doc: str, name: str) -> str | None:
    """The text between the markers of block `name`, or None."""
    match = re.search(re.escape(BEGIN.format(name=name)) + r"\n(.*?)" + re.escape(END.format(name=name)),
                      doc, re.DOTALL)
    return match.group(1) if match else None


def with_block(doc: str, name: str, text: str) -> str:
    begin, end = BEGIN.format(name=name), END.format(name=name)
    start = doc.index(begin) + len(begin) + 1
    return doc[:start] + text + doc[doc.index(end, start):]


def diagram(graph: Graph) -> str:
    return f"```mermaid\n{mermaid.render(graph)}```\n"


def numbers(graph: Graph) -> str:
    """The shipped stack's figures that the pattern's advantages and considerations speak of."""
    row = compare.PatternRow(graph.plan.settings.pattern, graph, (), estimate(graph), modeled(graph).seconds)
    data = row.to_json()
    cost = row.estimate
    nodes = ", ".join(f"{role} {v['min']}-{v['max']}" for role, v in data["nodes"]["byRole"].items())
    sources = "; ".join(
        f"{e.tenant}: {len(e.sources)} ({'shared with ' + ', '.join(e.shared_with) if e.shared_with else 'own'})"
        for e in graph.plan.allow_list
    )
    rates = ", ".join(f"{r.item} ${r.usd_per_gb}/GB" for r in cost.rates)
    minutes = _minutes(data["modeledDeploySeconds"])
    return "\n".join([
        f"| `stacks/Pulumi.{graph.plan.stack}.yaml` | {len(graph.plan.settings.tenants)} tenants, "
        f"{len(graph.plan.settings.availability_zones)} AZs, {graph.plan.settings.region} |",
        "| --- | --- |",
        f"| monthly cost ({cost.label}) | ${cost.monthly_usd:,.0f} with node groups at their minimum, "
        f"${cost.monthly_usd_at_max_nodes:,.0f} at their maximum; plus {rates} |",
        f"| nodes (min-max) | {data['nodes']['min']}-{data['nodes']['max']}: {nodes} |",
        f"| NAT gateways | {data['natGateways']['private']} private, {data['natGateways']['public']} public |",
        f"| routable IPs taken from `egress:vpcCidr` | {data['routableIps']:,} |",
        f"| sources per tenant | {sources} |",
        f"| modeled first `pulumi up` | about {minutes} min |",
        f"| losing one AZ | {data['azLossImpact']['az']} |",
        f"| losing one gateway | {data['azLossImpact']['gateway']} |",
        "",
    ])


# Steps shorter than this are left out of the docs' critical paths, and times
# are rounded to the minute: the docs stay true while small objects come and go
# (`plan` prints the exact model).
LONG_STEP_SECONDS = 30


def _minutes(seconds: int) -> int:
    return round(seconds / 60)


def deploy_times(graphs: dict[str, Graph]) -> str:
    lines = ["| Pattern | Modeled first `pulumi up` | Its longest steps, in order |", "| --- | --- | --- |"]
    for name, graph in graphs.items():
        deploy = modeled(graph)
        path = " → ".join(str(s) for s in deploy.critical_path if s.seconds >= LONG_STEP_SECONDS)
        lines.append(f"| `{name}` | about {_minutes(deploy.seconds)} min | {path} |")
    return "\n".join(lines) + "\n"


def plan_excerpt(graph: Graph) -> str:
    """The allow-list part of `plan`'s text output: what the firewall team is handed."""
    from ..__main__ import render_text

    text = render_text(graph)
    start = text.index("egress allow-list")
    end = text.index("\n\n", start)
    return f"```text\n$ venv/bin/python -m patterns plan --stack {graph.plan.stack}\n...\n{text[start:end]}\n...\n```\n"


def generated(graphs: dict[str, Graph]) -> dict[Path, dict[str, Callable[[], str]]]:
    """Every generated block, by file and block name."""
    files: dict[Path, dict[str, Callable[[], str]]] = {
        ROOT / "docs" / f"{name}.md": {
            "diagram": lambda g=graph: diagram(g),
            "numbers": lambda g=graph: numbers(g),
        }
        for name, graph in graphs.items()
    }
    files[ROOT / "README.md"] = {
        "plan-output": lambda: plan_excerpt(graphs["subnet-cidr"]),
        "deploy-times": lambda: deploy_times(graphs),
    }
    return files


def stale(graphs: dict[str, Graph], write: bool = False) -> list[str]:
    """The generated blocks that differ from what the shipped stacks give (rewritten if `write`)."""
    found = []
    for path, blocks in generated(graphs).items():
        doc = path.read_text()
        updated = doc
        for name, make in blocks.items():
            text = make()
            if block(updated, name) != text:
                found.append(f"{path.relative_to(ROOT)}: {name}")
                if write and block(updated, name) is not None:
                    updated = with_block(updated, name, text)
        if write and updated != doc:
            path.write_text(updated)
    return found


def shipped_graphs(run_stack) -> dict[str, Graph]:
    return {name: run_stack(name) for name in PATTERNS}
