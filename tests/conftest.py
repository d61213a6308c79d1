"""Shared helpers: stack configs, the offline engine, and graph queries."""

from __future__ import annotations

import copy
from functools import lru_cache

import pytest

from patterns import offline
from patterns.program import plan_from_config
from patterns.settings import ConfigError

EKS = "eks:index:Cluster"
VPC = "aws:ec2/vpc:Vpc"
SUBNET = "aws:ec2/subnet:Subnet"
NODE_GROUP = "aws:eks/nodeGroup:NodeGroup"
ROUTE = "aws:ec2/route:Route"
NETPOL = "kubernetes:networking.k8s.io/v1:NetworkPolicy"
NAT = "aws:ec2/natGateway:NatGateway"
RTA = "aws:ec2/routeTableAssociation:RouteTableAssociation"
ADDON = "aws:eks/addon:Addon"
RELEASE = "kubernetes:helm.sh/v3:Release"


def stack_config(stack: str) -> dict:
    return copy.deepcopy(offline.read_stack_file(offline.stack_path(stack)))


def config_with(stack: str = "subnet-cidr", **overrides) -> dict:
    """A shipped stack's config with `egress:` keys replaced (None removes a key)."""
    config = stack_config(stack)
    for key, value in overrides.items():
        full = key if ":" in key else f"egress:{key}"
        if value is None:
            config.pop(full, None)
        else:
            config[full] = value
    return config


def problems(config: dict, previous: dict | None = None) -> list[str]:
    """Every problem the program reports for a config (and the stack's previous
    outputs), as the user sees them."""
    try:
        plan_from_config("test", offline.engine_config(config), previous)
    except ConfigError as error:
        return [str(p) for p in error.problems]
    return []


def assert_problem(config: dict, key: str, *fragments: str) -> None:
    found = problems(config)
    matching = [p for p in found if p.startswith(f"{key}:") and all(f in p for f in fragments)]
    assert matching, f"no problem for {key} containing {fragments}; got {found}"


@lru_cache(maxsize=None)
def planned(stack: str) -> offline.Graph:
    return offline.run_stack(stack)


@pytest.fixture(scope="module")
def graph(request) -> offline.Graph:
    """The graph of the stack named by the test module's STACK."""
    return planned(request.module.STACK)
