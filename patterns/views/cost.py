"""The stack's monthly cost estimate and capacity figures, from the recorded
resource graph (what the program actually creates) and the price data in
data/prices.yaml. Prices missing for the region or an instance type are named,
never guessed."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from ..instance_types import ipv4_per_eni
from ..offline import Graph, RecordedResource
from ..tenancy import GATEWAY_KEY, TENANT_KEY

DATA = Path(__file__).with_name("data")
NODE_GROUP = "aws:eks/nodeGroup:NodeGroup"
NAT_GATEWAY = "aws:ec2/natGateway:NatGateway"


@cache
def price_data() -> dict[str, Any]:
    return yaml.safe_load((DATA / "prices.yaml").read_text())


@dataclass(frozen=True)
class Line:
    item: str
    quantity: float
    unit: str
    unit_usd: float | None  # None: no price for this region or type (named in Estimate.unknown)
    confirmed: bool
    source: str
    per_node: bool = False  # grows with the node groups' size

    @property
    def monthly_usd(self) -> float | None:
        return None if self.unit_usd is None else round(self.quantity * self.unit_usd, 2)

    def to_json(self) -> dict[str, Any]:
        return {
            "item": self.item, "quantity": self.quantity, "unit": self.unit, "unitUsd": self.unit_usd,
            "monthlyUsd": self.monthly_usd, "confirmed": self.confirmed, "source": self.source,
        }


@dataclass(frozen=True)
class Rate:
    """A usage-priced item: what each GB through it costs."""

    item: str
    usd_per_gb: float | None
    confirmed: bool
    source: str

    def to_json(self) -> dict[str, Any]:
        return {"item": self.item, "usdPerGb": self.usd_per_gb, "confirmed": self.confirmed, "source": self.source}


@dataclass(frozen=True)
class NodeGroupSize:
    role: str  # system, tenant, gateway
    name: str
    instance_type: str
    min: int
    max: int
    volume_gb: int


@dataclass(frozen=True)
class Estimate:
    region: str
    lines: tuple[Line, ...]  # at the node groups' minimum size
    monthly_usd_at_max_nodes: float
    rates: tuple[Rate, ...]
    unknown: tuple[str, ...]  # what has no price here, by name
    capacity: dict[str, Any]
    label: str = "estimate"

    @property
    def monthly_usd(self) -> float:
        return round(sum(line.monthly_usd or 0 for line in self.lines), 2)

    @property
    def unconfirmed(self) -> list[str]:
        return [line.item for line in self.lines if not line.confirmed] + [
            rate.item for rate in self.rates if not rate.confirmed
        ]

    def to_json(self) -> dict[str, Any]:
        data = price_data()
        return {
            "label": self.label,
            "currency": data["currency"],
            "region": self.region,
            "hoursPerMonth": data["hoursPerMonth"],
            "monthlyUsd": self.monthly_usd,
            "monthlyUsdAtMaxNodes": self.monthly_usd_at_max_nodes,
            "lines": [line.to_json() for line in self.lines],
            "perGb": [rate.to_json() for rate in self.rates],
            "unknownPrices": list(self.unknown),
            "unconfirmedPrices": self.unconfirmed,
            "capacity": self.capacity,
        }


def node_groups(graph: Graph) -> list[NodeGroupSize]:
    groups = []
    for r in graph.by_type(NODE_GROUP):
        labels = r.inputs.get("labels") or {}
        role = "gateway" if GATEWAY_KEY in labels else "tenant" if TENANT_KEY in labels else "system"
        scaling = r.inputs["scalingConfig"]
        groups.append(NodeGroupSize(role, r.name, r.inputs["instanceTypes"][0], scaling["minSize"],
                                    scaling["maxSize"], _root_volume_gb(graph, r)))
    return groups


def _root_volume_gb(graph: Graph, group: RecordedResource) -> int:
    template = graph.by_id(group.inputs["launchTemplate"]["id"])
    return sum(m["ebs"]["volumeSize"] for m in template.inputs.get("blockDeviceMappings", []))


def nat_gateways(graph: Graph) -> dict[str, int]:
    counts = {"public": 0, "private": 0}
    for nat in graph.by_type(NAT_GATEWAY):
        counts[nat.inputs.get("connectivityType", "public")] += 1
    return counts


def estimate(graph: Graph) -> Estimate:
    data = price_data()
    region = graph.plan.settings.region
    hours = data["hoursPerMonth"]
    unknown: list[str] = []

    def price(name: str) -> tuple[float | None, bool, str]:
        entry = data["prices"][name]
        source = f"{data['sources'][entry['source']]}, checked {entry['checked']}"
        regional = entry["regions"].get(region)
        if regional is None:
            unknown.append(f"{name} in region {region}")
            return None, False, source
        return regional["usd"], regional["confirmed"], source

    def instance_price(instance_type: str) -> tuple[float | None, bool, str]:
        table = data["instances"]
        source = f"{data['sources'][table['source']]}, checked {table['checked']}"
        regional = table["types"].get(instance_type, {}).get(region)
        if regional is None:
            unknown.append(f"instance type {instance_type} in region {region}")
            return None, False, source
        return regional["usd"], regional["confirmed"], source

    lines: list[Line] = []

    def add(item: str, quantity: float, unit: str, priced: tuple[float | None, bool, str],
            per_node: bool = False) -> None:
        if quantity:
            lines.append(Line(item, quantity, unit, *priced, per_node=per_node))

    add("EKS control plane", len(graph.by_type("eks:index:Cluster")) * hours, "cluster-hours", price("eksCluster"))
    groups = node_groups(graph)
    by_role_type: dict[tuple[str, str], list[NodeGroupSize]] = defaultdict(list)
    for group in groups:
        by_role_type[(group.role, group.instance_type)].append(group)
    at_max = 0.0
    for (role, instance_type), members in sorted(by_role_type.items()):
        nodes = sum(g.min for g in members)
        priced = instance_price(instance_type)
        add(f"{role} nodes ({instance_type}, {nodes} at minimum)", nodes * hours, "instance-hours", priced, True)
        if priced[0] is not None:
            at_max += sum(g.max for g in members) * hours * priced[0]
    volume_gb = sum(g.min * g.volume_gb for g in groups)
    gp3 = price("ebsGp3")
    add("node root volumes (gp3)", volume_gb, "GB-months", gp3, True)
    if gp3[0] is not None:
        at_max += sum(g.max * g.volume_gb for g in groups) * gp3[0]
    nats = nat_gateways(graph)
    add("NAT gateways, private", nats["private"] * hours, "gateway-hours", price("natGateway"))
    add("NAT gateways, public", nats["public"] * hours, "gateway-hours", price("natGateway"))
    add("public IPv4 addresses (internet NAT)", len(graph.by_type("aws:ec2/eip:Eip")) * hours, "IP-hours",
        price("publicIpv4"))
    endpoint_azs = sum(
        len(r.inputs.get("subnetIds", [])) for r in graph.by_type("aws:ec2/vpcEndpoint:VpcEndpoint")
        if r.inputs.get("vpcEndpointType") == "Interface"
    )
    add("interface endpoints (per endpoint per AZ)", endpoint_azs * hours, "AZ-hours", price("interfaceEndpoint"))
    attachments = len(graph.by_type("aws:ec2transitgateway/vpcAttachment:VpcAttachment"))
    add("transit gateway attachment", attachments * hours, "attachment-hours", price("transitGatewayAttachment"))
    add("KMS key (secrets encryption)", len(graph.by_type("aws:kms/key:Key")), "key-months", price("kmsKey"))

    rates = []
    for present, item, name in (
        (nats["private"] + nats["public"], "NAT gateway data processed", "natGatewayData"),
        (endpoint_azs, "interface endpoint data processed", "interfaceEndpointData"),
        (attachments, "transit gateway data processed", "transitGatewayData"),
    ):
        if present:
            usd, confirmed, source = price(name)
            rates.append(Rate(item, usd, confirmed, source))

    fixed = sum(line.monthly_usd or 0 for line in lines if not line.per_node)
    return Estimate(
        region=region,
        lines=tuple(lines),
        monthly_usd_at_max_nodes=round(fixed + at_max, 2),
        rates=tuple(rates),
        unknown=tuple(dict.fromkeys(unknown)),
        capacity=capacity(graph, groups, nats),
    )


def capacity(graph: Graph, groups: list[NodeGroupSize], nats: dict[str, int]) -> dict[str, Any]:
    """The limits a pattern runs into, as the firewall and platform teams size them."""
    from ..private_nat import CONNECTIONS_PER_NAT_IP  # the limit behind the NAT capacity warning

    figures = price_data()["capacity"]
    result: dict[str, Any] = {}
    if nats["private"]:
        ips = [1 + len(n.inputs.get("secondaryPrivateIpAddresses") or [])
               for n in graph.by_type(NAT_GATEWAY) if n.inputs.get("connectivityType") == "private"]
        per_ip = CONNECTIONS_PER_NAT_IP
        result["privateNat"] = {
            "connectionsPerNatIpPerDestination": per_ip,
            "connectionsPerGatewayPerDestination": sorted({per_ip * n for n in ips}),
            "gatewayBandwidthGbps": figures["natGatewayBandwidthGbps"]["value"],
            "source": figures["connectionsPerNatIpPerDestination"]["source"],
        }
    gateway_types = sorted({g.instance_type for g in groups if g.role == "gateway"})
    if gateway_types:
        bandwidth = figures["instanceBandwidth"]
        result["gatewayNodes"] = {
            "instanceTypes": {
                t: {"bandwidth": bandwidth["types"].get(t, f"unknown: {t} is not in the capacity data"),
                    "ipv4PerEni": ipv4_per_eni(t)}
                for t in gateway_types
            },
            "source": bandwidth["source"],
        }
    return result
