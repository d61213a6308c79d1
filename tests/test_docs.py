"""README, Pulumi.yaml, stacks and code agree."""

from __future__ import annotations

import re
from pathlib import Path
from typing import get_args, get_origin

import yaml
from pydantic import BaseModel

from patterns import offline
from patterns.registry import PATTERNS
from patterns.settings import PATTERN_NAMES, Settings, Tenant, _field_adapter

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def test_pattern_table_matches_the_registry():
    rows = re.findall(r"^\| `([a-z-]+)` \|.*\| (\w+) \|$", README, re.MULTILINE)
    assert [name for name, _ in rows] == list(PATTERN_NAMES)
    for name, status in rows:
        assert (status == "available") == (name in PATTERNS), name


def test_readme_commands_are_what_ci_runs():
    blocks = re.findall(r"```sh\n(.*?)```", README, re.DOTALL)
    setup, test = blocks[0].strip().splitlines()
    assert setup.startswith("python3 -m venv venv && venv/bin/pip install -r requirements.txt && ")
    assert "python -m patterns plan --stack subnet-cidr" in setup
    ci = (ROOT / ".ci" / "run").read_text()
    assert test in ci
    assert "pip install" in ci and "-r requirements.txt" in ci


def _holds_objects(annotation) -> bool:
    if type(None) in get_args(annotation):  # an optional object: Model | None
        annotation = next(a for a in get_args(annotation) if a is not type(None))
    inner = get_args(annotation)[0] if get_origin(annotation) is list else annotation
    return isinstance(inner, type) and issubclass(inner, BaseModel)


def test_config_keys_are_declared_and_documented():
    project = yaml.safe_load((ROOT / "Pulumi.yaml").read_text())
    declared = {key for key in project["config"] if ":" not in key}
    fields = {f.alias for n, f in Settings.model_fields.items() if n != "region"}
    objects = {f.alias for f in Settings.model_fields.values() if _holds_objects(f.annotation)}
    assert declared == fields - objects
    comment = (ROOT / "Pulumi.yaml").read_text()
    for key in objects:
        assert f"egress:{key}" in comment
    # Pulumi.yaml cannot declare a tenant's keys, so its comment lists them all.
    tenants = comment[comment.index("egress:tenants"):comment.index("egress:systemNodes")]
    for field in Tenant.model_fields.values():
        assert re.search(rf"\b{field.alias}\b", tenants), field.alias
    for key in fields:
        assert f"`egress:{key}`" in README, key
    for key, spec in project["config"].items():
        if ":" in key:
            # Another namespace's key: the CLI accepts only a `value` for it
            # (a type or default is an error when the project loads).
            assert set(spec) == {"value"}, key
            continue
        assert spec.get("description"), key
        assert spec["type"] in ("string", "integer", "boolean", "array")


def test_declared_defaults_are_valid_settings():
    project = yaml.safe_load((ROOT / "Pulumi.yaml").read_text())
    for key, spec in project["config"].items():
        if "default" in spec:
            name = next(n for n, f in Settings.model_fields.items() if f.alias == key)
            _field_adapter(name).validate_python(spec["default"])


def test_every_shipped_stack_names_its_own_pattern():
    # The shipped stacks by name: a user's own stack file (any name) is welcome.
    for stack in PATTERN_NAMES:
        config = yaml.safe_load(offline.stack_path(stack).read_text())["config"]
        assert config["egress:pattern"] == stack
        assert len(config["egress:tenants"]) >= 2
        assert len(config["egress:availabilityZones"]) >= 2


def test_readme_names_the_supported_kubernetes_window_and_the_autoscaler_chart():
    from patterns.versions import CLUSTER_AUTOSCALER_CHART, SUPPORTED_MINORS

    assert f"`{SUPPORTED_MINORS[0]}`-`{SUPPORTED_MINORS[-1]}`" in README
    assert f"Autoscaler (chart {CLUSTER_AUTOSCALER_CHART}," in README
    default = yaml.safe_load((ROOT / "Pulumi.yaml").read_text())["config"]["kubernetesVersion"]["default"]
    assert default in SUPPORTED_MINORS


def test_the_layout_names_every_module():
    layout = README[README.index("## Layout"):]
    layout = layout[:layout.index("```", layout.index("```") + 3)]
    modules = [p for p in (ROOT / "patterns").iterdir()
               if p.name != "__init__.py" and (p.suffix == ".py" or (p.is_dir() and p.name != "__pycache__"))]
    for module in modules:
        assert f"patterns/{module.name}" in layout, module.name
