"""Stack configuration -> validated, typed settings.

The stack file is the public contract. Every problem in it is reported at once,
each naming its config key and the fix, before any resource is registered.
Structure and single values are checked by the pydantic models below; checks
that relate several values (overlaps, membership, uniqueness) run afterwards on
whatever parsed, so one bad value does not hide the others.

Scalar defaults live in Pulumi.yaml (the CLI applies them; so does the offline
engine); defaults of object-valued keys, which Pulumi.yaml cannot declare, live
here.
"""

from __future__ import annotations

import difflib
import ipaddress
import json
import re
from collections.abc import Callable, Iterable, Mapping
from functools import cache, cached_property
from dataclasses import dataclass
from typing import Annotated, Any, Literal, get_args, get_origin

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
)
from pydantic.alias_generators import to_camel

NAMESPACE = "egress"
PatternName = Literal["subnet-cidr", "private-nat", "cilium", "istio"]
PATTERN_NAMES = get_args(PatternName)
MAX_AZS = 4  # the address plan reserves this many AZ slots per block

RFC1918 = tuple(ipaddress.IPv4Network(c) for c in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"))
# RFC 1918 plus the RFC 6598 shared space that AWS accepts as VPC CIDRs.
PRIVATE_RANGES = (*RFC1918, ipaddress.IPv4Network("100.64.0.0/10"))
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_HOSTNAME = re.compile(r"^(\*\.)?([a-z0-9]([-a-z0-9]*[a-z0-9])?\.)*[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_AZ_SUFFIX = re.compile(r"^[a-z]$")
_REGION = re.compile(r"^[a-z]{2}(-gov|-iso[a-z]?)?-[a-z]+-\d$")


class ConfigError(Exception):
    """The stack configuration is invalid; `problems` lists every finding."""

    def __init__(self, problems: Iterable[Problem]):
        self.problems = sorted(set(problems), key=lambda p: (p.key, p.message))
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(
            f"invalid stack configuration ({len(self.problems)} problem"
            f"{'s' if len(self.problems) != 1 else ''}):\n{lines}"
        )


@dataclass(frozen=True)
class Problem:
    key: str  # the config key, e.g. egress:tenants[0].upstreams[1].cidr
    message: str  # what is wrong and how to fix it

    def __str__(self) -> str:
        return f"{self.key}: {self.message}"


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


def _private(net: ipaddress.IPv4Network) -> ipaddress.IPv4Network:
    if not any(net.subnet_of(r) for r in PRIVATE_RANGES):
        raise ValueError(
            f"{net} is not a private range; use a range inside 10.0.0.0/8, "
            "172.16.0.0/12, 192.168.0.0/16 or 100.64.0.0/10"
        )
    return net


def _dns_label(value: str) -> str:
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


Cidr = Annotated[ipaddress.IPv4Network, BeforeValidator(_cidr)]
PrivateCidr = Annotated[ipaddress.IPv4Network, BeforeValidator(_cidr), AfterValidator(_private)]
DnsLabel = Annotated[str, Field(max_length=40), AfterValidator(_dns_label)]
Port = Annotated[int, Field(ge=1, le=65535)]
IamRoleArn = Annotated[str, Field(pattern=r"^arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]+$")]


class _Model(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True
    )


class Upstream(_Model):
    """An on-prem service a tenant may reach."""

    name: DnsLabel
    cidr: PrivateCidr
    host: Annotated[str, AfterValidator(_hostname)] | None = None
    ports: list[Port] = Field(min_length=1)
    protocol: Literal["TLS", "TCP"] = "TLS"


class NodeGroupSize(_Model):
    # Two nodes minimum: one per AZ keeps a tenant's egress path alive in an AZ outage.
    instance_type: str = "m7i.large"
    min: int = Field(default=2, ge=2)
    max: int = Field(default=4, ge=2, le=100)


class Tenant(_Model):
    name: DnsLabel
    namespace: DnsLabel | None = None
    upstreams: list[Upstream] = Field(min_length=1)
    nodes: NodeGroupSize = NodeGroupSize()
    # Fixed position in the address plan; default: position in the list.
    slot: int | None = Field(default=None, ge=0)
    # private-nat: the egress profile (its NAT gateways) the tenant leaves through; default: its own.
    egress_profile: DnsLabel | None = None
    # private-nat: peak simultaneous connections to any one upstream (IP, port), for the capacity warning.
    expected_connections_per_destination: int | None = Field(default=None, ge=1)
    # The tenant team's IAM role: edit rights in the tenant namespace only.
    iam_role_arn: IamRoleArn | None = None

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
    slot: int | None = Field(default=None, ge=0)
    # Extra private IPs per NAT gateway, each adding 55,000 connections per destination.
    secondary_ips: Annotated[int, AfterValidator(_secondary_ips)] = 0


class PrivateNatOptions(_Model):
    # The secondary VPC range tenant subnets come from; it may be reused across VPCs
    # and overlap on-prem, since everything leaving for on-prem is translated by a NAT.
    tenant_cidr: PrivateCidr = ipaddress.IPv4Network("100.64.0.0/16")
    profiles: dict[DnsLabel, NatProfile] = {}


# --- end of pattern options ----------------------------------------------------


class Settings(_Model):
    pattern: PatternName
    region: str
    availability_zones: list[str]
    vpc_cidr: PrivateCidr
    on_prem_cidrs: list[PrivateCidr] = Field(min_length=1)
    transit_gateway_id: Annotated[str, Field(pattern=r"^(tgw-[0-9a-f]{8,17})?$")] = ""
    # Nodes pull Cilium, Istio and Kyverno images from public registries, so
    # some path to the internet is required: per-AZ public NAT, or the transit gateway.
    internet_egress: Literal["nat", "transit-gateway"]
    kubernetes_version: Annotated[str, Field(pattern=r"^1\.\d{2}$")]
    cluster_admin_role_arns: list[IamRoleArn] = []
    endpoint_public_access_cidrs: list[Cidr] = []
    deletion_protection: bool
    cluster_subnet_prefix: int = Field(ge=16, le=26)
    egress_subnet_prefix: int = Field(ge=16, le=28)
    tenant_subnet_prefix: int = Field(ge=16, le=26)
    gateway_instance_type: Annotated[str, Field(pattern=r"^[a-z][a-z0-9-]*\.[a-z0-9]+$")]
    system_nodes: NodeGroupSize = NodeGroupSize()
    tenants: list[Tenant] = []
    private_nat: PrivateNatOptions = PrivateNatOptions()

    @cached_property
    def slots(self) -> dict[str, int]:
        """Each tenant's fixed position, which every pattern derives its addresses
        or ports from: `slot` if pinned, else its position in the list."""
        return {t.name: i if t.slot is None else t.slot for i, t in enumerate(self.tenants)}


def slot_problems(settings: Settings) -> list[Problem]:
    """Two tenants on one slot would share addresses, egress IPs or gateway ports."""
    taken: dict[int, int] = {}
    problems = []
    for index, tenant in enumerate(settings.tenants):
        slot = settings.slots[tenant.name]
        if slot in taken:
            problems.append(
                Problem(
                    f"{NAMESPACE}:tenants[{index}].slot",
                    f"slot {slot} is already taken by tenants[{taken[slot]}]; give each tenant a distinct "
                    "slot (it fixes the tenant's addresses, egress IPs or gateway ports)",
                )
            )
        taken.setdefault(slot, index)
    return problems


# --- reading the config ------------------------------------------------------

# Pulumi passes every value as a string; lists and objects arrive as JSON.
def _is_structured(annotation: Any) -> bool:
    return get_origin(annotation) is list or (isinstance(annotation, type) and issubclass(annotation, BaseModel))


_STRUCTURED = {f.alias or n for n, f in Settings.model_fields.items() if _is_structured(f.annotation)}
_TOP_LEVEL_KEYS = {f.alias or n for n, f in Settings.model_fields.items()} - {"region"}


def load_settings(
    config: Mapping[str, Any],
    extra_checks: Callable[[Settings], list[Problem]] | None = None,
) -> Settings:
    """Validate a full Pulumi config map ({"egress:pattern": ..., "aws:region": ...}).

    Values may be native (from a stack file) or strings/JSON (from the engine).
    `extra_checks` adds the selected pattern's own checks.
    """
    problems: list[Problem] = []
    data: dict[str, Any] = {}
    for full_key, value in config.items():
        namespace, _, key = full_key.partition(":")
        if full_key == "aws:region":
            data["region"] = value
        elif namespace == NAMESPACE:
            if key not in _TOP_LEVEL_KEYS:
                problems.append(Problem(full_key, _unknown_key_fix(key, _TOP_LEVEL_KEYS)))
                continue
            parsed, problem = _decode(full_key, key, value)
            if problem:
                problems.append(problem)
            else:
                data[key] = parsed

    raw_tenants = data.pop("tenants", [])
    fields, field_problems = _validate_fields(data)
    reported = {p.key for p in problems}
    problems += [p for p in field_problems if p.key not in reported]
    tenants: list[tuple[int, Tenant]] = []
    if not isinstance(raw_tenants, list):
        problems.append(Problem(f"{NAMESPACE}:tenants", "must be a list of tenants"))
        raw_tenants = []
    for index, raw in enumerate(raw_tenants):
        tenant, tenant_problems = _validate(Tenant, raw, f"tenants[{index}]")
        problems += tenant_problems
        if tenant:
            tenants.append((index, tenant))

    problems += _base_checks(fields) + _tenant_checks(fields, tenants, raw_tenants)
    if problems:
        raise ConfigError(problems)
    settings = Settings.model_validate({**data, "tenants": raw_tenants})
    if extra_checks and (more := extra_checks(settings)):
        raise ConfigError(more)
    return settings


class _Partial(dict):
    """The top-level values that validated, by field name; invalid ones are None,
    so cross-value checks can still run on the rest."""

    def __getattr__(self, name: str) -> Any:
        return self.get(name)


@cache
def _field_adapter(name: str) -> TypeAdapter:
    field = Settings.model_fields[name]
    if not field.metadata:
        return TypeAdapter(field.annotation)
    return TypeAdapter(Annotated[(field.annotation, *field.metadata)])


def _validate_fields(data: dict[str, Any]) -> tuple[_Partial, list[Problem]]:
    values, problems = _Partial(), []
    for name, field in Settings.model_fields.items():
        alias = field.alias or name
        if name == "tenants":
            continue
        if alias not in data:
            if field.is_required():
                problems.append(Problem(_key("", (alias,)), "is required; set it in the stack file (see README, 'Configuration')"))
            else:
                values[name] = field.get_default(call_default_factory=True)
            continue
        try:
            values[name] = _field_adapter(name).validate_python(data[alias])
        except ValidationError as error:
            problems += [_describe(Settings, {**e, "loc": (alias, *e["loc"])}, "") for e in error.errors()]
    return values, problems


def _decode(full_key: str, key: str, value: Any) -> tuple[Any, Problem | None]:
    if key in _STRUCTURED and isinstance(value, str):
        try:
            return json.loads(value), None
        except json.JSONDecodeError as error:
            if value.lstrip()[:1] in ("[", "{"):
                return None, Problem(full_key, f"is not valid JSON/YAML ({error.msg}); check the stack file")
    return value, None  # a plain string where a list belongs: the model names the type


def _unknown_key_fix(key: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(key, sorted(known), n=1)
    hint = f"did you mean '{close[0]}'?" if close else f"valid keys: {', '.join(sorted(known))}"
    return f"unknown key; {hint}"


def _validate(model: type[_Model], raw: Any, prefix: str) -> tuple[Any, list[Problem]]:
    try:
        return model.model_validate(raw), []
    except ValidationError as error:
        return None, [_describe(model, e, prefix) for e in error.errors()]


def _key(prefix: str, loc: Iterable[Any]) -> str:
    path = prefix
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    if path == "region":
        return "aws:region"
    return f"{NAMESPACE}:{path}"


def _describe(model: type[_Model], error: Any, prefix: str) -> Problem:
    loc = tuple(error["loc"])
    kind = error["type"]
    key = _key(prefix, loc)
    if kind == "value_error":
        message = str(error["ctx"]["error"])
    elif kind == "missing":
        message = "is required; set it in the stack file (see README, 'Configuration')"
    elif kind == "extra_forbidden":
        owner = _model_at(model, loc[:-1])
        known = {f.alias or n for n, f in owner.model_fields.items()} if owner else set()
        message = _unknown_key_fix(str(loc[-1]), known)
    elif kind == "string_pattern_mismatch" and loc[-1:] == ("kubernetesVersion",):
        message = f"{error['input']!r} is not a Kubernetes minor version; use e.g. '1.35'"
    elif kind == "string_pattern_mismatch" and loc[-1:] == ("transitGatewayId",):
        message = f"{error['input']!r} is not a transit gateway id; use tgw-0123456789abcdef0, or '' for none"
    elif kind == "string_pattern_mismatch" and ("clusterAdminRoleArns" in loc or loc[-1:] == ("iamRoleArn",)):
        message = f"{error['input']!r} is not an IAM role ARN; use arn:aws:iam::<account>:role/<name>"
    elif kind == "string_pattern_mismatch" and loc[-1:] == ("gatewayInstanceType",):
        message = f"{error['input']!r} is not an EC2 instance type; use e.g. 'c6in.large'"
    elif kind == "literal_error":
        message = f"{error['input']!r} is not allowed; use one of {error['ctx']['expected']}"
    elif kind == "too_short" and loc[-1:] == ("ports",):
        message = "is empty; list at least one TCP port, e.g. [443]"
    elif kind in ("greater_than_equal", "less_than_equal") and "ports" in loc:
        message = f"{error['input']!r} is out of range; ports are 1-65535"
    else:
        message = f"{error['msg'].rstrip('.')} (got {error.get('input')!r})"
    return Problem(key, message)


def _model_at(model: type[_Model], loc: tuple[Any, ...]) -> type[_Model] | None:
    current: Any = model
    dict_key = False  # the next part is a key of a dict field, not a field name
    for part in loc:
        if isinstance(part, int) or dict_key:
            dict_key = False
            continue
        field = current.model_fields.get(part) or next(
            (f for f in current.model_fields.values() if f.alias == part), None
        )
        if field is None:
            return None
        annotation = field.annotation
        dict_key = get_origin(annotation) is dict
        args = getattr(annotation, "__args__", ())
        current = next((a for a in (annotation, *args) if isinstance(a, type) and issubclass(a, _Model)), None)
        if current is None:
            return None
    return current


# --- checks across values ----------------------------------------------------


def _base_checks(s: _Partial) -> list[Problem]:
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
    if s.region is not None and not _REGION.match(s.region):
        problems.append(Problem("aws:region", f"{s.region!r} is not an AWS region name, e.g. eu-west-1"))
    elif s.region is not None and azs is not None:
        for az in azs:
            if not (az.startswith(s.region) and _AZ_SUFFIX.match(az[len(s.region):])):
                problems.append(
                    Problem(key, f"{az!r} is not an AZ of region {s.region}; use e.g. {s.region}a")
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
    if s.system_nodes is not None and s.system_nodes.min > s.system_nodes.max:
        problems.append(Problem(f"{NAMESPACE}:systemNodes.min", "is larger than systemNodes.max"))
    return problems


def _tenant_checks(base: _Partial, tenants: list[tuple[int, Tenant]], raw: list[Any]) -> list[Problem]:
    problems: list[Problem] = []
    if not raw:
        problems.append(Problem(f"{NAMESPACE}:tenants", "is empty; list at least one tenant"))
    # Uniqueness on the raw entries, so an otherwise invalid tenant still counts;
    # iamRoleArn too: EKS takes one access entry per principal.
    seen: dict[str, dict[Any, int]] = {"name": {}, "namespace": {}, "iamRoleArn": {}}
    for index, entry in enumerate(raw):
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
        if tenant.k8s_namespace in ("default", "kube-system", "kube-public", "kube-node-lease"):
            problems.append(Problem(f"{key}.namespace", f"{tenant.k8s_namespace!r} is reserved; pick another"))
        if tenant.nodes.min > tenant.nodes.max:
            problems.append(Problem(f"{key}.nodes.min", "is larger than nodes.max"))
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
