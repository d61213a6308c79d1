"""Pre-deploy rules for the egress stacks (Pulumi CrossGuard).

Each rule guards a property the on-prem allow-list depends on or the
checklist demands. They read resource properties as the engine reports them
(camelCase). pulumi-eks' Cluster is a remote component, so the rules target
the resources the engine shows for it (aws:eks/cluster:Cluster) and those the
program registers itself (node groups, launch templates, subnets, routes, NAT
gateways). Stack rules follow links between resources through their property
dependencies, which the engine knows at preview, before any ID exists.

Kept importable without side effects: `__main__.py` builds the pack.
"""

from __future__ import annotations

import ipaddress
from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

from pulumi_policy import (
    EnforcementLevel,
    PolicyResource,
    ReportViolation,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)

# Same values as patterns.tenancy (checked by the tests; the pack runs on its own).
TENANT_KEY = "egress/tenant"
GATEWAY_KEY = "egress/gateway"

EKS_CLUSTER = "aws:eks/cluster:Cluster"
NODE_GROUP = "aws:eks/nodeGroup:NodeGroup"
LAUNCH_TEMPLATE = "aws:ec2/launchTemplate:LaunchTemplate"
SUBNET = "aws:ec2/subnet:Subnet"
NAT_GATEWAY = "aws:ec2/natGateway:NatGateway"
ROUTE = "aws:ec2/route:Route"
ROUTE_TABLE = "aws:ec2/routeTable:RouteTable"
ROUTE_TABLE_ASSOCIATION = "aws:ec2/routeTableAssociation:RouteTableAssociation"
TAINT_EFFECTS = ("NO_SCHEDULE", "NO_EXECUTE")


def _one(value: Any) -> Mapping[str, Any]:
    """A nested block, which older provider versions report as a one-item list."""
    if isinstance(value, list):
        return value[0] if value else {}
    return value or {}


# --- control plane ------------------------------------------------------------------


def _private_endpoint(args: ResourceValidationArgs, report: ReportViolation) -> None:
    if args.resource_type != EKS_CLUSTER:
        return
    vpc = _one(args.props.get("vpcConfig"))
    if not vpc.get("endpointPrivateAccess"):
        report("The EKS API endpoint must be reachable privately: set endpointPrivateAccess to true.")
    if vpc.get("endpointPublicAccess"):
        cidrs = list(vpc.get("publicAccessCidrs") or [])
        if not cidrs or any(ipaddress.ip_network(c, strict=False).prefixlen == 0 for c in cidrs):
            report(
                "The EKS API endpoint is public to the whole internet: turn public access off "
                "(egress:endpointPublicAccessCidrs: []) or restrict it to named ranges."
            )


def _secrets_encryption(args: ResourceValidationArgs, report: ReportViolation) -> None:
    if args.resource_type != EKS_CLUSTER:
        return
    encryption = _one(args.props.get("encryptionConfig"))
    if "secrets" not in (encryption.get("resources") or []) or not _one(encryption.get("provider")).get("keyArn"):
        report("Kubernetes secrets must be envelope-encrypted with a customer-managed KMS key: set "
               "encryptionConfig {resources: [secrets], provider.keyArn}.")


# --- nodes ----------------------------------------------------------------------------


def _imdsv2(args: ResourceValidationArgs, report: ReportViolation) -> None:
    props = args.props
    if args.resource_type == LAUNCH_TEMPLATE:
        metadata = _one(props.get("metadataOptions"))
        if metadata.get("httpTokens") != "required":
            report("Launch template allows IMDSv1: set metadataOptions.httpTokens to 'required'.")
        hop_limit = metadata.get("httpPutResponseHopLimit")
        if hop_limit is None or hop_limit > 1:
            report("Pods can reach the node's instance credentials: set "
                   "metadataOptions.httpPutResponseHopLimit to 1 (pods calling AWS use IRSA).")
    elif args.resource_type == NODE_GROUP:
        if not _one(props.get("launchTemplate")).get("id") and not _one(props.get("launchTemplate")).get("name"):
            report("Node group without a launch template gets EKS' default instance metadata settings: "
                   "give it the cluster's hardened launch template.")
        if props.get("remoteAccess"):
            report("Node group allows SSH (remoteAccess): remove it; use SSM Session Manager.")


def _taints(args: ResourceValidationArgs, report: ReportViolation) -> None:
    if args.resource_type != NODE_GROUP:
        return
    labels = args.props.get("labels") or {}
    taints = [t for t in args.props.get("taints") or [] if t.get("effect") in TAINT_EFFECTS]
    tenant = labels.get(TENANT_KEY)
    if tenant is not None and not any(t.get("key") == TENANT_KEY and t.get("value") == tenant for t in taints):
        report(f"Tenant node group ({TENANT_KEY}={tenant}) must carry the taint {TENANT_KEY}={tenant}:NO_SCHEDULE, "
               "or other tenants' pods can run on it and leave from its addresses.")
    if GATEWAY_KEY in labels and not any(t.get("key") == GATEWAY_KEY for t in taints):
        report(f"Egress gateway node group ({GATEWAY_KEY}) must carry a {GATEWAY_KEY} NO_SCHEDULE taint, "
               "so only gateway pods run on it.")


# --- egress paths (stack rules) ----------------------------------------------------------


def _linked(resource: PolicyResource, prop: str, kind: str, by_id: Mapping[str, PolicyResource]) -> list[PolicyResource]:
    """Resources of `kind` that `resource.props[prop]` refers to."""
    linked = [r for r in resource.property_dependencies.get(prop, []) if r.resource_type == kind]
    if linked:
        return linked
    value = resource.props.get(prop)
    ids = value if isinstance(value, list) else [value]
    return [by_id[i] for i in ids if isinstance(i, str) and i in by_id and by_id[i].resource_type == kind]


def _index(resources: Iterable[PolicyResource]) -> dict[str, PolicyResource]:
    return {r.props["id"]: r for r in resources if isinstance(r.props.get("id"), str)}


def _azs(subnets: Iterable[PolicyResource]) -> set[str]:
    return {s.props.get("availabilityZone") for s in subnets if s.props.get("availabilityZone")}


def _nat_az(nat: PolicyResource, by_id: Mapping[str, PolicyResource]) -> str | None:
    subnets = _linked(nat, "subnetId", SUBNET, by_id)
    return subnets[0].props.get("availabilityZone") if subnets else None


def _multi_az(args: StackValidationArgs, report: ReportViolation) -> None:
    by_id = _index(args.resources)
    # Gateway node groups of one pattern form one egress path together (cilium runs
    # one single-node group per AZ, since an egress IP lives on one node at a time).
    paths: dict[str, list[PolicyResource]] = defaultdict(list)
    for group in (r for r in args.resources if r.resource_type == NODE_GROUP):
        gateway = (group.props.get("labels") or {}).get(GATEWAY_KEY)
        paths[f"gateway node groups ({GATEWAY_KEY}={gateway})" if gateway else f"Node group {group.name}"].append(group)
    for path, groups in paths.items():
        azs = _azs(s for g in groups for s in _linked(g, "subnetIds", SUBNET, by_id))
        if len(azs) < 2:
            report(f"{path} run(s) in {len(azs)} AZ(s) ({', '.join(sorted(azs)) or 'none known'}): "
                   "give it subnets in at least two AZs so its egress path survives an AZ outage.", groups[0].urn)
        sizes = [_one(g.props.get("scalingConfig")).get("minSize") for g in groups]
        if None not in sizes and sum(sizes) < 2:
            report(f"{path} may shrink to {sum(sizes)} node: set scalingConfig.minSize to at least 2, "
                   "one per AZ.", groups[0].urn)
    nats: dict[str, list[PolicyResource]] = defaultdict(list)
    for nat in (r for r in args.resources if r.resource_type == NAT_GATEWAY):
        nats[nat.props.get("connectivityType") or "public"].append(nat)
    for kind, gateways in nats.items():
        azs = {_nat_az(n, by_id) for n in gateways} - {None}
        if len(azs) < 2:
            report(f"The {kind} NAT gateways are in {len(azs)} AZ(s): put one in each of at least two AZs.",
                   gateways[0].urn)


def _nat_per_az(args: StackValidationArgs, report: ReportViolation) -> None:
    by_id = _index(args.resources)
    tables: dict[str, set[str]] = defaultdict(set)  # route table URN -> AZs of its subnets
    for association in (r for r in args.resources if r.resource_type == ROUTE_TABLE_ASSOCIATION):
        for table in _linked(association, "routeTableId", ROUTE_TABLE, by_id):
            tables[table.urn] |= _azs(_linked(association, "subnetId", SUBNET, by_id))
    for route in (r for r in args.resources if r.resource_type == ROUTE):
        nats = _linked(route, "natGatewayId", NAT_GATEWAY, by_id)
        if not nats:
            continue
        nat_az = _nat_az(nats[0], by_id)
        table_azs = set().union(*(tables[t.urn] for t in _linked(route, "routeTableId", ROUTE_TABLE, by_id)))
        foreign = sorted(table_azs - {nat_az})
        if nat_az and foreign:
            report(f"Route {route.name} sends traffic from {', '.join(foreign)} to the NAT gateway in {nat_az}: "
                   "give every AZ its own NAT gateway and route each AZ's subnets to the one in the same AZ, "
                   "so one AZ's outage does not cut the others' egress.", route.urn)


POLICIES = [
    ResourceValidationPolicy(
        name="eks-private-endpoint",
        description="The EKS API endpoint is private; a public endpoint only for named ranges.",
        validate=_private_endpoint,
        enforcement_level=EnforcementLevel.MANDATORY,
    ),
    ResourceValidationPolicy(
        name="eks-secrets-encryption",
        description="Kubernetes secrets are envelope-encrypted with a customer-managed KMS key.",
        validate=_secrets_encryption,
        enforcement_level=EnforcementLevel.MANDATORY,
    ),
    ResourceValidationPolicy(
        name="imdsv2-required",
        description="Nodes require IMDSv2 with a hop limit of 1, through a launch template; no SSH.",
        validate=_imdsv2,
        enforcement_level=EnforcementLevel.MANDATORY,
    ),
    ResourceValidationPolicy(
        name="tenant-and-gateway-taints",
        description="Tenant and egress gateway node groups carry their taints.",
        validate=_taints,
        enforcement_level=EnforcementLevel.MANDATORY,
    ),
    StackValidationPolicy(
        name="egress-paths-multi-az",
        description="Every node group and every kind of NAT gateway spans at least two AZs.",
        validate=_multi_az,
        enforcement_level=EnforcementLevel.MANDATORY,
    ),
    StackValidationPolicy(
        name="nat-gateway-per-az",
        description="Each AZ's subnets leave through a NAT gateway in the same AZ.",
        validate=_nat_per_az,
        enforcement_level=EnforcementLevel.MANDATORY,
    ),
]
