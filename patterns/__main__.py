"""`python -m patterns plan --stack NAME`: what a stack deploys and the source
addresses each tenant leaves from, before anything exists.
`python -m patterns allow-list --stack NAME --format csv|json|md`: the allow-list
as a file for the firewall team.
`python -m patterns diff OLD NEW`: what `pulumi up` would create, update, replace and
delete between two stack files or saved plans, and the allow-list changes; exit 3 gates CI.
`python -m patterns urns [--write]`: compare (or regenerate) the committed URN snapshots.
`python -m patterns compare --stack NAME`: the stack's tenants under each pattern.
`python -m patterns docs [--write]`: check (or regenerate) the docs' parts generated from the shipped stacks.
`python -m patterns bench`: program evaluation cost per resource as tenants grow."""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter

from .settings import ConfigError
from .views.cost import Estimate, estimate
from .views.deploy_time import DeployTime, modeled


def _stack_arguments(command: argparse.ArgumentParser) -> None:
    source = command.add_mutually_exclusive_group(required=True)
    source.add_argument("--stack", help="stack name: reads stacks/Pulumi.<stack>.yaml")
    source.add_argument("--config-file", help="path of any stack file")
    command.add_argument("--previous", metavar="FILE",
                         help="the stack's last deploy: a saved `plan --format json` (or `pulumi stack output "
                              "--json`), whose assignment keeps tenants, AZs and admins where they are")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m patterns")
    commands = parser.add_subparsers(dest="command", required=True)
    plan = commands.add_parser("plan", help="plan a stack offline (no cloud, no Pulumi CLI)")
    _stack_arguments(plan)
    plan.add_argument("--format", choices=("text", "json", "mermaid"), default="text")
    allow_list = commands.add_parser("allow-list", help="the stack's egress allow-list for the firewall team")
    _stack_arguments(allow_list)
    allow_list.add_argument("--format", choices=("csv", "json", "md"), default="csv")
    diff = commands.add_parser("diff", help="what changes between two stack files or saved plans (exit 3: gate)")
    diff.add_argument("old", help="stack file or saved `plan --format json` before the change")
    diff.add_argument("new", help="stack file or saved `plan --format json` after the change")
    diff.add_argument("--stack", help="the stack's name (default: a saved plan's stack, else Pulumi.<stack>.yaml)")
    diff.add_argument("--format", choices=("text", "json"), default="text")
    urns = commands.add_parser("urns", help="compare every shipped stack's URNs with tests/urns/ (or --write them)")
    urns.add_argument("--write", action="store_true", help="regenerate the snapshots after a reviewed change")
    urns.add_argument("--stack", action="append", help="only this stack (repeatable); default: every shipped stack")
    compare = commands.add_parser("compare", help="the stack's tenants planned under each of the four patterns")
    _stack_arguments(compare)
    compare.add_argument("--format", choices=("text", "json"), default="text")
    compare.add_argument("--tenant", help="this tenant alone under each pattern, the others as they are")
    docs = commands.add_parser("docs", help="check (or --write) the docs' parts generated from the shipped stacks")
    docs.add_argument("--write", action="store_true", help="regenerate them after a reviewed change")
    bench = commands.add_parser("bench", help="time synthetic stacks of growing tenant counts")
    bench.add_argument("--tenants", type=int, nargs="+", default=[10, 50, 100])
    bench.add_argument("--pattern", default="subnet-cidr")
    args = parser.parse_args(argv)

    if args.command == "bench":
        from .bench import run_benchmark

        return run_benchmark(args.tenants, args.pattern)

    if args.command == "allow-list":
        from .offline import plan_stack
        from .views.allow_list import FORMATS

        try:
            plan = plan_stack(stack=args.stack, config_file=args.config_file, previous=args.previous)
        except ConfigError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        sys.stdout.write(FORMATS[args.format](plan))
        return 0

    if args.command == "urns":
        return urns_command(args.stack, write=args.write)

    if args.command == "docs":
        from .offline import run_stack
        from .views.docs import shipped_graphs, stale

        found = stale(shipped_graphs(run_stack), write=args.write)
        for where in found:
            print(f"{'rewrote' if args.write else 'stale'}: {where}", file=sys.stderr)
        return 1 if found and not args.write else 0

    if args.command == "compare":
        from .offline import stack_file
        from .views import compare as views

        try:
            name, stack_config = stack_file(args.stack, args.config_file)
        except ConfigError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        if args.tenant:
            try:
                tenant_rows = views.compare_tenant(name, stack_config, args.tenant)
            except ValueError as error:
                print(f"--tenant: {error}", file=sys.stderr)
                return 2
            if args.format == "json":
                json.dump(views.tenant_to_json(args.tenant, tenant_rows), sys.stdout, indent=2)
                print()
            else:
                print(views.tenant_to_text(name, args.tenant, tenant_rows))
            return 0
        rows = views.compare(name, stack_config)
        if args.format == "json":
            json.dump(views.to_json(rows), sys.stdout, indent=2)
            print()
        else:
            print(views.to_text(name, rows))
        return 0

    if args.command == "diff":
        from .diff import DiffError, diff_files
        from .diff import render_text as render_diff

        try:
            result = diff_files(args.old, args.new, args.stack)
        except (ConfigError, DiffError) as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        if args.format == "json":
            json.dump(result.to_json(), sys.stdout, indent=2)
            print()
        else:
            print(render_diff(result))
        return result.exit_code

    from .offline import run_stack

    try:
        graph = run_stack(stack=args.stack, config_file=args.config_file, previous=args.previous)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.format == "mermaid":
        from .views.mermaid import render

        sys.stdout.write(render(graph))
        return 0
    if args.format == "json":
        document = {**graph.to_json(), "estimate": estimate(graph).to_json(), "deployTime": modeled(graph).to_json()}
        json.dump(document, sys.stdout, indent=2)
        print()
        return 0
    print(render_text(graph))
    return 0


def urns_command(stacks: list[str] | None, *, write: bool) -> int:
    from . import urns
    from .offline import run_stack, shipped_stacks

    stale = False
    for stack in stacks or shipped_stacks():
        graph = run_stack(stack)
        report = urns.compare(stack, graph)
        if write:
            path = urns.write_snapshot(stack, graph)
            print(f"{stack}: wrote {path.relative_to(urns.ROOT)} ({len(graph.resources)} URNs)")
        else:
            print(f"{stack}: {'differs from' if report.stale else 'matches'} its snapshot")
        print("\n".join(urns.describe(report)) or "", end="\n" if report.stale else "")
        stale = stale or report.stale
    if stale and not write:
        print(f"\nreview the changes above, then run `{urns.WRITE_COMMAND}` and commit tests/urns/")
        return 1
    return 0


def render_text(graph) -> str:
    plan = graph.plan
    headline = f"pattern {plan.settings.pattern} ({plan.spec.summary})"
    if plan.mixed:
        headline = (f"patterns {', '.join(s.name for s in plan.specs)} (per tenant; default egress:pattern "
                    f"{plan.settings.pattern})")
    lines = [
        f"stack {plan.stack}: {headline}",
        f"region {plan.settings.region}, AZs {', '.join(plan.settings.availability_zones)}, "
        f"VPC {plan.settings.vpc_cidr}",
        "",
        f"{len(graph.resources)} resources:",
    ]
    for type_, count in sorted(Counter(r.type for r in graph.resources).items()):
        lines.append(f"  {count:4d}  {type_}")
    lines += ["", "egress allow-list (give this to the firewall team):"]
    for entry in plan.allow_list:
        lines.append(f"  tenant {entry.tenant} (namespace {entry.namespace}{plan.path_note(entry.tenant)})")
        lines.append(f"    sources:      {', '.join(entry.sources)}")
        if entry.shared_with:
            lines.append(f"    shared with:  {', '.join(entry.shared_with)} (tell them apart by destination only)")
        for d in entry.destinations:
            host = f" {d.host}" if d.host else ""
            lines.append(f"    destination:  {d.name}{host} {d.cidr} {d.protocol}/{','.join(map(str, d.ports))}")
    lines += ["", *estimate_text(estimate(graph)), "", *deploy_time_text(modeled(graph))]
    if plan.warnings:
        lines += ["", "warnings:"] + [f"  - {w}" for w in plan.warnings]
    return "\n".join(lines)


def estimate_text(cost: Estimate) -> list[str]:
    lines = [
        f"monthly cost {cost.label.upper()} (on-demand list prices, {cost.region}): ${cost.monthly_usd:,.2f} with "
        f"node groups at their minimum, ${cost.monthly_usd_at_max_nodes:,.2f} at their maximum",
    ]
    for line in cost.lines:
        price = "no price" if line.unit_usd is None else f"${line.monthly_usd:,.2f}"
        mark = "" if line.confirmed else "  (unconfirmed price)"
        lines.append(f"  {price:>11}  {line.item}: {line.quantity:,.0f} {line.unit}{mark}")
    for rate in cost.rates:
        price = "no price" if rate.usd_per_gb is None else f"${rate.usd_per_gb}/GB"
        lines.append(f"  plus {price} {rate.item}" + ("" if rate.confirmed else " (unconfirmed price)"))
    if cost.unknown:
        lines.append(f"  not priced (no data in patterns/views/data/prices.yaml): {'; '.join(cost.unknown)}")
    for name, figures in cost.capacity.items():
        if name == "privateNat":
            lines.append(f"  capacity: {figures['connectionsPerNatIpPerDestination']:,} connections per NAT IP per "
                         f"destination; {figures['gatewayBandwidthGbps']} Gbps per NAT gateway")
        if name == "gatewayNodes":
            for instance_type, limits in figures["instanceTypes"].items():
                ips = limits["ipv4PerEni"]
                lines.append(f"  capacity: gateway nodes {instance_type}: {limits['bandwidth']}"
                             + (f", {ips} IPv4 addresses per ENI" if ips else ""))
    return lines


def deploy_time_text(deploy: DeployTime) -> list[str]:
    steps = " -> ".join(str(s) for s in deploy.critical_path if s.seconds)
    return [
        f"modeled first `pulumi up`: {deploy.seconds // 60} min {deploy.seconds % 60:02d} s (critical path over "
        "typical create times, patterns/views/data/create_times.yaml)",
        f"  {steps}",
    ]


if __name__ == "__main__":
    sys.exit(main())
