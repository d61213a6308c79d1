"""Checks that relate several values: overlaps, membership, uniqueness.

They run on whatever parsed (invalid values are None in a Partial), so one bad
value does not hide the problems of the others.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic.alias_generators import to_snake

from .errors import NAMESPACE, Problem
from .aws_rules import SUPPORTED_PARTITIONS, partition_of
from .models import MAX_AZS, PRIVATE_RANGES, Settings, Tenant, quantity_value

_AZ_SUFFIX = re.compile(r"^[a-z]$")


class Partial(dict):
    """The top-level values that validated, by field name; invalid ones are None,
    so cross-value checks can still run on the rest."""

    def __getattr__(self, name: str) -> Any:
        return self.get(name)


def base_checks(s: Partial) -> list[Problem]:
    problems: list[Problem] = []
    azs = s.availability_zones
    key = f"{NAMESPACE}:availabilityZones"
    if azs is not None:
        if len(set(azs)) < 2:
            problems.append(Problem(key, f"needs at least two distinct AZs for high availability (got {azs})"))
        if len(azs) > MAX_AZS:
            problems.append(Problem(key, f"lists {len(azs)} AZs; at most {MAX_AZS} are supported"))
        for dup in sorted({a for a in azs if azs.count(a) > 1}):
            problems.append(Problem(key, f"{dup!r} is listed twice; list each AZ once"))
    if s.region is not None and partition_of(s.region) is None:
        problems.append(Problem("aws:region", f"{s.region!r} is not an AWS region name; use one such as eu-west-1"))
    elif s.region is not None and partition_of(s.region) not in SUPPORTED_PARTITIONS:
        problems.append(Problem(
            "aws:region",
            f"{s.region} is in partition {partition_of(s.region)!r}, which this program does not deploy to (its "
            "interface endpoint names and the public image registries the add-ons pull from differ there); use a "
            "region of the commercial or GovCloud partition",
        ))
    elif s.region is not None and azs is not None:
        for az in azs:
            if not (az.startswith(s.region) and _AZ_SUFFIX.match(az[len(s.region):])):
                problems.append(
                    Problem(key, f"{az!r} is not an AZ of region {s.region}; use e.g. {s.region}a")
                )
    problems += _role_partition_problems(
        s.region, [(f"{NAMESPACE}:clusterAdminRoleArns[{i}]", a) for i, a in enumerate(s.cluster_admin_role_arns or [])]
    )
    # Each on-prem range becomes a route in every private route table; CreateRoute
    # fails on a second one for the same destination (RouteAlreadyExists,
    # https://docs.aws.amazon.com/AWSEC2/latest/APIReference/errors-overview.html).
    problems += _listed_twice(
        "onPremCidrs", s.on_prem_cidrs, "AWS refuses a second identical route (RouteAlreadyExists)"
    )
    # One access entry per IAM principal; a second CreateAccessEntry for it fails
    # with ResourceInUseException (https://docs.aws.amazon.com/eks/latest/APIReference/API_CreateAccessEntry.html).
    problems += _listed_twice(
        "clusterAdminRoleArns", s.cluster_admin_role_arns, "EKS takes one access entry per principal"
    )
    for index, onprem in enumerate(s.on_prem_cidrs or []):
        if s.vpc_cidr is not None and onprem.overlaps(s.vpc_cidr):
            problems.append(
                Problem(
                    f"{NAMESPACE}:onPremCidrs[{index}]",
                    f"{onprem} overlaps egress:vpcCidr {s.vpc_cidr}; on-prem ranges must be "
                    "routable from the VPC, so pick a VPC range the network team has not used",
                )
            )
    for index, net in enumerate(s.endpoint_public_access_cidrs or []):
        if net.prefixlen == 0 or any(net.overlaps(r) for r in PRIVATE_RANGES):
            problems.append(
                Problem(
                    f"{NAMESPACE}:endpointPublicAccessCidrs[{index}]",
                    f"{net} is not allowed; list the public ranges that may reach the API "
                    "(never 0.0.0.0/0), or leave the list empty for a private endpoint",
                )
            )
    if s.transit_gateway_id == "" and s.internet_egress == "transit-gateway":
        problems.append(
            Problem(
                f"{NAMESPACE}:internetEgress",
                "'transit-gateway' needs egress:transitGatewayId; set it, or use 'nat'",
            )
        )
    problems += _on_prem_dns_checks(s)
    if s.system_nodes is not None and s.system_nodes.min > s.system_nodes.max:
        problems.append(Problem(f"{NAMESPACE}:systemNodes.min",
                                f"{s.system_nodes.min} is larger than systemNodes.max ({s.system_nodes.max}); "
                                "lower min or raise max"))
    return problems


def _role_partition_problems(region: str | None, arns: list[tuple[str, str]]) -> list[Problem]:
    """A role ARN names its partition; EKS refuses an access entry for a principal of another one.
    `arns`: (config key, ARN)."""
    partition = partition_of(region) if region else None
    problems = []
    for key, arn in arns if partition else []:
        written = arn.split(":")[1]
        if written != partition:
            problems.append(Problem(
                key, f"{arn} is in partition {written!r} but aws:region {region} is in {partition!r}; "
                     f"use arn:{partition}:iam::<account>:role/<name>",
            ))
    return problems


def _on_prem_dns_checks(s: Partial) -> list[Problem]:
    dns = s.on_prem_dns
    if dns is None:
        return []
    key = f"{NAMESPACE}:onPremDns"
    problems = _listed_twice("onPremDns.domains", dns.domains, "one forwarding rule per domain")
    problems += _listed_twice("onPremDns.resolverIps", dns.resolver_ips, "each is one forwarding target")
    for index, ip in enumerate(dns.resolver_ips):
        if s.on_prem_cidrs and not any(ip in net for net in s.on_prem_cidrs):
            problems.append(Problem(
                f"{key}.resolverIps[{index}]",
                f"{ip} is outside egress:onPremCidrs ({', '.join(map(str, s.on_prem_cidrs))}); the VPC routes "
                "only those to on-prem, so add the resolver's range there or fix the address",
            ))
    if s.transit_gateway_id == "":
        problems.append(Problem(
            key, "needs egress:transitGatewayId: the resolver endpoint reaches the on-prem resolvers "
                 "through the transit gateway; set it, or remove egress:onPremDns",
        ))
    return problems


def _listed_twice(key: str, values: list | None, why: str) -> list[Problem]:
    first: dict[Any, int] = {}
    problems = []
    for index, value in enumerate(values or []):
        if value in first:
            problems.append(
                Problem(f"{NAMESPACE}:{key}[{index}]",
                        f"{value} is already listed as {key}[{first[value]}]; list it once: {why}")
            )
        first.setdefault(value, index)
    return problems


def tenant_checks(base: Partial, tenants: list[tuple[int, Tenant]], raw: list[Any] | None) -> list[Problem]:
    """`raw`: the tenants as written, None when they are not a list (reported already)."""
    problems: list[Problem] = []
    if raw == []:
        problems.append(Problem(f"{NAMESPACE}:tenants", "is empty; list at least one tenant"))
    # Uniqueness on the raw entries, so an otherwise invalid tenant still counts;
    # iamRoleArn too: EKS takes one access entry per principal.
    seen: dict[str, dict[Any, int]] = {"name": {}, "namespace": {}, "iamRoleArn": {}}
    for index, entry in enumerate(raw or []):
        if not isinstance(entry, dict):
            continue
        values = {"name": entry.get("name"), "namespace": entry.get("namespace") or entry.get("name"),
                  "iamRoleArn": entry.get("iamRoleArn")}
        for field, value in values.items():
            if value is None or not isinstance(value, (str, int)):
                continue
            if value in seen[field]:
                problems.append(
                    Problem(
                        f"{NAMESPACE}:tenants[{index}].{field}",
                        f"{value!r} is already used by tenants[{seen[field][value]}]; "
                        f"each tenant needs its own {field}",
                    )
                )
            else:
                seen[field][value] = index
    for index, tenant in tenants:
        key = f"{NAMESPACE}:tenants[{index}]"
        if tenant.nodes.min > tenant.nodes.max:
            problems.append(Problem(f"{key}.nodes.min", f"{tenant.nodes.min} is larger than nodes.max "
                                                         f"({tenant.nodes.max}); lower min or raise max"))
        for each, total in (("containerCpu", "cpu"), ("containerMemory", "memory")):
            one, whole = getattr(tenant.quota, to_snake(each)), getattr(tenant.quota, total)
            if quantity_value(one) > quantity_value(whole):
                problems.append(Problem(f"{key}.quota.{each}", f"{one} is more than the namespace's quota.{total} "
                                                               f"({whole}); lower it or raise quota.{total}"))
        for u, upstream in enumerate(tenant.upstreams):
            if base.on_prem_cidrs and not any(upstream.cidr.subnet_of(o) for o in base.on_prem_cidrs):
                problems.append(
                    Problem(
                        f"{key}.upstreams[{u}].cidr",
                        f"{upstream.cidr} is outside egress:onPremCidrs "
                        f"({', '.join(map(str, base.on_prem_cidrs))}); add its range there or fix the CIDR",
                    )
                )
            if base.vpc_cidr and upstream.cidr.overlaps(base.vpc_cidr):
                problems.append(
                    Problem(f"{key}.upstreams[{u}].cidr", f"{upstream.cidr} overlaps egress:vpcCidr")
                )
        if tenant.iam_role_arn:
            problems += _role_partition_problems(base.region, [(f"{key}.iamRoleArn", tenant.iam_role_arn)])
        if tenant.iam_role_arn and tenant.iam_role_arn in (base.cluster_admin_role_arns or []):
            problems.append(
                Problem(
                    f"{key}.iamRoleArn",
                    f"{tenant.iam_role_arn} is also in egress:clusterAdminRoleArns; EKS allows one access "
                    "entry per principal and a tenant role must not be a cluster admin: use a separate role",
                )
            )
        names = [u.name for u in tenant.upstreams]
        for dup in sorted({n for n in names if names.count(n) > 1}):
            problems.append(Problem(f"{key}.upstreams", f"upstream name {dup!r} is used twice"))
    return problems
