"""The shared base under every pattern: private, encrypted, highly available,
and identical across patterns so a pattern change never replaces it."""

from __future__ import annotations

import json
from functools import lru_cache

import pytest

from conftest import EKS, NODE_GROUP, ROUTE, SUBNET, VPC, assert_problem, config_with, planned, stack_config
from patterns import offline
from patterns.registry import PATTERNS

STACK = "subnet-cidr"
BASE_KEYS = (
    "aws:region", "egress:availabilityZones", "egress:vpcCidr", "egress:onPremCidrs", "egress:transitGatewayId",
    "egress:internetEgress", "egress:kubernetesVersion", "egress:clusterAdminRoleArns",
    "egress:endpointPublicAccessCidrs", "egress:deletionProtection", "egress:clusterSubnetPrefix",
)
# What a pattern change must leave untouched (same URN, same inputs): the network
# and the cluster components with everything under them.
BASE_COMPONENTS = ("egress:base:Network", "egress:base:Cluster")


def base_resources(graph) -> dict:
    kept = {r.urn for r in graph.resources if r.type in BASE_COMPONENTS}
    for r in graph.resources:  # registration order: parents come first
        if r.parent in kept:
            kept.add(r.urn)
    return {r.urn: r.inputs for r in graph.resources if r.urn in kept}


def test_vpc_has_dns_for_private_endpoints(graph):
    vpc = graph.get(VPC, "egress-vpc")
    assert vpc.inputs["cidrBlock"] == "10.20.0.0/16"
    assert vpc.inputs["enableDnsSupport"] is True and vpc.inputs["enableDnsHostnames"] is True


def test_cluster_subnets_are_private_one_per_az(graph):
    subnets = {r.inputs["availabilityZone"]: r for r in graph.by_type(SUBNET) if r.name.startswith("egress-cluster-")}
    assert {az: s.inputs["cidrBlock"] for az, s in subnets.items()} == {
        "eu-west-1a": "10.20.0.0/20", "eu-west-1b": "10.20.16.0/20", "eu-west-1c": "10.20.32.0/20",
    }
    assert all(s.inputs["mapPublicIpOnLaunch"] is False for s in subnets.values())


def test_private_routes_stay_in_their_az(graph):
    for az in ("eu-west-1a", "eu-west-1b", "eu-west-1c"):
        table = graph.get("aws:ec2/routeTable:RouteTable", f"egress-private-{az}")
        onprem = graph.get(ROUTE, f"egress-private-{az}-onprem-0")
        assert onprem.inputs["destinationCidrBlock"] == "10.100.0.0/14"
        assert onprem.inputs["transitGatewayId"] == "tgw-0a1b2c3d4e5f60718"
        assert onprem.inputs["routeTableId"] == table.id
        assert graph.get("aws:ec2transitgateway/vpcAttachment:VpcAttachment", "egress-tgw").urn in onprem.dependencies
        internet = graph.get(ROUTE, f"egress-private-{az}-internet")
        nat = graph.by_id(internet.inputs["natGatewayId"])
        assert internet.inputs["destinationCidrBlock"] == "0.0.0.0/0"
        assert graph.by_id(nat.inputs["subnetId"]).inputs["availabilityZone"] == az


def test_transit_gateway_attaches_in_every_cluster_subnet(graph):
    attachment = graph.get("aws:ec2transitgateway/vpcAttachment:VpcAttachment", "egress-tgw")
    azs = {graph.by_id(i).inputs["availabilityZone"] for i in attachment.inputs["subnetIds"]}
    assert azs == {"eu-west-1a", "eu-west-1b", "eu-west-1c"}


def test_aws_apis_are_reached_through_vpc_endpoints(graph):
    endpoints = {r.inputs["serviceName"]: r for r in graph.by_type("aws:ec2/vpcEndpoint:VpcEndpoint")}
    for service in ("ecr.api", "ecr.dkr", "sts", "ec2", "eks-auth"):
        endpoint = endpoints[f"com.amazonaws.eu-west-1.{service}"]
        assert endpoint.inputs["privateDnsEnabled"] is True
        assert len(endpoint.inputs["subnetIds"]) == 3
    assert endpoints["com.amazonaws.eu-west-1.s3"].inputs["vpcEndpointType"] == "Gateway"
    group = graph.get("aws:ec2/securityGroup:SecurityGroup", "egress-endpoints")
    assert group.inputs["ingress"][0]["cidrBlocks"] == ["10.20.0.0/16"]
    assert group.inputs["ingress"][0]["fromPort"] == 443


def test_control_plane_is_private_encrypted_and_audited(graph):
    cluster = graph.get(EKS, "egress")
    inputs = cluster.inputs
    assert inputs["endpointPrivateAccess"] is True and inputs["endpointPublicAccess"] is False
    assert "publicAccessCidrs" not in inputs
    assert inputs["authenticationMode"] == "API"
    assert inputs["enabledClusterLogTypes"] == ["api", "audit", "authenticator", "controllerManager", "scheduler"]
    assert inputs["createOidcProvider"] is True
    assert inputs["bootstrapSelfManagedAddons"] is False and inputs["skipDefaultNodeGroup"] is True
    assert inputs["nodeAssociatePublicIpAddress"] is False
    assert inputs["deletionProtection"] is True
    key = graph.get("aws:kms/key:Key", "egress-secrets")
    assert key.inputs["enableKeyRotation"] is True
    assert inputs["encryptionConfigKeyArn"] == f"arn:aws:kms:eu-west-1:{offline.ACCOUNT}:egress-secrets"
    assert key.urn in cluster.dependencies
    (admin,) = inputs["accessEntries"].values()
    assert admin["principalArn"] == "arn:aws:iam::111122223333:role/platform-admin"


def test_public_endpoint_only_with_explicit_cidrs():
    config = stack_config(STACK)
    config["egress:endpointPublicAccessCidrs"] = ["198.51.100.0/24"]
    inputs = offline.run("public", config).get(EKS, "egress").inputs
    assert inputs["endpointPublicAccess"] is True
    assert inputs["publicAccessCidrs"] == ["198.51.100.0/24"]


API_RULE = "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule"


def api_access(graph) -> dict[str, dict]:
    return {r.inputs["cidrIpv4"]: r.inputs for r in graph.by_type(API_RULE) if r.name.startswith("egress-api-access-")}


def test_operators_reach_the_private_api_from_on_prem_by_default(graph):
    # The cluster security group (the only one under skipDefaultSecurityGroups)
    # admits HTTPS from the on-prem ranges, where `pulumi up` and kubectl run.
    rules = api_access(graph)
    assert set(rules) == {"10.100.0.0/14"}
    (rule,) = rules.values()
    assert (rule["ipProtocol"], rule["fromPort"], rule["toPort"]) == ("tcp", 443, 443)
    assert rule["securityGroupId"] == "sg-egress-cluster"


def test_api_access_cidrs_replace_the_on_prem_default():
    config = stack_config(STACK)
    config["egress:apiAccessCidrs"] = ["10.100.8.0/24", "10.20.250.0/28"]
    rules = api_access(offline.run("api", config))
    assert set(rules) == {"10.100.8.0/24", "10.20.250.0/28"}
    assert {r["fromPort"] for r in rules.values()} == {443}


def test_api_access_cidrs_must_be_private_ranges():
    assert_problem(config_with(apiAccessCidrs=["0.0.0.0/0"]), "egress:apiAccessCidrs[0]", "not a private range")
    assert_problem(config_with(apiAccessCidrs=["203.0.113.0/24"]), "egress:apiAccessCidrs[0]", "endpointPublicAccessCidrs")
    assert_problem(config_with(apiAccessCidrs=["10.1.2.3/16"]), "egress:apiAccessCidrs[0]", "use 10.1.0.0/16")


def test_api_access_from_an_unrouted_range_is_warned():
    warnings = offline.plan_from_config("x", offline.engine_config(config_with(apiAccessCidrs=["192.168.7.0/24"]))).warnings
    assert any("egress:apiAccessCidrs" in w and "192.168.7.0/24" in w and "route" in w for w in warnings), warnings
    no_tgw = offline.plan_from_config("x", offline.engine_config(config_with(transitGatewayId="", onPremDns=None))).warnings
    assert any("10.100.0.0/14" in w and "egress:transitGatewayId" in w for w in no_tgw), no_tgw
    assert not [w for w in planned(STACK).plan.warnings if "apiAccessCidrs" in w]


def test_nodes_require_imdsv2_and_have_no_public_ips(graph):
    template = graph.get("aws:ec2/launchTemplate:LaunchTemplate", "egress-nodes")
    assert template.inputs["metadataOptions"] == {
        "httpEndpoint": "enabled", "httpTokens": "required", "httpPutResponseHopLimit": 1,
    }
    assert template.inputs["blockDeviceMappings"][0]["ebs"]["encrypted"] == "true"
    for group in graph.by_type(NODE_GROUP):
        assert group.inputs["launchTemplate"]["id"] == template.id
        assert "remoteAccess" not in group.inputs
        subnets = [graph.by_id(i) for i in group.inputs["subnetIds"]]
        assert all(s.inputs["mapPublicIpOnLaunch"] is False for s in subnets)
        assert len({s.inputs["availabilityZone"] for s in subnets}) >= 2
        assert group.inputs["scalingConfig"]["minSize"] >= 2


def test_vpc_cni_has_its_own_role_and_enforces_network_policy(graph):
    addon = graph.get("aws:eks/addon:Addon", "egress-vpc-cni")
    assert json.loads(addon.inputs["configurationValues"])["enableNetworkPolicy"] == "true"
    role = graph.get("aws:iam/role:Role", "egress-vpc-cni")
    assert addon.inputs["serviceAccountRoleArn"] == f"arn:aws:iam::{offline.ACCOUNT}:role/egress-vpc-cni"
    trust = json.loads(role.inputs["assumeRolePolicy"])["Statement"][0]
    assert trust["Condition"]["StringEquals"] == {
        "oidc.eks.eu-west-1.amazonaws.com/id/EGRESS:sub": "system:serviceaccount:kube-system:aws-node",
        "oidc.eks.eu-west-1.amazonaws.com/id/EGRESS:aud": "sts.amazonaws.com",
    }
    node_policies = {r.inputs["policyArn"] for r in graph.by_type("aws:iam/rolePolicyAttachment:RolePolicyAttachment")
                     if r.parent.endswith("::egress-node")}
    assert not any("CNI" in p for p in node_policies)


def test_node_groups_wait_for_the_cni_and_coredns_waits_for_nodes(graph):
    cni = graph.get("aws:eks/addon:Addon", "egress-vpc-cni")
    system = graph.get(NODE_GROUP, "egress-system")
    assert cni.urn in system.dependencies
    assert system.urn in graph.get("aws:eks/addon:Addon", "egress-coredns").dependencies


def test_independent_resources_are_not_serialised(graph):
    groups = graph.by_type(NODE_GROUP)
    urns = {g.urn for g in groups}
    for group in groups:
        assert not urns & set(group.dependencies), f"{group.name} waits for another node group"
    for namespace in graph.by_type("kubernetes:core/v1:Namespace"):
        assert not urns & set(namespace.dependencies)


def _base_config_for(pattern: str) -> dict:
    """The pattern's shipped stack with the base settings of the subnet-cidr stack."""
    base = stack_config(STACK)
    config = stack_config(pattern)
    for key in BASE_KEYS:
        config.pop(key, None)
        if key in base:
            config[key] = base[key]
    return config


# Inputs that replace the resource when they change must not differ between patterns.
KEPT_AS_IS = (VPC, EKS, SUBNET, "aws:kms/key:Key", "aws:ec2transitgateway/vpcAttachment:VpcAttachment",
              "aws:ec2/natGateway:NatGateway", "aws:ec2/routeTable:RouteTable")


@pytest.mark.parametrize("pattern", sorted(PATTERNS))
def test_changing_the_pattern_keeps_vpc_and_cluster(pattern):
    reference = base_resources(planned(STACK))
    graph = offline.run(STACK, _base_config_for(pattern))
    assert graph.plan.settings.pattern == pattern
    other = base_resources(graph)
    assert set(reference) <= set(other), "a pattern change would delete or rename base resources"
    kept = [urn for urn in reference if urn.split("::")[2].rsplit("$", 1)[-1] in KEPT_AS_IS]
    assert {VPC, EKS, SUBNET} <= {urn.split("::")[2].rsplit("$", 1)[-1] for urn in kept}
    for urn in kept:
        assert _without_in_place(other[urn]) == _without_in_place(reference[urn]), urn


def _without_in_place(inputs: dict) -> dict:
    """Inputs a change of pattern may update in place: propagation to the transit
    gateway follows whether the VPC has a non-routable range (private-nat), and
    the provider updates it without replacing the attachment."""
    return {k: v for k, v in inputs.items() if k != "transitGatewayDefaultRouteTablePropagation"}


def test_every_shipped_stack_plans_cleanly():
    assert set(offline.stack_names()) >= set(PATTERNS)
    for name in PATTERNS:  # the shipped ones by name; other stack files are the user's own
        graph = planned(name)
        assert graph.plan.settings.pattern == name
        assert graph.outputs["egressAllowList"] == graph.plan.allow_list_json()


def test_keys_of_another_pattern_are_reported_as_ignored():
    config = stack_config(STACK)
    config["egress:privateNat"] = {"tenantCidr": "100.64.0.0/16"}
    config["egress:tenants"][0]["egressProfile"] = "shared"
    warnings = offline.run("ignored", config).plan.warnings
    assert "egress:privateNat is read only by pattern private-nat; it is ignored under subnet-cidr" in warnings
    assert ("egress:tenants[0].egressProfile is read only by pattern private-nat; it is ignored under subnet-cidr"
            in warnings)
    assert not [w for w in planned("private-nat").plan.warnings if "is read only by" in w]


def test_the_deploying_role_is_not_given_a_second_access_entry():
    """pulumi-eks makes the creator cluster-admin; more admins are optional."""
    config = stack_config(STACK)
    del config["egress:clusterAdminRoleArns"]
    inputs = offline.run("no-admins", config).get(EKS, "egress").inputs
    assert inputs.get("accessEntries", {}) == {}
    assert inputs["authenticationMode"] == "API"


def _physical_names(graph) -> dict[tuple, str]:
    """What AWS or Kubernetes identifies a resource by, where the program fixes it."""
    names = {}
    for r in graph.resources:
        key = None
        if r.type.startswith("kubernetes:") and not r.type.startswith("pulumi:"):
            meta = r.inputs.get("metadata") or {}
            name = meta.get("name") or r.inputs.get("name")
            if name:
                key = (r.type, meta.get("namespace") or r.inputs.get("namespace"), name)
        elif r.type in (SUBNET, "aws:ec2/vpcIpv4CidrBlockAssociation:VpcIpv4CidrBlockAssociation"):
            key = (r.type, r.inputs["cidrBlock"])
        elif r.type == "aws:eks/addon:Addon":
            key = (r.type, r.inputs["addonName"])
        elif r.type == "aws:ec2/natGateway:NatGateway" and r.inputs.get("privateIp"):
            key = (r.type, r.inputs["privateIp"])
        if key:
            names[key] = r.urn
    return names


@pytest.mark.parametrize("before", sorted(PATTERNS))
def test_a_pattern_change_updates_what_it_keeps_in_place(before):
    """Whatever two patterns both deploy under one name (a tenant namespace, a
    gateway subnet) must keep its URN: a new URN would create a second object
    of that name, then delete the first, with everything in it."""
    old = _physical_names(_switched(before))
    for after in sorted(set(PATTERNS) - {before}):
        new = _physical_names(_switched(after))
        moved = {key: (old[key], urn) for key, urn in new.items() if key in old and old[key] != urn}
        assert not moved, f"{before} -> {after}: {moved}"


@lru_cache(maxsize=None)
def _switched(pattern: str):
    config = stack_config(STACK)
    config["egress:pattern"] = pattern
    return offline.run(STACK, config)
