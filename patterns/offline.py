"""The offline engine: runs this Pulumi program in-process under mocks for one
stack file and records the whole resource graph, with no AWS credentials and no
Pulumi CLI. The tests and the `python -m patterns` commands use it.

Config is fed to the program the way the CLI does it (Pulumi.yaml's defaults
and other namespaces' values applied, every value a string, objects as JSON),
so the program cannot tell the difference. Mocks are strict: an unknown provider call is an error.
"""

from __future__ import annotations

import json
import logging
import math
import runpy
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import pulumi
import yaml
from google.protobuf import json_format
from pulumi.runtime import mocks as pulumi_mocks
from pulumi.runtime import rpc
from pulumi.runtime.config import set_all_config
from pulumi.runtime.proto import resource_pb2
from pulumi.runtime.settings import SETTINGS, get_project, get_root_resource, get_stack, reset_options
from pulumi.runtime.stack import run_pulumi_func
from pulumi.runtime.sync_await import _ensure_event_loop, _sync_await

from .plan import Plan
from .program import plan_from_config
from .settings import NAMESPACE, ConfigError, Problem
from .settings.aws_rules import partition_of

ROOT = Path(__file__).resolve().parent.parent
STACKS_DIR = ROOT / "stacks"
PROJECT_FILE = ROOT / "Pulumi.yaml"
ACCOUNT = "111122223333"
DISABLE_DEFAULT_PROVIDERS = "pulumi:disable-default-providers"

_SIG = rpc._special_sig_key
_RESOURCE_SIG = rpc._special_resource_sig
_SECRET_SIG = rpc._special_secret_sig
_UNKNOWN = rpc.UNKNOWN


@dataclass(frozen=True)
class Options:
    """The resource options the engine acts on, as the RegisterResource request
    carries them. `aliases` are resolved to URNs the way the engine resolves
    alias specs (unset fields default to the resource's own name, type and parent)."""

    aliases: tuple[str, ...] = ()
    protect: bool = False
    ignore_changes: tuple[str, ...] = ()
    replace_on_changes: tuple[str, ...] = ()
    retain_on_delete: bool = False
    delete_before_replace: bool = False
    deleted_with: str = ""

    def to_json(self) -> dict[str, Any]:
        """Only the options that are set, camelCase as in the request."""
        values = {
            "aliases": list(self.aliases),
            "protect": self.protect,
            "ignoreChanges": list(self.ignore_changes),
            "replaceOnChanges": list(self.replace_on_changes),
            "retainOnDelete": self.retain_on_delete,
            "deleteBeforeReplace": self.delete_before_replace,
            "deletedWith": self.deleted_with,
        }
        return {key: value for key, value in values.items() if value}


@dataclass(frozen=True)
class RecordedResource:
    urn: str
    id: str  # the mock's physical id, which other resources' inputs refer to
    type: str
    name: str
    parent: str
    custom: bool
    remote: bool
    provider: str
    inputs: dict[str, Any]
    dependencies: tuple[str, ...]
    property_dependencies: dict[str, tuple[str, ...]]
    options: Options = Options()

    def to_json(self) -> dict[str, Any]:
        return {
            "urn": self.urn,
            "type": self.type,
            "name": self.name,
            "parent": self.parent,
            "custom": self.custom,
            "provider": self.provider,
            "inputs": self.inputs,
            "dependencies": list(self.dependencies),
            "propertyDependencies": {key: list(urns) for key, urns in self.property_dependencies.items() if urns},
            "options": self.options.to_json(),
        }


@dataclass
class Graph:
    plan: Plan
    resources: list[RecordedResource] = field(default_factory=list)
    outputs: dict[str, Any] = field(default_factory=dict)
    # What the program logged through the engine (`pulumi.log.*`), as (level, message).
    diagnostics: list[tuple[str, str]] = field(default_factory=list)
    invokes: list[tuple[str, dict[str, Any]]] = field(default_factory=list)  # (token, args) the program called

    def by_type(self, type_: str) -> list[RecordedResource]:
        return [r for r in self.resources if r.type == type_]

    def get(self, type_: str, name: str) -> RecordedResource:
        matches = [r for r in self.resources if r.type == type_ and r.name == name]
        if len(matches) != 1:
            raise KeyError(f"{len(matches)} resources of type {type_} named {name}")
        return matches[0]

    def by_urn(self) -> dict[str, RecordedResource]:
        return {r.urn: r for r in self.resources}

    def by_id(self, resource_id: str) -> RecordedResource:
        (match,) = [r for r in self.resources if r.custom and r.id == resource_id]
        return match

    def to_json(self) -> dict[str, Any]:
        return {
            "stack": self.plan.stack,
            "pattern": self.plan.settings.pattern,
            "resources": [r.to_json() for r in self.resources],
            "allowList": self.plan.allow_list_json(),
            "outputs": self.outputs,
            "warnings": list(self.plan.warnings),
        }


# --- reading stack files the way the CLI does -----------------------------------


def stack_path(stack: str) -> Path:
    return STACKS_DIR / f"Pulumi.{stack}.yaml"


def stack_names() -> list[str]:
    return sorted(p.name[len("Pulumi."):-len(".yaml")] for p in STACKS_DIR.glob("Pulumi.*.yaml"))


def shipped_stacks() -> list[str]:
    """The stacks this repository ships: one per pattern, named after it, and
    "mixed", whose tenants choose their own patterns. Any
    other stack file in stacks/ is a user's own, which checks of the shipped
    stacks (URN snapshots, docs) leave alone."""
    from .settings import PATTERN_NAMES

    return sorted([*PATTERN_NAMES, "mixed"])


class _StackFileLoader(yaml.SafeLoader):
    """Safe YAML that records a key given twice in one mapping: PyYAML would keep
    the last value silently, so one of the two settings would vanish unseen."""

    def __init__(self, stream: str):
        super().__init__(stream)
        self.duplicates: list[tuple[Any, int, int]] = []  # key, its line, the first one's line

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        first_line: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, (str, int, float, bool)) and key in first_line:
                self.duplicates.append((key, key_node.start_mark.line + 1, first_line[key]))
            first_line.setdefault(key, key_node.start_mark.line + 1)
        return super().construct_mapping(node, deep=deep)


def _load_stack_yaml(path: Path) -> Any:
    loader = _StackFileLoader(path.read_text())
    try:
        document = loader.get_single_data()
    finally:
        loader.dispose()
    if loader.duplicates:
        raise ConfigError(
            Problem(key if isinstance(key, str) and ":" in key else str(path),
                    f"{key!r} is given twice in {path.name} (lines {first} and {line}); YAML would silently "
                    "keep only the last: delete one")
            for key, line, first in loader.duplicates
        )
    return document


def read_stack_file(path: Path) -> dict[str, Any]:
    """The stack's `config:` map, native YAML values. Malformed files are a ConfigError."""
    try:
        document = _load_stack_yaml(path)
    except FileNotFoundError:
        raise ConfigError([Problem(str(path), "no such stack file; see `ls stacks/`")]) from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError([Problem(str(path), f"is not valid YAML{where}: {getattr(error, 'problem', error)}")]) from None
    if not isinstance(document, dict) or not isinstance(document.get("config"), dict):
        raise ConfigError([Problem(str(path), "needs a top-level 'config:' mapping of keys such as egress:pattern")])
    return dict(document["config"])


@cache
def project_file() -> dict[str, Any]:
    """Pulumi.yaml, read once per process."""
    return yaml.safe_load(PROJECT_FILE.read_text())


def project_config() -> dict[str, Any]:
    """What Pulumi.yaml gives every stack, keyed as the CLI keys it: the
    project's own keys' defaults and other namespaces' values (such as
    pulumi:disable-default-providers). A stack file's own value wins."""
    project = project_file()
    config = {}
    for key, spec in (project.get("config") or {}).items():
        if ":" in key and not key.startswith(f"{project['name']}:"):
            config[key] = spec["value"] if isinstance(spec, dict) else spec
        elif isinstance(spec, dict) and "default" in spec:
            config[f"{project['name']}:{key}"] = spec["default"]
    return config


def engine_config(stack_config: Mapping[str, Any]) -> dict[str, str]:
    """Stack config as the engine hands it to a program: defaults applied,
    scalars as strings, lists and objects as JSON."""
    merged = {**project_config(), **stack_config}

    def encode(value: Any) -> str:
        if isinstance(value, str):
            return value
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, (int, float)):
            return str(value)
        return json.dumps(value)

    return {key: encode(value) for key, value in merged.items()}


# --- the mock engine -------------------------------------------------------------


def _plain(value: Any, refs: set[str]) -> Any:
    """A wire value as plain JSON: resource references become their URN (and are
    collected), secrets their value, integral numbers ints."""
    if isinstance(value, dict):
        sig = value.get(_SIG)
        if sig == _RESOURCE_SIG:
            refs.add(value["urn"])
            return value["urn"]
        if sig == _SECRET_SIG:
            return _plain(value.get("value"), refs)
        return {k: _plain(v, refs) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v, refs) for v in value]
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    if value == _UNKNOWN:
        return "<unknown>"
    return value


READ_STACK_OUTPUTS = "pulumi:pulumi:readStackOutputs"
GET_TRANSIT_GATEWAY = "aws:ec2transitgateway/getTransitGateway:getTransitGateway"
GET_CALLER_IDENTITY = "aws:index/getCallerIdentity:getCallerIdentity"
# Transit gateways another account shares with this one: id -> (owner, auto-accepts).
# Any other transit gateway belongs to ACCOUNT.
SHARED_TRANSIT_GATEWAYS: dict[str, tuple[str, bool]] = {}


class _Mocks(pulumi_mocks.Mocks):
    """Plausible provider answers for the types this program reads outputs from."""

    def __init__(self, monitor: RecordingMonitor, region: str, previous_outputs: Mapping[str, Any]):
        self.monitor = monitor
        self.region = region
        self.partition = partition_of(region) or "aws"  # ARNs the provider would return
        self.previous_outputs = previous_outputs
        self.invokes: list[tuple[str, dict[str, Any]]] = []

    def call(self, args: pulumi_mocks.MockCallArgs):
        self.invokes.append((args.token, dict(args.args)))
        if args.token == READ_STACK_OUTPUTS:
            # The stack's own outputs from its last deploy: a saved plan's, or none.
            return {"name": args.args["name"], "outputs": dict(self.previous_outputs), "secretOutputNames": []}
        if args.token == GET_CALLER_IDENTITY:
            return {"accountId": ACCOUNT, "arn": f"arn:{self.partition}:iam::{ACCOUNT}:role/deployer", "id": ACCOUNT,
                    "userId": "AROAEXAMPLE:deployer"}
        if args.token == GET_TRANSIT_GATEWAY:
            owner, auto_accept = SHARED_TRANSIT_GATEWAYS.get(args.args["id"], (ACCOUNT, False))
            return {"id": args.args["id"], "ownerId": owner,
                    "autoAcceptSharedAttachments": "enable" if auto_accept else "disable"}
        raise NotImplementedError(f"the offline engine has no mock for the call {args.token}")

    def new_resource(self, args: pulumi_mocks.MockResourceArgs):
        inputs = dict(args.inputs)
        rid = f"{args.typ.rsplit(':', 1)[-1].lower()}-{args.name}"  # e.g. subnet-payments-eu-west-1a
        arn = f"arn:{self.partition}:{args.typ.split(':')[1].split('/')[0]}:{self.region}:{ACCOUNT}:{args.name}"
        state = {**inputs, "id": rid, "arn": arn}
        state.setdefault("name", args.name)
        if args.typ == "eks:index:Cluster":
            state.update(self._eks_cluster(args.name))
        elif args.typ == "aws:ec2/launchTemplate:LaunchTemplate":
            state["latestVersion"] = 1
        elif args.typ == "aws:iam/role:Role":
            state["arn"] = f"arn:{self.partition}:iam::{ACCOUNT}:role/{args.name}"
        return rid, state

    def _eks_cluster(self, name: str) -> dict[str, Any]:
        endpoint = f"https://{name.upper()}.gr7.{self.region}.eks.amazonaws.com"
        issuer = f"oidc.eks.{self.region}.amazonaws.com/id/{name.upper()}"
        cluster_urn = self.monitor.make_urn(
            self.monitor.component_urn(name), "aws:eks/cluster:Cluster", f"{name}-eksCluster"
        )
        self.monitor.resources[cluster_urn] = pulumi_mocks.MockMonitor.ResourceRegistration(
            cluster_urn,
            f"{name}-eksCluster",
            {
                "name": f"{name}-eksCluster",
                "arn": f"arn:{self.partition}:eks:{self.region}:{ACCOUNT}:cluster/{name}-eksCluster",
                "endpoint": endpoint,
                "vpcConfig": {"clusterSecurityGroupId": f"sg-{name}-cluster"},
                "identities": [{"oidcs": [{"issuer": f"https://{issuer}"}]}],
            },
        )
        kubeconfig = {"apiVersion": "v1", "clusters": [{"name": name, "cluster": {"server": endpoint}}]}
        return {
            "eksCluster": {_SIG: _RESOURCE_SIG, "urn": cluster_urn, "id": f"{name}-eksCluster"},
            "kubeconfig": kubeconfig,
            "kubeconfigJson": json.dumps(kubeconfig),
            "oidcProviderArn": f"arn:{self.partition}:iam::{ACCOUNT}:oidc-provider/{issuer}",
            "oidcProviderUrl": f"https://{issuer}",
            "oidcIssuer": issuer,
        }


def qualified_type(parent_urn: str, type_: str) -> str:
    """The type part of a child's URN: the engine qualifies it by its parent's
    whole type chain (a child of the stack keeps its own type)."""
    if parent_urn:
        chain = parent_urn.split("::")[2]
        if chain != "pulumi:pulumi:Stack":
            return f"{chain}${type_}"
    return type_


class RecordingMonitor(pulumi_mocks.MockMonitor):
    """The stock mock monitor, recording every registration with its parent,
    provider and dependencies (explicit, from Output inputs, and resource
    references passed into remote components)."""

    def __init__(self, region: str, disabled_default_providers: frozenset[str] = frozenset(),
                 previous_outputs: Mapping[str, Any] | None = None):
        super().__init__(_Mocks(self, region, previous_outputs or {}))
        self.recorded: list[RecordedResource] = []
        self._components: dict[str, str] = {}
        self.disabled_default_providers = disabled_default_providers

    def component_urn(self, name: str) -> str:
        return self._components[name]

    def make_urn(self, parent: str, type_: str, name: str) -> str:
        """As the engine makes it (the stock mock keeps only the last link of
        the parent's type chain, which would hide a URN change when a component
        moves under another parent)."""
        return f"urn:pulumi:{get_stack()}::{get_project()}::{qualified_type(parent, type_)}::{name}"

    def alias_urns(self, request) -> tuple[str, ...]:
        """The request's aliases as URNs, as the engine resolves alias specs."""
        urns = []
        for alias in request.aliases:
            if alias.urn:
                urns.append(alias.urn)
                continue
            spec = alias.spec
            parent = "" if spec.noParent else (spec.parentUrn or request.parent)
            urn = self.make_urn(parent, spec.type or request.type, spec.name or request.name)
            stack, project = spec.stack or get_stack(), spec.project or get_project()
            urns.append(urn.replace(f"urn:pulumi:{get_stack()}::{get_project()}::", f"urn:pulumi:{stack}::{project}::", 1))
        return (*urns, *request.aliasURNs)

    def deny_default_provider(self, request) -> None:
        """As the engine does under pulumi:disable-default-providers: a resource
        of a listed package that names no provider (itself or through its
        parent's providers) is an error."""
        package = request.type.split(":", 1)[0]
        if (request.custom or request.remote) and not request.provider and package != "pulumi" and (
            package in self.disabled_default_providers or "*" in self.disabled_default_providers
        ):
            raise ValueError(
                f"Default provider for '{package}' disabled. '{request.type}' ({request.name}) must use an "
                f"explicit provider: pass it in the `providers` option of a parent component"
            )

    def RegisterResource(self, request):  # noqa: N802 - gRPC method name
        urn = self.make_urn(request.parent, request.type, request.name)
        if request.type == "pulumi:pulumi:Stack":
            return resource_pb2.RegisterResourceResponse(urn=urn)
        self.deny_default_provider(request)
        _ensure_event_loop()
        refs: set[str] = set()
        inputs = _plain(json_format.MessageToDict(request.object), refs)
        property_dependencies = {
            key: tuple(sorted(deps.urns)) for key, deps in request.propertyDependencies.items()
        }
        dependencies = set(request.dependencies) | refs
        for deps in property_dependencies.values():
            dependencies.update(deps)
        if request.remote:
            self._components[request.name] = urn
        resource_id, state = self.mocks.new_resource(
            pulumi_mocks.MockResourceArgs(
                typ=request.type, name=request.name, inputs=inputs, provider=request.provider,
                resource_id=request.importId, custom=request.custom,
            )
        )
        self.recorded.append(
            RecordedResource(
                urn=urn,
                id=resource_id,
                type=request.type,
                name=request.name,
                parent=request.parent,
                custom=request.custom,
                remote=request.remote,
                provider=request.provider.rsplit("::", 1)[0] if request.provider else "",  # "<urn>::<id>"
                inputs=inputs,
                dependencies=tuple(sorted(dependencies)),
                property_dependencies=property_dependencies,
                options=Options(
                    aliases=self.alias_urns(request),
                    protect=request.protect,
                    ignore_changes=tuple(request.ignoreChanges),
                    replace_on_changes=tuple(request.replaceOnChanges),
                    retain_on_delete=request.retainOnDelete,
                    delete_before_replace=request.deleteBeforeReplace,
                    deleted_with=request.deletedWith,
                ),
            )
        )
        wire = _sync_await(rpc.serialize_properties(state, {}))
        self.resources[urn] = pulumi_mocks.MockMonitor.ResourceRegistration(urn, resource_id, state)
        return resource_pb2.RegisterResourceResponse(urn=urn, id=resource_id, object=wire)


class _DiagnosticsLogger(logging.Logger):
    """Collects what the program logs, as the engine would show it once under
    `pulumi up`; the plan command prints the plan's warnings itself."""

    def __init__(self, sink: list[tuple[str, str]]):
        super().__init__("pulumi-program", logging.DEBUG)
        self.propagate = False
        self.sink = sink

    def handle(self, record: logging.LogRecord) -> None:
        self.sink.append((record.levelname.lower(), record.getMessage()))


def disabled_default_providers(config: Mapping[str, str]) -> frozenset[str]:
    """The packages of pulumi:disable-default-providers (engine form: a JSON list)."""
    value = config.get(DISABLE_DEFAULT_PROVIDERS, "")
    return frozenset(json.loads(value)) if value else frozenset()


def run(stack: str, stack_config: Mapping[str, Any], previous_outputs: Mapping[str, Any] | None = None) -> Graph:
    """Plan and register one stack under mocks. `previous_outputs`: the stack's
    outputs from its last deploy (a saved plan's `outputs`), which the program
    reads back as it does under `pulumi up`; none for a first deploy. Raises
    ConfigError before any resource is registered when the config is invalid."""
    config = engine_config(stack_config)
    previous_outputs = dict(previous_outputs or {})
    plan = plan_from_config(stack, config, previous_outputs)
    project = project_file()["name"]
    reset_options(project=project, stack=stack)
    monitor = RecordingMonitor(plan.settings.region, disabled_default_providers(config), previous_outputs)
    graph = Graph(plan)
    pulumi.runtime.set_mocks(monitor.mocks, project=project, stack=stack, preview=False, monitor=monitor,
                             logger=_DiagnosticsLogger(graph.diagnostics), organization="organization")
    set_all_config(config)
    SETTINGS.rpc_manager.clear()
    SETTINGS.outputs.clear()

    def program() -> None:
        # The very entry point `pulumi up` runs, so the offline plan is the real program.
        runpy.run_path(str(ROOT / "__main__.py"), run_name="__main__")
        exports = get_root_resource().outputs
        graph.outputs = _sync_await(pulumi.Output.from_input(exports).future())

    _sync_await(run_pulumi_func(program))
    graph.resources = monitor.recorded
    graph.invokes = monitor.mocks.invokes
    return graph


def stack_file(stack: str | None, config_file: str | Path | None) -> tuple[str, dict[str, Any]]:
    """The stack's name and its `config:` map, by name (stacks/) or path."""
    path = Path(config_file) if config_file else stack_path(stack or "")
    return stack or path.name.removeprefix("Pulumi.").removesuffix(".yaml"), read_stack_file(path)


def read_previous_outputs(path: str | Path | None) -> dict[str, Any]:
    """The stack outputs in a saved `plan --format json` (or in `pulumi stack
    output --json`): what the stack's last deploy exported. None: a first deploy."""
    if path is None:
        return {}
    path = Path(path)
    try:
        document = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError([Problem(str(path), "no such file; save one with `plan --format json > FILE`")]) from None
    except json.JSONDecodeError as error:
        raise ConfigError([Problem(str(path), f"is not JSON ({error.msg}); pass a saved `plan --format json`")]) from None
    if not isinstance(document, dict):
        raise ConfigError([Problem(str(path), "is not a saved plan or a stack's outputs")])
    outputs = document.get("outputs", document)
    if not isinstance(outputs, dict):
        raise ConfigError([Problem(str(path), "its 'outputs' is not a mapping of stack outputs")])
    return outputs


def run_stack(stack: str | None = None, config_file: str | Path | None = None,
              previous: str | Path | None = None) -> Graph:
    return run(*stack_file(stack, config_file), read_previous_outputs(previous))


def plan_stack(stack: str | None = None, config_file: str | Path | None = None,
               previous: str | Path | None = None) -> Plan:
    """The plan alone (settings, addresses, allow-list), without registering resources."""
    name, stack_config = stack_file(stack, config_file)
    return plan_from_config(name, engine_config(stack_config), read_previous_outputs(previous))


__all__ = ["Graph", "RecordedResource", "run", "run_stack", "plan_stack", "shipped_stacks", "stack_names", "read_stack_file", "NAMESPACE"]
