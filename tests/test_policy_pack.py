"""The CrossGuard policy pack (policy/): every rule with a violating and a
passing input, and every stack file's planned graph passes the whole pack."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml
from pulumi_policy import (
    PolicyCustomTimeouts,
    PolicyResource,
    PolicyResourceOptions,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)

from patterns import offline, tenancy
from patterns.settings import PATTERN_NAMES
from policy import egress_guardrails as pack

ROOT = Path(__file__).resolve().parent.parent
POLICY = {p.name: p for p in pack.POLICIES}


def _opts() -> PolicyResourceOptions:
    return PolicyResourceOptions(protect=False, ignore_changes=[], delete_before_replace=None, aliases=[],
                                 custom_timeouts=PolicyCustomTimeouts(0, 0, 0), additional_secret_outputs=[],
                                 parent=None)


def check_resource(policy: str, type_: str, props: dict) -> list[str]:
    violations: list[str] = []
    args = ResourceValidationArgs(resource_type=type_, props=props, urn=f"urn:{type_}", name="r", opts=_opts(),
                                  provider=None)
    POLICY[policy].validate(args, lambda message, urn=None: violations.append(message))
    return violations


def resource(type_: str, name: str, props: dict, **links: list[PolicyResource]) -> PolicyResource:
    return PolicyResource(resource_type=type_, props=props, urn=f"urn:{type_}::{name}", name=name, opts=_opts(),
                          provider=None, parent=None, dependencies=[r for rs in links.values() for r in rs],
                          property_dependencies=dict(links))


def check_stack(policy: str, resources: list[PolicyResource]) -> list[str]:
    violations: list[str] = []
    POLICY[policy].validate(StackValidationArgs(resources=resources),
                            lambda message, urn=None: violations.append(message))
    return violations


# --- the pack itself -----------------------------------------------------------------


def test_the_pack_is_complete_and_mandatory():
    assert set(POLICY) == {"eks-private-endpoint", "eks-secrets-encryption", "imdsv2-required",
                           "tenant-and-gateway-taints", "egress-paths-multi-az", "nat-gateway-per-az"}
    assert all(p.enforcement_level.value == "mandatory" for p in pack.POLICIES)
    assert (pack.TENANT_KEY, pack.GATEWAY_KEY) == (tenancy.TENANT_KEY, tenancy.GATEWAY_KEY)
    project = yaml.safe_load((ROOT / "policy" / "PulumiPolicy.yaml").read_text())
    assert project["runtime"]["name"] == "python"
    pins = dict(line.split("==") for line in (ROOT / "policy" / "requirements.txt").read_text().split()
                if "==" in line)
    root_pins = dict(line.split("==") for line in (ROOT / "requirements.txt").read_text().split() if "==" in line)
    assert pins == {"pulumi": root_pins["pulumi"], "pulumi-policy": root_pins["pulumi-policy"]}
    assert "pulumi preview --policy-pack policy" in (ROOT / "policy" / "README.md").read_text()
    assert "PolicyPack(" in (ROOT / "policy" / "__main__.py").read_text()


# --- control plane ---------------------------------------------------------------------

CLUSTER = {
    "vpcConfig": {"endpointPrivateAccess": True, "endpointPublicAccess": False, "subnetIds": ["a", "b"]},
    "encryptionConfig": {"provider": {"keyArn": "arn:aws:kms:eu-west-1:111122223333:key/k"}, "resources": ["secrets"]},
}


def _cluster(**vpc) -> dict:
    props = copy.deepcopy(CLUSTER)
    props["vpcConfig"].update(vpc)
    return props


@pytest.mark.parametrize(
    ("vpc", "violations"),
    [
        ({}, 0),
        ({"endpointPublicAccess": True, "publicAccessCidrs": ["203.0.113.0/24"]}, 0),
        ({"endpointPrivateAccess": False}, 1),
        ({"endpointPublicAccess": True, "publicAccessCidrs": ["0.0.0.0/0"]}, 1),
        ({"endpointPublicAccess": True}, 1),
    ],
)
def test_private_endpoint(vpc, violations):
    found = check_resource("eks-private-endpoint", pack.EKS_CLUSTER, _cluster(**vpc))
    assert len(found) == violations
    assert all("endpoint" in m for m in found)


def test_private_endpoint_ignores_other_types():
    assert check_resource("eks-private-endpoint", pack.NODE_GROUP, {"vpcConfig": {}}) == []


@pytest.mark.parametrize(
    ("encryption", "ok"),
    [
        (CLUSTER["encryptionConfig"], True),
        ([CLUSTER["encryptionConfig"]], True),  # the list form of older providers
        ({"provider": {"keyArn": "arn:k"}, "resources": []}, False),
        ({"resources": ["secrets"]}, False),
        (None, False),
    ],
)
def test_secrets_encryption(encryption, ok):
    props = {**CLUSTER, "encryptionConfig": encryption}
    found = check_resource("eks-secrets-encryption", pack.EKS_CLUSTER, props)
    assert (found == []) is ok
    assert all("KMS" in m for m in found)


# --- nodes -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("metadata", "violations"),
    [
        ({"httpEndpoint": "enabled", "httpTokens": "required", "httpPutResponseHopLimit": 1}, []),
        ({"httpTokens": "optional", "httpPutResponseHopLimit": 1}, ["IMDSv1"]),
        ({"httpTokens": "required", "httpPutResponseHopLimit": 2}, ["hop"]),
        ({}, ["IMDSv1", "hop"]),
    ],
)
def test_imdsv2_on_launch_templates(metadata, violations):
    found = check_resource("imdsv2-required", pack.LAUNCH_TEMPLATE, {"metadataOptions": metadata})
    assert len(found) == len(violations)
    for message, word in zip(found, violations):
        assert word in message.replace("HopLimit", "hop")


def test_node_groups_use_a_launch_template_and_no_ssh():
    good = {"launchTemplate": {"id": "lt-1", "version": "1"}}
    assert check_resource("imdsv2-required", pack.NODE_GROUP, good) == []
    assert "launch template" in check_resource("imdsv2-required", pack.NODE_GROUP, {})[0]
    ssh = {**good, "remoteAccess": {"ec2SshKey": "k"}}
    assert "SSH" in check_resource("imdsv2-required", pack.NODE_GROUP, ssh)[0]


@pytest.mark.parametrize(
    ("labels", "taints", "ok"),
    [
        ({"egress/tenant": "payments"}, [{"key": "egress/tenant", "value": "payments", "effect": "NO_SCHEDULE"}], True),
        ({"egress/tenant": "payments"}, [], False),
        ({"egress/tenant": "payments"}, [{"key": "egress/tenant", "value": "reporting", "effect": "NO_SCHEDULE"}], False),
        ({"egress/tenant": "payments"}, [{"key": "egress/tenant", "value": "payments", "effect": "PREFER_NO_SCHEDULE"}],
         False),
        ({"egress/gateway": "true"}, [{"key": "egress/gateway", "value": "true", "effect": "NO_SCHEDULE"}], True),
        ({"egress/gateway": "true"}, [{"key": "egress/tenant", "value": "x", "effect": "NO_SCHEDULE"}], False),
        ({"egress/role": "system"}, [], True),  # system nodes stay untainted
    ],
)
def test_tenant_and_gateway_node_groups_are_tainted(labels, taints, ok):
    found = check_resource("tenant-and-gateway-taints", pack.NODE_GROUP, {"labels": labels, "taints": taints})
    assert (found == []) is ok
    assert all("taint" in m for m in found)


# --- egress paths ------------------------------------------------------------------------


def _subnets(*azs: str) -> list[PolicyResource]:
    return [resource(pack.SUBNET, f"s-{az}", {"availabilityZone": az}) for az in azs]


def _node_group(subnets, min_size=2, name="tenant") -> PolicyResource:
    return resource(pack.NODE_GROUP, name, {"scalingConfig": {"minSize": min_size}}, subnetIds=subnets)


def _nats(kind: str, *azs: str) -> list[PolicyResource]:
    return [resource(pack.NAT_GATEWAY, f"nat-{kind}-{az}", {"connectivityType": kind}, subnetId=_subnets(az))
            for az in azs]


def test_multi_az_passes_for_spread_node_groups_and_nat_gateways():
    resources = [_node_group(_subnets("a", "b")), *_nats("private", "a", "b"), *_nats("public", "a", "b", "c")]
    assert check_stack("egress-paths-multi-az", resources) == []


@pytest.mark.parametrize(
    ("resources", "words"),
    [
        ([_node_group(_subnets("a", "a"))], ["1 AZ"]),
        ([_node_group(_subnets("a", "b"), min_size=1)], ["minSize"]),
        ([_node_group(_subnets("a", "b")), *_nats("private", "a")], ["private NAT"]),
    ],
)
def test_multi_az_reports_single_az_egress(resources, words):
    found = check_stack("egress-paths-multi-az", resources)
    assert len(found) == len(words)
    assert all(w in m for w, m in zip(words, found))


def test_multi_az_follows_ids_when_there_are_no_property_dependencies():
    subnets = [resource(pack.SUBNET, f"s-{az}", {"id": f"subnet-{az}", "availabilityZone": az}) for az in "ab"]
    group = resource(pack.NODE_GROUP, "g", {"subnetIds": ["subnet-a", "subnet-a"], "scalingConfig": {"minSize": 2}})
    assert "1 AZ" in check_stack("egress-paths-multi-az", [*subnets, group])[0]
    group.props["subnetIds"] = ["subnet-a", "subnet-b"]
    assert check_stack("egress-paths-multi-az", [*subnets, group]) == []


def _routed_azs(route_to: dict[str, str]) -> list[PolicyResource]:
    """Per AZ a subnet, a route table and a default route to the NAT of the AZ `route_to` names."""
    nats = {az: _nats("public", az)[0] for az in set(route_to.values())}
    out: list[PolicyResource] = list(nats.values())
    for az, nat_az in route_to.items():
        table = resource(pack.ROUTE_TABLE, f"rt-{az}", {})
        subnet = _subnets(az)
        out += [table, *subnet,
                resource(pack.ROUTE_TABLE_ASSOCIATION, f"assoc-{az}", {}, subnetId=subnet, routeTableId=[table]),
                resource(pack.ROUTE, f"default-{az}", {"destinationCidrBlock": "0.0.0.0/0"},
                         routeTableId=[table], natGatewayId=[nats[nat_az]])]
    return out


def test_nat_per_az_passes_when_each_az_uses_its_own_nat():
    assert check_stack("nat-gateway-per-az", _routed_azs({"a": "a", "b": "b", "c": "c"})) == []


def test_nat_per_az_reports_a_shared_nat():
    found = check_stack("nat-gateway-per-az", _routed_azs({"a": "a", "b": "a", "c": "c"}))
    assert len(found) == 1
    assert "from b to the NAT gateway in a" in found[0]


# --- the planned stacks pass the pack ------------------------------------------------------


def _policy_resources(graph) -> list[PolicyResource]:
    """The offline graph as the engine hands it to a pack at preview (inputs as
    props, links through property dependencies)."""
    made: dict[str, PolicyResource] = {}
    for r in graph.resources:
        made[r.urn] = PolicyResource(resource_type=r.type, props=r.inputs, urn=r.urn, name=r.name, opts=_opts(),
                                     provider=None, parent=None, dependencies=[], property_dependencies={})
    for r in graph.resources:
        made[r.urn].property_dependencies = {
            key: [made[u] for u in urns if u in made] for key, urns in r.property_dependencies.items()
        }
    return list(made.values())


@pytest.fixture(scope="module", params=PATTERN_NAMES)  # the shipped stacks, by name
def stack_graph(request):
    return offline.run_stack(request.param)


def test_every_stack_passes_the_pack(stack_graph):
    resources = _policy_resources(stack_graph)
    assert {r.resource_type for r in resources} >= {pack.NODE_GROUP, pack.LAUNCH_TEMPLATE, pack.SUBNET}
    for policy in pack.POLICIES:
        if isinstance(policy, StackValidationPolicy):
            assert check_stack(policy.name, resources) == [], policy.name
        else:
            assert isinstance(policy, ResourceValidationPolicy)
            for r in resources:
                assert check_resource(policy.name, r.resource_type, r.props) == [], (policy.name, r.name)


def test_the_stack_rules_see_the_planned_links(stack_graph):
    """Break one link in the planned graph and the pack notices: the checks
    above are not passing for want of data."""
    resources = _policy_resources(stack_graph)
    (system,) = [r for r in resources if r.resource_type == pack.NODE_GROUP and r.name == "egress-system"]
    system.property_dependencies["subnetIds"] = system.property_dependencies["subnetIds"][:1]
    assert len(check_stack("egress-paths-multi-az", resources)) == 1
    if stack_graph.plan.settings.internet_egress == "nat":
        def nat_az(nat):
            return nat.property_dependencies["subnetId"][0].props["availabilityZone"]

        first_az = stack_graph.plan.settings.availability_zones[0]
        (route,) = [r for r in resources if r.resource_type == pack.ROUTE and r.name == f"egress-private-{first_az}-internet"]
        (own,) = route.property_dependencies["natGatewayId"]
        # Point it at a NAT gateway in another AZ (not just any other one: several share an AZ).
        route.property_dependencies["natGatewayId"] = [
            n for n in resources if n.resource_type == pack.NAT_GATEWAY and nat_az(n) != nat_az(own)
        ][:1]
        assert len(check_stack("nat-gateway-per-az", resources)) == 1


def test_the_eks_cluster_as_configured_passes_the_control_plane_rules(stack_graph):
    """pulumi-eks passes these inputs through to aws:eks/cluster:Cluster."""
    (component,) = stack_graph.by_type("eks:index:Cluster")
    inputs = component.inputs
    props = {
        "vpcConfig": {
            "endpointPrivateAccess": inputs["endpointPrivateAccess"],
            "endpointPublicAccess": inputs["endpointPublicAccess"],
            "publicAccessCidrs": inputs.get("publicAccessCidrs"),
        },
        "encryptionConfig": {"provider": {"keyArn": inputs["encryptionConfigKeyArn"]}, "resources": ["secrets"]},
    }
    assert check_resource("eks-private-endpoint", pack.EKS_CLUSTER, props) == []
    assert check_resource("eks-secrets-encryption", pack.EKS_CLUSTER, props) == []
