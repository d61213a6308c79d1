"""`python -m patterns plan --format mermaid`: the stack as a Mermaid flowchart
(GitHub renders ```mermaid blocks): the VPC, its AZs with their subnets by
role and NAT gateways, the node groups with their taints, the egress gateways,
the transit gateway, the on-prem upstreams, and each tenant's path to them.
Drawn from the recorded resource graph, so it shows what the program creates."""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..offline import Graph, RecordedResource
from ..tenancy import GATEWAY_KEY, TENANT_KEY

SUBNET = "aws:ec2/subnet:Subnet"
NAT_GATEWAY = "aws:ec2/natGateway:NatGateway"
NODE_GROUP = "aws:eks/nodeGroup:NodeGroup"
ENI = "aws:ec2/networkInterface:NetworkInterface"
TGW_ATTACHMENT = "aws:ec2transitgateway/vpcAttachment:VpcAttachment"
TAINT_EFFECTS = {"NO_SCHEDULE": "NoSchedule", "NO_EXECUTE": "NoExecute", "PREFER_NO_SCHEDULE": "PreferNoSchedule"}


def node_id(*parts: str) -> str:
    """A Mermaid node id: letters, digits and underscores only."""
    return re.sub(r"[^A-Za-z0-9]+", "_", "_".join(parts)).strip("_")


def label(*lines: str) -> str:
    """A quoted label; Mermaid has no escape for a double quote, so none may occur."""
    return '"' + "<br/>".join(line.replace('"', "'") for line in lines) + '"'


@dataclass(frozen=True)
class _Group:
    resource: RecordedResource
    role: str  # system, tenant:<name>, gateway

    @property
    def id(self) -> str:
        return node_id("ng", self.resource.name)


def render(graph: Graph) -> str:
    plan = graph.plan
    settings = plan.settings
    addresses = plan.addresses
    roles = {str(s.cidr): "cluster" for s in addresses.cluster_subnets}
    roles |= {str(s.cidr): "public" for s in addresses.public_subnets}
    roles |= {str(s.cidr): "gateway" for s in addresses.egress_subnets}
    for tenant in addresses.tenants.values():
        roles |= {str(s.cidr): f"tenant {tenant.name}" for s in tenant.subnets}

    subnets_by_id = {r.id: r for r in graph.by_type(SUBNET)}
    out = ["flowchart LR"]
    # --- the VPC: AZs, subnets by role, NAT gateways ---------------------------------
    out.append(f"  subgraph vpc[{label(f'VPC {settings.vpc_cidr} ({settings.region})')}]")
    nats_by_az: dict[str, list[RecordedResource]] = {}
    for nat in graph.by_type(NAT_GATEWAY):
        nats_by_az.setdefault(subnets_by_id[nat.inputs["subnetId"]].inputs["availabilityZone"], []).append(nat)
    enis_by_az: dict[str, list[RecordedResource]] = {}
    for eni in sorted(graph.by_type(ENI), key=lambda e: e.name):
        enis_by_az.setdefault(subnets_by_id[eni.inputs["subnetId"]].inputs["availabilityZone"], []).append(eni)
    for az in settings.availability_zones:
        out.append(f"    subgraph {node_id('az', az)}[{label(az)}]")
        in_az = sorted((s for s in subnets_by_id.values() if s.inputs["availabilityZone"] == az),
                       key=lambda s: _address(s.inputs["cidrBlock"]))
        rows = [f"{roles.get(s.inputs['cidrBlock'], 'other')} {s.inputs['cidrBlock']}" for s in in_az]
        out.append(f"      {node_id('subnets', az)}[{label('subnets', *rows)}]")
        for nat in sorted(nats_by_az.get(az, []), key=lambda n: n.name):
            kind = nat.inputs.get("connectivityType", "public")
            what = ("NAT gateway, internet" if kind == "public"
                    else f"private NAT, profile {nat.inputs['tags'].get('egress/profile', '?')}")
            ips = [nat.inputs.get("privateIp"), *(nat.inputs.get("secondaryPrivateIpAddresses") or [])]
            out.append(f"      {node_id('nat', nat.name)}[/{label(what, *[ip for ip in ips if ip])}/]")
        for eni in enis_by_az.get(az, []):
            ips = eni.inputs.get("privateIpLists") or eni.inputs.get("privateIps") or []
            out.append(f"      {node_id('eni', eni.name)}>{label('network interface ' + eni.name, *ips)}]")
        out.append("    end")
    # --- node groups and their taints -------------------------------------------------
    groups = [_classify(r) for r in sorted(graph.by_type(NODE_GROUP), key=lambda r: r.name)]
    for group in groups:
        r = group.resource
        scaling = r.inputs["scalingConfig"]
        placed = sorted({roles.get(subnets_by_id[i].inputs["cidrBlock"], "other")
                         for i in r.inputs["subnetIds"] if i in subnets_by_id})
        taints = [f"taint {t['key']}={t['value']}:{TAINT_EFFECTS.get(t['effect'], t['effect'])}"
                  for t in r.inputs.get("taints", []) if not t["key"].startswith("node.cilium.io/")]
        size = f"{r.inputs['instanceTypes'][0]} x {scaling['minSize']}-{scaling['maxSize']}"
        where = f"in the {', '.join(placed)} subnet{'s' if len(r.inputs['subnetIds']) > 1 else ''}"
        out.append(f"    {group.id}[[{label('node group ' + r.name, size, where, *taints)}]]")
    out.append("  end")
    for group in groups:
        for subnet_id in group.resource.inputs["subnetIds"]:
            for eni in graph.by_type(ENI):
                if eni.inputs["subnetId"] == subnet_id and group.role == "gateway":
                    out.append(f"  {group.id} -.- {node_id('eni', eni.name)}")
    # --- outside the VPC: transit gateway and on-prem ---------------------------------
    attached = bool(graph.by_type(TGW_ATTACHMENT))
    exit_id = "tgw" if attached else "onprem_route"
    exit_label = (f"transit gateway {settings.transit_gateway_id}" if attached
                  else "on-prem route (not created by this stack)")
    out.append(f"  {exit_id}{{{{{label(exit_label)}}}}}")
    out.append(f"  subgraph onprem[{label('on-prem')}]")
    upstreams: dict[tuple[str, str, str | None], list[str]] = {}
    for entry in plan.allow_list:
        for d in entry.destinations:
            upstreams.setdefault((d.name, d.cidr, d.host), []).append(
                f"{entry.tenant} :{','.join(map(str, d.ports))}")
    for name, cidr, host in upstreams:
        out.append(f"    {node_id('up', name, cidr)}[({label(name, *([host] if host else []), cidr)})]")
    out.append("  end")
    # --- each tenant's path -----------------------------------------------------------
    system = [g for g in groups if g.role == "system"]
    gateways = [g for g in groups if g.role == "gateway"]
    for entry, tenant in zip(plan.allow_list, settings.tenants):
        tid = node_id("tenant", entry.tenant)
        shared = [f"shared with {', '.join(entry.shared_with)}"] if entry.shared_with else []
        lines = [f"tenant {entry.tenant}", f"namespace {entry.namespace}", "source:", *entry.sources, *shared]
        out.append(f"  {tid}([{label(*lines)}])")
        runs_on = [g for g in groups if g.role == f"tenant:{entry.tenant}"] or system
        for group in runs_on:
            out.append(f"  {tid} --> {group.id}")
        private = [n for n in graph.by_type(NAT_GATEWAY)
                   if n.inputs.get("connectivityType") == "private"
                   and n.inputs["tags"].get("egress/profile") == tenant.nat_profile]
        hops = [node_id("nat", n.name) for n in sorted(private, key=lambda n: n.name)] or [g.id for g in gateways]
        for group in runs_on:
            for hop in hops:
                out.append(f"  {group.id} --> {hop}")
        for hop in hops or [g.id for g in runs_on]:
            out.append(f"  {hop} --> {exit_id}")
    for (name, cidr, _host), tenants in upstreams.items():
        out.append(f"  {exit_id} -->|{label(*tenants)}| {node_id('up', name, cidr)}")
    return "\n".join(_dedupe(out)) + "\n"


def _classify(r: RecordedResource) -> _Group:
    labels = r.inputs.get("labels") or {}
    if GATEWAY_KEY in labels:
        return _Group(r, "gateway")
    if TENANT_KEY in labels:
        return _Group(r, f"tenant:{labels[TENANT_KEY]}")
    return _Group(r, "system")


def _address(cidr: str) -> tuple[int, ...]:
    return tuple(int(x) for x in cidr.split("/")[0].split("."))


def _dedupe(lines: list[str]) -> list[str]:
    """Shared hops (a profile's NAT, the gateways) appear once per tenant; keep the first."""
    seen: set[str] = set()
    kept = []
    for line in lines:
        if "-->" in line and line in seen:
            continue
        seen.add(line)
        kept.append(line)
    return kept

