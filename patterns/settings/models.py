"""The stack file's shape: typed models of every key and its single-value rules.

A rule's message (what is wrong, how to fix it) sits next to the field it
belongs to, as a validator raising ValueError; errors.py passes it through.
Defaults of object-valued keys, which Pulumi.yaml cannot declare, live here.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Collection
from functools import cached_property
from typing import Annotated, Any, Literal, get_args

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, PrivateAttr
from pydantic.alias_generators import to_camel

from ..versions import SUPPORTED_MINORS
from .aws_rules import RFC1918, partition_of
from .sizing import default_sizes

PatternName = Literal["subnet-cidr", "private-nat", "cilium", "istio"]
PATTERN_NAMES = get_args(PatternName)
MAX_AZS = 4  # the address plan reserves this many AZ slots per block

# RFC 1918 plus the RFC 6598 shared space that AWS accepts as VPC CIDRs.
PRIVATE_RANGES = (*RFC1918, ipaddress.IPv4Network("100.64.0.0/10"))
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_HOSTNAME = re.compile(r"^(\*\.)?([a-z0-9]([-a-z0-9]*[a-z0-9])?\.)*[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


# --- single values -----------------------------------------------------------


def _cidr(value: Any) -> ipaddress.IPv4Network:
    if isinstance(value, ipaddress.IPv4Network):
        return value
    text = str(value).strip()
    try:
        return ipaddress.IPv4Network(text)
    except ValueError:
        pass
    try:
        net = ipaddress.IPv4Network(text, strict=False)
    except ValueError:
        raise ValueError(
            f"{value!r} is not an IPv4 CIDR; write it as address/prefix, e.g. 10.30.0.0/16"
        ) from None
    raise ValueError(f"{value!r} has host bits set; use {net}")


def _private_range(fix: str) -> AfterValidator:
    """A range inside PRIVATE_RANGES; `fix` completes "<net> is not a private range; ..."."""

    def check(net: ipaddress.IPv4Network) -> ipaddress.IPv4Network:
        if not any(net.subnet_of(r) for r in PRIVATE_RANGES):
            raise ValueError(f"{net} is not a private range; {fix}")
        return net

    return AfterValidator(check)


def _kubernetes_minor(value: Any) -> str:
    supported = ", ".join(SUPPORTED_MINORS)
    text = str(value).strip()
    # YAML reads an unquoted 1.30 as the number 1.3; it reaches the program as
    # 1.3 (a float from the stack file, the string "1.3" from the engine).
    if re.fullmatch(r"1\.[1-9]", text):
        meant = f"{text}0"
        also = "" if meant in SUPPORTED_MINORS else f"; {meant} is not supported either: use one of {supported}"
        raise ValueError(f"{text} is how YAML reads an unquoted {meant} (a number); quote it: '{meant}'{also}")
    if text not in SUPPORTED_MINORS:
        raise ValueError(
            f"{value!r} is not a Kubernetes minor EKS supports with pinned add-ons; use one of {supported} "
            "(quoted, e.g. '1.35'; patterns/versions.py lists them with their sources)"
        )
    return text


def _dns_label(value: str) -> str:
    if len(value) > 40:  # names become part of AWS and Kubernetes resource names
        raise ValueError(f"{value!r} is longer than 40 characters; use a shorter name")
    if not _DNS_LABEL.match(value):
        raise ValueError(
            f"{value!r} is not a DNS-1123 label; use lower-case letters, digits "
            "and '-', starting and ending with a letter or digit"
        )
    return value


def _hostname(value: str) -> str:
    if len(value) > 253 or not _HOSTNAME.match(value):
        raise ValueError(f"{value!r} is not a host name; use a DNS name such as db.corp.example")
    return value


def _matching(pattern: str, fix: str) -> AfterValidator:
    """A string that must match `pattern`; `fix` completes "'<value>' is not ..."."""
    compiled = re.compile(pattern)

    def check(value: str) -> str:
        if not compiled.fullmatch(value):
            raise ValueError(f"{value!r} is not {fix}")
        return value

    return AfterValidator(check)


def _between(low: int, high: int | None, why: str) -> AfterValidator:
    """A number from `low` to `high` (no upper bound if None); `why` completes the message."""

    def check(value: int) -> int:
        if value < low or (high is not None and value > high):
            bounds = f"{low}-{high}" if high is not None else f"{low} or more"
            raise ValueError(f"{value} is out of range; use {bounds}: {why}")
        return value

    return AfterValidator(check)


def _not_empty(fix: str) -> AfterValidator:
    def check(value: list) -> list:
        if not value:
            raise ValueError(f"is empty; {fix}")
        return value

    return AfterValidator(check)


def _vpc_range_size(net: ipaddress.IPv4Network) -> ipaddress.IPv4Network:
    # https://docs.aws.amazon.com/vpc/latest/userguide/vpc-cidr-blocks.html: a VPC's
    # IPv4 ranges, primary and secondary, are /16 (65,536 addresses) to /28.
    if not 16 <= net.prefixlen <= 28:
        example = next(net.subnets(new_prefix=16)) if net.prefixlen < 16 else net.supernet(new_prefix=16)
        raise ValueError(f"{net} cannot be a VPC range; AWS accepts /16 to /28, e.g. {example}")
    return net


Cidr = Annotated[ipaddress.IPv4Network, BeforeValidator(_cidr)]
PrivateCidr = Annotated[
    ipaddress.IPv4Network, BeforeValidator(_cidr),
    _private_range("use a range inside 10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16 or 100.64.0.0/10"),
]
# The security group rule opens the private endpoint; public clients go
# through the public endpoint, whose own allow-list is another key.
ApiAccessCidr = Annotated[
    ipaddress.IPv4Network, BeforeValidator(_cidr),
    _private_range("list the private ranges operators reach the private endpoint from, "
                   "and put public ranges in egress:endpointPublicAccessCidrs instead"),
]
VpcRange = Annotated[PrivateCidr, AfterValidator(_vpc_range_size)]
DnsLabel = Annotated[str, AfterValidator(_dns_label)]
Port = Annotated[int, _between(1, 65535, "a TCP port")]
Slot = Annotated[int, _between(0, None, "slots count from 0")]
IamRoleArn = Annotated[
    str,
    _matching(r"arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]+",
              "an IAM role ARN; use arn:aws:iam::<account>:role/<name>"),
]


def _instance_type(example: str) -> AfterValidator:
    # EC2 names types family.size, e.g. m7i.large, a dash instead of the dot being a common slip
    # (https://docs.aws.amazon.com/ec2/latest/instancetypes/instance-type-names.html).
    return _matching(r"[a-z][a-z0-9-]*\.[a-z0-9]+", f"an EC2 instance type; use e.g. {example!r}")


class _Model(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True
    )


class Upstream(_Model):
    """An on-prem service a tenant may reach."""

    name: DnsLabel
    cidr: PrivateCidr
    host: Annotated[str, AfterValidator(_hostname)] | None = None
    ports: Annotated[list[Port], _not_empty("list at least one TCP port, e.g. [443]")]
    protocol: Literal["TLS", "TCP"] = "TLS"


class NodeGroupSize(_Model):
    instance_type: Annotated[str, _instance_type("m7i.large")] = "m7i.large"
    # Two nodes minimum: one per AZ keeps a tenant's egress path alive in an AZ outage.
    min: Annotated[int, _between(2, None, "two nodes keep the group alive when an AZ fails")] = 2
    max: Annotated[int, _between(2, 100, "at least two nodes, at most 100 per group")] = 4


_QUANTITY = re.compile(r"(\d+(?:\.\d+)?)(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?")
_QUANTITY_FACTORS = {None: 1, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18,
                     "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}


def quantity_value(quantity: str) -> float:
    """A Kubernetes quantity ("500m", "16Gi") as a number."""
    number, suffix = _QUANTITY.fullmatch(quantity).groups()
    return float(number) * _QUANTITY_FACTORS[suffix]


def _quantity(value: Any) -> str:
    # https://kubernetes.io/docs/reference/kubernetes-api/common-definitions/quantity/
    text = str(value).strip()
    if not _QUANTITY.fullmatch(text) or quantity_value(text) <= 0:
        raise ValueError(f"{value!r} is not a positive Kubernetes quantity; write e.g. 500m or 2 (CPU), 512Mi or 16Gi (memory)")
    return text


Quantity = Annotated[str, BeforeValidator(_quantity)]


class TenantQuota(_Model):
    """What a tenant namespace may request in total (its ResourceQuota), and what
    a container that names no requests gets (its LimitRange)."""

    cpu: Quantity = "8"  # requests.cpu of every pod in the namespace together
    memory: Quantity = "16Gi"  # requests.memory likewise
    pods: Annotated[int, _between(1, 10000, "the namespace needs room for at least one pod")] = 100
    container_cpu: Quantity = "100m"  # a container's CPU request when it sets none
    container_memory: Quantity = "256Mi"  # a container's memory request and limit when it sets none


class Tenant(_Model):
    name: DnsLabel
    namespace: DnsLabel | None = None
    upstreams: Annotated[list[Upstream], _not_empty("list at least one upstream ({name, cidr, ports})")]
    nodes: NodeGroupSize = NodeGroupSize()
    quota: TenantQuota = TenantQuota()
    # Fixed position in the address plan; default: where the last deploy put it, else the lowest free one.
    slot: Slot | None = None
    # private-nat: the egress profile (its NAT gateways) the tenant leaves through; default: its own.
    egress_profile: DnsLabel | None = None
    # private-nat: peak simultaneous connections to any one upstream (IP, port), for the capacity warning.
    expected_connections_per_destination: Annotated[int, _between(1, None, "a connection count")] | None = None
    # The tenant team's IAM role: edit rights in the tenant namespace only.
    iam_role_arn: IamRoleArn | None = None
    # The tenant's own egress pattern; default: egress:pattern.
    pattern: PatternName | None = None
    # A move to another pattern, one key per step (README, "Moving a tenant to
    # another pattern"): `nextPattern` builds and publishes the new path while
    # traffic stays on `pattern`; then `pattern` becomes the new one and
    # `previousPattern` keeps the old path until its pods are gone.
    next_pattern: PatternName | None = None
    previous_pattern: PatternName | None = None

    @property
    def k8s_namespace(self) -> str:
        return self.namespace or self.name

    @property
    def nat_profile(self) -> str:
        return self.egress_profile or self.name


# --- pattern options: private-nat ---------------------------------------------
# Read only under egress:pattern private-nat; patterns/private_nat.py checks how
# they relate to the rest of the stack.

# Private IPv4 addresses per NAT gateway: 1 primary + 7 secondary, not adjustable
# (https://docs.aws.amazon.com/vpc/latest/userguide/nat-gateway-basics.html).
NAT_GATEWAY_MAX_IPS = 8


def _secondary_ips(value: int) -> int:
    if not 0 <= value < NAT_GATEWAY_MAX_IPS:
        raise ValueError(
            f"{value} is out of range: a NAT gateway holds at most {NAT_GATEWAY_MAX_IPS} private IPs "
            f"(1 primary + {NAT_GATEWAY_MAX_IPS - 1} secondary); use 0-{NAT_GATEWAY_MAX_IPS - 1}, "
            "and move some tenants to another profile for more capacity"
        )
    return value


class NatProfile(_Model):
    """An egress profile: one private NAT gateway per AZ that a group of tenants leaves through."""

    # Fixed position of the profile's NAT IPs in the egress subnets. Default: the
    # slot of the tenant of the same name; required for a profile no tenant is named after.
    slot: Slot | None = None
    # Extra private IPs per NAT gateway, each adding 55,000 connections per destination.
    secondary_ips: Annotated[int, AfterValidator(_secondary_ips)] = 0


class PrivateNatOptions(_Model):
    # The secondary VPC range tenant subnets come from; it may be reused across VPCs
    # and overlap on-prem, since everything leaving for on-prem is translated by a NAT.
    tenant_cidr: VpcRange = ipaddress.IPv4Network("100.64.0.0/16")
    profiles: dict[DnsLabel, NatProfile] = {}


# --- end of pattern options ----------------------------------------------------


def _domain(value: str) -> str:
    # A Route 53 Resolver forwarding rule matches a domain and its subdomains;
    # a wildcard or a single label (a TLD) is not what a rule should forward.
    name = value.strip().rstrip(".").lower()
    if "*" in name or "." not in name or not _HOSTNAME.match(name) or len(name) > 253:
        raise ValueError(
            f"{value!r} is not a DNS domain to forward; use a domain such as corp.example "
            "(its subdomains are forwarded too; no wildcards, no bare top-level domain)"
        )
    return name


def _ipv4(value: Any) -> ipaddress.IPv4Address:
    try:
        return ipaddress.IPv4Address(str(value).strip())
    except ValueError:
        raise ValueError(f"{value!r} is not an IPv4 address; list the resolvers' addresses, e.g. 10.100.0.53") from None


class OnPremDns(_Model):
    """On-prem DNS zones the VPC forwards to the on-prem resolvers (Route 53 Resolver)."""

    domains: Annotated[
        list[Annotated[str, AfterValidator(_domain)]], _not_empty("list the on-prem DNS domains, e.g. [corp.example]")
    ]
    resolver_ips: Annotated[
        list[Annotated[ipaddress.IPv4Address, BeforeValidator(_ipv4)]],
        _not_empty("list the on-prem resolvers' IPs, e.g. [10.100.0.53, 10.101.0.53]"),
    ]

    def covers(self, host: str) -> bool:
        return any(host == d or host.endswith(f".{d}") for d in self.domains)


class Settings(_Model):
    pattern: PatternName
    region: str
    availability_zones: list[str]
    vpc_cidr: VpcRange
    on_prem_cidrs: Annotated[
        list[PrivateCidr], _not_empty("list the on-prem ranges the upstreams live in, e.g. [10.100.0.0/14]")
    ]
    transit_gateway_id: Annotated[
        str, _matching(r"^(tgw-[0-9a-f]{8,17})?$",
                       "a transit gateway id; use tgw-0123456789abcdef0, or '' for none")
    ] = ""
    # The transit gateway route table on-prem traffic is looked up in, when this
    # account owns it: the stack routes the VPC's primary range there itself.
    transit_gateway_route_table_id: Annotated[
        str, _matching(r"^(tgw-rtb-[0-9a-f]{8,17})?$",
                       "a transit gateway route table id; use tgw-rtb-0123456789abcdef0, or '' for none")
    ] = ""
    # Nodes pull Cilium, Istio and Kyverno images from public registries, so
    # some path to the internet is required: per-AZ public NAT, or the transit gateway.
    internet_egress: Literal["nat", "transit-gateway"]
    kubernetes_version: Annotated[str, BeforeValidator(_kubernetes_minor)]
    cluster_admin_role_arns: list[IamRoleArn] = []
    endpoint_public_access_cidrs: list[Cidr] = []
    # Private ranges admitted to the private API endpoint (443); empty: egress:onPremCidrs.
    api_access_cidrs: list[ApiAccessCidr] = []
    deletion_protection: bool
    # A subnet is /16 to /28 (AWS); node subnets need room for nodes and their pods' IPs.
    # Unset in the stack file: derived from the range they are carved from (sizing.py)
    # when the settings are loaded, so always set on loaded settings.
    cluster_subnet_prefix: Annotated[int, _between(16, 26, "a cluster subnet holds the system nodes")] | None = None
    egress_subnet_prefix: Annotated[int, _between(16, 28, "AWS subnets are /16 to /28")] | None = None
    tenant_subnet_prefix: Annotated[int, _between(16, 28, "AWS subnets are /16 to /28")] | None = None
    gateway_instance_type: Annotated[str, _instance_type("c6in.large")]
    system_nodes: NodeGroupSize = NodeGroupSize()
    tenants: list[Tenant] = []
    private_nat: PrivateNatOptions = PrivateNatOptions()
    # Optional: forward these on-prem zones from the VPC to the on-prem resolvers.
    on_prem_dns: OnPremDns | None = None
    # Removed tenants / AZs whose reserved slot / position may be reused (see patterns/assignment.py).
    released_tenants: list[DnsLabel] = []
    released_availability_zones: list[str] = []
    # Not config: the assignment of slots, AZ positions, control-plane AZs and
    # admin keys, resolved against the previous deploy's (see with_assignment).
    _assignment: Any = PrivateAttr(default=None)

    def pattern_of(self, tenant: Tenant) -> str:
        """The pattern the tenant's traffic leaves by (its admission, namespace labels)."""
        return tenant.pattern or self.pattern

    def paths_of(self, tenant: Tenant) -> tuple[str, ...]:
        """Every pattern the tenant has a path under: its own first, then the one
        it is moving to or from."""
        other = tenant.next_pattern or tenant.previous_pattern
        return (self.pattern_of(tenant),) + ((other,) if other and other != self.pattern_of(tenant) else ())

    def restricted(self, names: Collection[str]) -> Settings:
        """The same settings with only the named tenants, keeping the resolved
        assignment (slots stay global: no two tenants share one anywhere)."""
        settings = self.model_copy(update={"tenants": [t for t in self.tenants if t.name in names]})
        settings.__dict__.pop("slots", None)
        settings._assignment = self.assignment
        return settings

    def with_assignment(self, assignment: Any) -> Settings:
        settings = self.model_copy()
        settings.__dict__.pop("slots", None)  # cached from the old assignment
        settings._assignment = assignment
        return settings

    @property
    def assignment(self) -> Any:
        """The resolved assignment (patterns/assignment.py); without one, list
        positions, as for a stack's first deploy."""
        if self._assignment is None:
            from ..assignment import assign

            self._assignment = assign(self, None)[0]
        return self._assignment

    @property
    def api_access_ranges(self) -> list[ipaddress.IPv4Network]:
        """Where operators reach the private API endpoint from."""
        return self.api_access_cidrs or self.on_prem_cidrs

    # The subnet roles whose prefix the stack file sets; load_settings derives the others.
    _explicit_prefixes: frozenset[str] = PrivateAttr(default=frozenset({"cluster", "egress", "tenant"}))

    @property
    def explicit_subnet_prefixes(self) -> frozenset[str]:
        return self._explicit_prefixes

    @cached_property
    def public_subnet_prefix(self) -> int:
        """Public subnets hold the internet NAT gateways only; no key sets them."""
        return default_sizes(self.vpc_cidr.prefixlen).public

    @cached_property
    def partition(self) -> str:
        """The AWS partition of the region (aws, aws-us-gov, aws-cn, ...): every ARN's second field."""
        return partition_of(self.region) or "aws"

    @cached_property
    def slots(self) -> dict[str, int]:
        """Each tenant's fixed position, which every pattern derives its addresses
        or ports from: `slot` if pinned, else where the previous deploy put it, else
        the lowest free one (see patterns/assignment.py)."""
        return {t.name: self.assignment.tenants[t.name] for t in self.tenants}
