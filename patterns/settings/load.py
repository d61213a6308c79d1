"""A Pulumi config map -> Settings, or a ConfigError listing every problem.

Each top-level value is validated on its own (models.py), its errors translated
(errors.py), then the checks across values run on whatever parsed (checks.py).
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Callable, Mapping
from functools import cache
from typing import Annotated, Any, get_args, get_origin

from pydantic import BaseModel, TypeAdapter, ValidationError
from pydantic.alias_generators import to_snake

from .checks import Partial, base_checks, tenant_checks
from .errors import NAMESPACE, REQUIRED, ConfigError, Problem, config_key, describe, suggestion, unknown_key_fix
from .models import Settings, Tenant
from .sizing import default_sizes


# Pulumi passes every value as a string; lists and objects arrive as JSON.
def _is_structured(annotation: Any) -> bool:
    if type(None) in get_args(annotation):  # an optional object: Model | None
        annotation = next(a for a in get_args(annotation) if a is not type(None))
    return get_origin(annotation) is list or (isinstance(annotation, type) and issubclass(annotation, BaseModel))


# Pulumi.yaml sets it for every stack; a stack file may only widen it. Without
# it a Kubernetes object that lost its explicit provider would go to whatever
# cluster the deployer's kubeconfig names.
DISABLE_DEFAULT_PROVIDERS = "pulumi:disable-default-providers"

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
        elif full_key == DISABLE_DEFAULT_PROVIDERS:
            problems += _default_provider_problems(value)
        elif namespace not in KNOWN_NAMESPACES:
            problems.append(Problem(full_key, _unknown_namespace_fix(namespace, key)))
        elif namespace == NAMESPACE:
            if key not in _TOP_LEVEL_KEYS:
                problems.append(Problem(full_key, unknown_key_fix(key, _TOP_LEVEL_KEYS)))
                continue
            parsed, problem = _decode(full_key, key, value)
            if problem:
                problems.append(problem)
            else:
                data[key] = parsed

    raw_tenants = data.pop("tenants", [])
    fields, field_problems = _validate_fields(data)
    # A misspelt key is reported once, as unknown with its correction, not also as missing.
    reported = {p.key for p in problems} | {
        f"{NAMESPACE}:{close}" for p in problems if (close := suggestion(p.message)) and close not in data
    }
    problems += [p for p in field_problems if p.key not in reported]
    tenants: list[tuple[int, Tenant]] = []
    if not isinstance(raw_tenants, list):
        problems.append(Problem(f"{NAMESPACE}:tenants", "is not a list; write one tenant per '- name: ...' entry"))
        raw_tenants = None
    for index, raw in enumerate(raw_tenants or []):
        tenant, tenant_problems = _validate(Tenant, raw, f"tenants[{index}]")
        problems += tenant_problems
        if tenant:
            tenants.append((index, tenant))

    problems += base_checks(fields) + tenant_checks(fields, tenants, raw_tenants)
    if problems:
        raise ConfigError(problems)
    derived = _derived_prefixes(fields)
    settings = Settings.model_validate({**data, **derived, "tenants": raw_tenants or []})
    settings._explicit_prefixes = frozenset(
        role for role in ("cluster", "egress", "tenant") if f"{role}SubnetPrefix" not in derived
    )
    if extra_checks and (more := extra_checks(settings)):
        raise ConfigError(more)
    return settings


# Config namespaces something in this program reads: its own, the engine's, and
# the providers it creates resources with (a provider reads the keys under its
# package's name: https://www.pulumi.com/docs/iac/concepts/config/). Keys under
# any other namespace (a typo such as `egres:`) would be ignored silently.
KNOWN_NAMESPACES = frozenset({NAMESPACE, "pulumi", "aws", "eks", "kubernetes"})


def _unknown_namespace_fix(namespace: str, key: str) -> str:
    close = difflib.get_close_matches(namespace, sorted(KNOWN_NAMESPACES), n=1)
    hint = (f"did you mean '{close[0]}:{key}'?" if close
            else f"this program reads {', '.join(f'{n}:' for n in sorted(KNOWN_NAMESPACES))} only")
    return f"unknown config namespace {namespace!r}: Pulumi would ignore this key; {hint}"


def _derived_prefixes(fields: Partial) -> dict[str, int]:
    """Subnet prefixes the stack file leaves unset, from the VPC's size. Tenant
    subnets carved from another range (private-nat's tenantCidr) are sized from
    that range's instead, by the address plan."""
    vpc = default_sizes(fields.vpc_cidr.prefixlen)
    derived = {"clusterSubnetPrefix": vpc.cluster, "egressSubnetPrefix": vpc.egress, "tenantSubnetPrefix": vpc.tenant}
    return {key: value for key, value in derived.items() if fields[to_snake(key)] is None}


@cache
def _field_adapter(name: str) -> TypeAdapter:
    field = Settings.model_fields[name]
    if not field.metadata:
        return TypeAdapter(field.annotation)
    return TypeAdapter(Annotated[(field.annotation, *field.metadata)])


def _validate_fields(data: dict[str, Any]) -> tuple[Partial, list[Problem]]:
    values, problems = Partial(), []
    for name, field in Settings.model_fields.items():
        alias = field.alias or name
        if name == "tenants":
            continue
        if alias not in data:
            if field.is_required():
                problems.append(Problem(config_key("", (alias,)), REQUIRED))
            else:
                values[name] = field.get_default(call_default_factory=True)
            continue
        try:
            values[name] = _field_adapter(name).validate_python(data[alias])
        except ValidationError as error:
            problems += [describe(Settings, {**e, "loc": (alias, *e["loc"])}, "") for e in error.errors()]
    return values, problems


def _decode(full_key: str, key: str, value: Any) -> tuple[Any, Problem | None]:
    if key in _STRUCTURED and isinstance(value, str):
        try:
            return json.loads(value), None
        except json.JSONDecodeError as error:
            if value.lstrip()[:1] in ("[", "{"):
                return None, Problem(full_key, f"is not valid JSON/YAML ({error.msg}); check the stack file")
    return value, None  # a plain string where a list belongs: the model names the type


def _default_provider_problems(value: Any) -> list[Problem]:
    packages = value
    if isinstance(value, str):
        try:
            packages = json.loads(value) if value else []
        except json.JSONDecodeError:
            packages = None
    if isinstance(packages, list) and ({"kubernetes", "*"} & set(packages)):
        return []
    return [Problem(
        DISABLE_DEFAULT_PROVIDERS,
        f"must list kubernetes (got {value!r}), so every Kubernetes object goes to this stack's cluster and "
        "never to the deployer's kubeconfig; remove the key from the stack file (Pulumi.yaml sets "
        "[kubernetes]) or add kubernetes to the list",
    )]


def _validate(model: type[BaseModel], raw: Any, prefix: str) -> tuple[Any, list[Problem]]:
    try:
        return model.model_validate(raw), []
    except ValidationError as error:
        return None, [describe(model, e, prefix) for e in error.errors()]
