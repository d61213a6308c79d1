"""The cilium pattern: Cilium replacing aws-node and kube-proxy, gateway nodes and
egress ENIs per AZ, one CiliumEgressGatewayPolicy per tenant."""

from __future__ import annotations

import base64
import copy
import ipaddress
import json

import pytest

from patterns import cilium, offline
from patterns.program import plan_from_config
from patterns.settings import ConfigError
from schemas import crd_errors, helm_values_validator

POLICY = "kubernetes:cilium.io/v2:CiliumEgressGatewayPolicy"
NODE_GROUP = "aws:eks/nodeGroup:NodeGroup"
AGENT_NOT_READY = {"key": "node.cilium.io/agent-not-ready", "value": "true", "effect": "NO_EXECUTE"}
GATEWAY_TAINT = {"key": "egress/gateway", "value": "cilium", "effect": "NO_SCHEDULE"}


@pytest.fixture(scope="module")
def graph():
    return offline.run_stack("cilium")


@pytest.fixture(scope="module")
def stack_config():
    return offline.read_stack_file(offline.stack_path("cilium"))


def _release(graph):
    (release,) = [r for r in graph.by_type("kubernetes:helm.sh/v3:Release") if r.inputs["chart"] == "cilium"]
    return release


def _gateway_groups(graph):
    return {r.name: r for r in graph.by_type(NODE_GROUP) if r.inputs["labels"] == {"egress/gateway": "cilium"}}


def _policies(graph):
    return {r.inputs["metadata"]["name"]: r for r in graph.by_type(POLICY)}


# The URNs of what this pattern deploys: a change replaces live gateways, ENIs
# (the egress IPs) or policies, so it needs an alias (or a deliberate update here).
CILIUM_URNS = {
    "egress:cilium:Cilium::egress",
    "egress:cilium:Cilium$aws:iam/policy:Policy::egress-cilium-operator",
    "egress:cilium:Cilium$aws:iam/role:Role::egress-cilium-operator",
    "egress:cilium:Cilium$aws:iam/role:Role$aws:iam/rolePolicyAttachment:RolePolicyAttachment::egress-cilium-operator-0",
    "egress:cilium:Cilium$kubernetes:helm.sh/v3:Release::egress-cilium",
    "egress:patterns:CiliumEgress::egress",
    "egress:patterns:CiliumEgress$aws:ec2/securityGroup:SecurityGroup::egress-gateway-eni",
    "egress:patterns:CiliumEgress$aws:iam/role:Role::egress-gateway",
    "egress:patterns:CiliumEgress$aws:iam/role:Role$aws:iam/rolePolicy:RolePolicy::egress-gateway-eni-attach",
    "egress:patterns:CiliumEgress$aws:iam/role:Role$aws:iam/rolePolicyAttachment:RolePolicyAttachment::egress-gateway-ecr",
    "egress:patterns:CiliumEgress$aws:iam/role:Role$aws:iam/rolePolicyAttachment:RolePolicyAttachment::egress-gateway-worker",
    "egress:patterns:CiliumEgress$kubernetes:cilium.io/v2:CiliumEgressGatewayPolicy::egress-payments",
    "egress:patterns:CiliumEgress$kubernetes:cilium.io/v2:CiliumEgressGatewayPolicy::egress-reporting",
    *(
        urn
        for az in ("eu-west-1a", "eu-west-1b", "eu-west-1c")
        for urn in (
            f"egress:patterns:CiliumEgress$aws:ec2/launchTemplate:LaunchTemplate::egress-gateway-{az}",
            f"egress:patterns:CiliumEgress$aws:eks/nodeGroup:NodeGroup::egress-gateway-{az}",
            "egress:base:Network$aws:ec2/vpc:Vpc$aws:ec2/subnet:Subnet$aws:ec2/networkInterface:NetworkInterface"
            f"::egress-gateway-{az}",
            "egress:base:Network$aws:ec2/vpc:Vpc$aws:ec2/subnet:Subnet$aws:ec2/subnetCidrReservation:"
            f"SubnetCidrReservation::egress-gateway-{az}-egress-ips",
        )
    ),
}


def test_urns_of_the_patterns_resources_are_stable(graph):
    owned = {
        r.urn.split("::", 2)[2] for r in graph.resources
        if any(t in r.urn for t in ("egress:cilium:", "CiliumEgress", "networkInterface", "subnetCidrReservation"))
    }
    assert owned == CILIUM_URNS


# --- Cilium itself ---------------------------------------------------------------


def test_chart_is_pinned_from_the_cilium_repository(graph):
    release = _release(graph).inputs
    assert (release["chart"], release["version"], release["namespace"]) == ("cilium", "1.19.6", "kube-system")
    assert release["repositoryOpts"] == {"repo": "https://helm.cilium.io/"}
    assert release["name"] == "cilium"


def test_helm_values_for_eks_eni_mode_without_kube_proxy(graph):
    values = _release(graph).inputs["values"]
    assert values["eni"]["enabled"] is True
    assert values["eni"]["nodeSpec"]["excludeInterfaceTags"] == ["cilium.io/no_manage=true"]
    assert values["eni"]["iamRole"] == "arn:aws:iam::111122223333:role/egress-cilium-operator"
    assert values["ipam"] == {"mode": "eni"}
    assert values["routingMode"] == "native"
    assert values["kubeProxyReplacement"] is True
    # The EKS endpoint host, without scheme, on 443.
    assert values["k8sServiceHost"] == "EGRESS.gr7.eu-west-1.eks.amazonaws.com"
    assert values["k8sServicePort"] == 443
    assert values["bpf"]["masquerade"] is True
    assert values["enableIPv4Masquerade"] is True
    assert values["egressGateway"] == {"enabled": True}
    assert values["identityAllocationMode"] == "crd"
    assert values["ciliumEndpointSlice"] == {"enabled": False}
    assert values["devices"] == ["ens+"]
    assert values["operator"]["nodeSelector"]["egress/role"] == "system"


def test_helm_values_validate_against_the_chart_schema(graph):
    validator = helm_values_validator("cilium", cilium.CHART_VERSION)
    validator.validate(_release(graph).inputs["values"])
    # The validation is real: a wrong type fails.
    broken = copy.deepcopy(_release(graph).inputs["values"])
    broken["eni"]["enabled"] = "yes"
    assert list(validator.iter_errors(broken))


def test_release_does_not_wait_and_nodes_wait_for_it(graph):
    """No deadlock: the release waits for nothing the nodes provide, and every
    node group waits for the release."""
    release = _release(graph)
    assert release.inputs["skipAwait"] is True
    assert not [dep for dep in release.dependencies if "nodeGroup" in dep or "LaunchTemplate" in dep]
    for group in graph.by_type(NODE_GROUP):
        assert release.urn in group.dependencies, group.name


def test_no_aws_node_and_no_kube_proxy(graph):
    addons = {r.inputs["addonName"] for r in graph.by_type("aws:eks/addon:Addon")}
    assert addons == {"coredns", "metrics-server"}  # no vpc-cni, no kube-proxy
    (eks,) = graph.by_type("eks:index:Cluster")
    assert eks.inputs["bootstrapSelfManagedAddons"] is False
    assert eks.inputs["kubeProxyAddonOptions"]["enabled"] is False
    assert not [r for r in graph.resources if "aws-node" in json.dumps(r.inputs)]


def test_every_node_group_carries_the_agent_not_ready_taint(graph):
    groups = graph.by_type(NODE_GROUP)
    assert len(groups) == 1 + 3
    for group in groups:
        assert AGENT_NOT_READY in group.inputs["taints"], group.name


def test_operator_role_is_irsa_for_the_operator_service_account(graph):
    role = graph.get("aws:iam/role:Role", "egress-cilium-operator")
    trust = json.loads(role.inputs["assumeRolePolicy"])["Statement"][0]
    assert list(trust["Condition"]["StringEquals"].values()) == [
        "system:serviceaccount:kube-system:cilium-operator", "sts.amazonaws.com"
    ]
    policy = json.loads(graph.get("aws:iam/policy:Policy", "egress-cilium-operator").inputs["policy"])
    actions = set(policy["Statement"][0]["Action"])
    # The privileges the ENI IPAM docs list beyond AmazonEKS_CNI_Policy.
    assert {"ec2:DescribeVpcs", "ec2:DescribeRouteTables", "ec2:DescribeSecurityGroups",
            "ec2:DescribeManagedPrefixLists", "ec2:GetManagedPrefixListEntries",
            "ec2:CreateNetworkInterface", "ec2:AssignPrivateIpAddresses"} <= actions


# --- gateway nodes and egress IPs ----------------------------------------------------


def test_one_tainted_gateway_node_per_az_in_its_egress_subnet(graph):
    plan = graph.plan
    groups = _gateway_groups(graph)
    assert sorted(groups) == [f"egress-gateway-{az}" for az in plan.settings.availability_zones]
    for subnet in plan.addresses.egress_subnets:
        group = groups[f"egress-gateway-{subnet.az}"].inputs
        assert group["taints"] == [GATEWAY_TAINT, AGENT_NOT_READY]
        assert group["labels"] == {"egress/gateway": "cilium"}
        assert group["instanceTypes"] == ["c6in.large"]
        assert group["scalingConfig"] == {"minSize": 1, "maxSize": 1, "desiredSize": 1}
        resource = graph.get("aws:ec2/subnet:Subnet", f"egress-gateway-{subnet.az}")
        assert group["subnetIds"] == [resource.id]
        assert resource.inputs["cidrBlock"] == str(subnet.cidr)
        assert resource.inputs["availabilityZone"] == subnet.az
        assert resource.inputs["mapPublicIpOnLaunch"] is False
        association = graph.get("aws:ec2/routeTableAssociation:RouteTableAssociation", f"egress-gateway-{subnet.az}")
        assert association.inputs["routeTableId"] == graph.get(
            "aws:ec2/routeTable:RouteTable", f"egress-private-{subnet.az}").id


def test_egress_ips_are_in_the_reserved_egress_block_and_unique(graph):
    plan = graph.plan
    seen = set()
    for subnet in plan.addresses.egress_subnets:
        reservation = graph.get("aws:ec2/subnetCidrReservation:SubnetCidrReservation",
                                f"egress-gateway-{subnet.az}-egress-ips").inputs
        assert reservation["reservationType"] == "explicit"
        block = ipaddress.IPv4Network(reservation["cidrBlock"])
        assert block.subnet_of(subnet.cidr)
        for tenant in plan.settings.tenants:
            ip = cilium.egress_ips(plan.settings, plan.addresses, tenant)[subnet.az]
            assert ip in block and ip not in seen
            assert int(ip) - int(subnet.cidr.network_address) >= 4  # not an AWS-reserved address
            seen.add(ip)
    assert len(seen) == len(plan.settings.tenants) * len(plan.addresses.egress_subnets)


def test_each_az_eni_holds_the_tenants_ips_and_is_kept_from_cilium_ipam(graph):
    plan = graph.plan
    for subnet in plan.addresses.egress_subnets:
        eni = graph.get("aws:ec2/networkInterface:NetworkInterface", f"egress-gateway-{subnet.az}")
        tenant_ips = [str(cilium.egress_ips(plan.settings, plan.addresses, t)[subnet.az]) for t in plan.settings.tenants]
        assert eni.inputs["privateIpListEnabled"] is True
        assert eni.inputs["privateIpLists"] == [str(cilium.eni_primary_ip(subnet)), *tenant_ips]
        assert eni.inputs["subnetId"] == graph.get("aws:ec2/subnet:Subnet", f"egress-gateway-{subnet.az}").id
        assert eni.inputs["tags"]["cilium.io/no_manage"] == "true"
        assert eni.inputs["tags"]["egress/gateway-eni"] == "cilium"
        reservation = graph.get("aws:ec2/subnetCidrReservation:SubnetCidrReservation", f"egress-gateway-{subnet.az}-egress-ips")
        assert reservation.urn in eni.dependencies


def test_gateway_user_data_attaches_the_az_eni_and_routes_from_its_ips(graph):
    plan = graph.plan
    for subnet in plan.addresses.egress_subnets:
        template = graph.get("aws:ec2/launchTemplate:LaunchTemplate", f"egress-gateway-{subnet.az}").inputs
        assert template["metadataOptions"] == {"httpEndpoint": "enabled", "httpTokens": "required",
                                               "httpPutResponseHopLimit": 1}
        user_data = base64.b64decode(template["userData"]).decode()
        assert user_data.startswith("MIME-Version: 1.0\nContent-Type: multipart/mixed")
        eni = graph.get("aws:ec2/networkInterface:NetworkInterface", f"egress-gateway-{subnet.az}")
        assert f"ENI_ID={eni.id}\n" in user_data
        assert f"SUBNET={subnet.cidr}\n" in user_data
        assert f"ROUTER={subnet.cidr.network_address + 1}\n" in user_data
        assert "aws ec2 attach-network-interface" in user_data
        assert 'ip rule add from "$ip" lookup "$TABLE"' in user_data
        assert "systemctl enable --now egress-eni.service" in user_data
        group = _gateway_groups(graph)[f"egress-gateway-{subnet.az}"]
        assert group.inputs["launchTemplate"]["id"] == graph.get(
            "aws:ec2/launchTemplate:LaunchTemplate", f"egress-gateway-{subnet.az}").id


def test_only_gateway_nodes_may_attach_this_stacks_gateway_enis(graph):
    attach = graph.get("aws:iam/rolePolicy:RolePolicy", "egress-gateway-eni-attach")
    gateway_role = graph.get("aws:iam/role:Role", "egress-gateway")
    assert attach.inputs["role"] == gateway_role.name  # the engine's mock names a role after its resource
    assert [r.name for r in graph.by_type("aws:iam/rolePolicy:RolePolicy")] == ["egress-gateway-eni-attach"]
    for group in graph.by_type(NODE_GROUP):
        gateway = group.name.startswith("egress-gateway-")
        assert (group.inputs["nodeRoleArn"] == f"arn:aws:iam::{offline.ACCOUNT}:role/egress-gateway") == gateway
        if gateway:
            assert attach.urn in group.dependencies  # nodes boot only once they may attach the ENI
    policy = json.loads(attach.inputs["policy"])
    eni_statement = policy["Statement"][0]
    assert eni_statement["Resource"] == "arn:aws:ec2:*:*:network-interface/*"
    assert eni_statement["Condition"] == {"StringEquals": {"aws:ResourceTag/egress/gateway-eni": "cilium"}}
    assert {a for s in policy["Statement"] for a in [s["Action"]]} == {
        "ec2:AttachNetworkInterface", "ec2:DescribeNetworkInterfaces"
    }


def test_eni_security_group_allows_only_the_upstreams(graph):
    group = graph.get("aws:ec2/securityGroup:SecurityGroup", "egress-gateway-eni").inputs
    assert group.get("ingress") in (None, [])
    rules = {(r["cidrBlocks"][0], r["fromPort"], r["toPort"], r["protocol"]) for r in group["egress"]}
    assert rules == {
        ("10.100.10.0/24", 443, 443, "tcp"),
        ("10.101.4.16/28", 1521, 1521, "tcp"),
        ("10.102.0.0/24", 443, 443, "tcp"),
        ("10.102.0.0/24", 5439, 5439, "tcp"),
    }


# --- policies and tenant namespaces ---------------------------------------------------


def test_one_policy_per_tenant_with_selectors_cidrs_and_gateways(graph):
    plan = graph.plan
    policies = _policies(graph)
    assert sorted(policies) == sorted(f"egress-{t.name}" for t in plan.settings.tenants)
    for tenant in plan.settings.tenants:
        policy = policies[f"egress-{tenant.name}"]
        assert (policy.inputs["apiVersion"], policy.inputs["kind"]) == ("cilium.io/v2", "CiliumEgressGatewayPolicy")
        assert "namespace" not in policy.inputs["metadata"]  # cluster-scoped
        spec = policy.inputs["spec"]
        assert spec["selectors"] == [
            {"podSelector": {"matchLabels": {"egress/tenant": tenant.name,
                                             "io.kubernetes.pod.namespace": tenant.k8s_namespace}}}
        ]
        assert spec["destinationCIDRs"] == [str(u.cidr) for u in tenant.upstreams]
        ips = cilium.egress_ips(plan.settings, plan.addresses, tenant)
        assert spec["egressGateways"] == [
            {"nodeSelector": {"matchLabels": {"egress/gateway": "cilium", "topology.kubernetes.io/zone": az}},
             "egressIP": str(ip)}
            for az, ip in ips.items()
        ]
        assert spec["egressGateway"] == spec["egressGateways"][0]
        # Created once the gateways (Cilium running, IPs attached) exist.
        for az in plan.settings.availability_zones:
            assert graph.get(NODE_GROUP, f"egress-gateway-{az}").urn in policy.dependencies
            assert graph.get("aws:ec2/networkInterface:NetworkInterface", f"egress-gateway-{az}").urn in policy.dependencies


def test_policies_validate_against_the_crd_schema(graph):
    for name, policy in _policies(graph).items():
        document = {k: policy.inputs[k] for k in ("apiVersion", "kind", "metadata", "spec")}
        assert crd_errors(document) == [], name
        for gateway in document["spec"]["egressGateways"]:
            ipaddress.IPv4Address(gateway["egressIP"])  # the CRD's isIP rule (CEL, not checked by jsonschema)
    broken = copy.deepcopy(document)
    del broken["spec"]["destinationCIDRs"]
    assert crd_errors(broken)
    broken = copy.deepcopy(document)
    broken["spec"]["egressGateways"][0]["egressIp"] = broken["spec"]["egressGateways"][0].pop("egressIP")
    assert crd_errors(broken)


def test_tenant_namespaces_default_deny_except_dns_and_upstreams(graph):
    for tenant in graph.plan.settings.tenants:
        namespace = graph.get("kubernetes:core/v1:Namespace", tenant.name).inputs["metadata"]
        assert namespace["name"] == tenant.k8s_namespace
        assert namespace["labels"]["egress/tenant"] == tenant.name
        policies = {
            r.name.removeprefix(f"{tenant.name}-"): r.inputs["spec"]
            for r in graph.by_type("kubernetes:networking.k8s.io/v1:NetworkPolicy")
            if r.name.startswith(f"{tenant.name}-")
        }
        assert policies["default-deny"] == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
        assert policies["allow-dns"]["egress"][0]["ports"] == [{"protocol": "UDP", "port": 53},
                                                               {"protocol": "TCP", "port": 53}]
        assert policies["allow-egress"]["egress"] == [
            {"to": [{"ipBlock": {"cidr": str(u.cidr)}}], "ports": [{"protocol": "TCP", "port": p} for p in u.ports]}
            for u in tenant.upstreams
        ]


# --- allow-list, warnings, bad input ------------------------------------------------------


def test_outputs_equal_the_plans_allow_list_of_egress_ips(graph):
    assert graph.outputs["egressAllowList"] == graph.plan.allow_list_json()
    by_tenant = {e["tenant"]: e["sources"] for e in graph.outputs["egressAllowList"]}
    assert by_tenant == {
        "payments": ["10.40.68.5/32", "10.40.69.5/32", "10.40.70.5/32"],
        "reporting": ["10.40.68.6/32", "10.40.69.6/32", "10.40.70.6/32"],
    }


def test_warnings_state_that_an_egress_ip_does_not_fail_over(graph):
    (warning,) = [w for w in graph.plan.warnings if "failover" in w]
    assert "no failover of an egress IP" in warning and "one gateway per AZ" in warning
    assert graph.diagnostics.count(("warning", warning)) == 1


def test_pinned_slot_keeps_a_tenants_egress_ip(stack_config):
    config = copy.deepcopy(stack_config)
    config["egress:tenants"] = [{**config["egress:tenants"][1], "slot": 7}, config["egress:tenants"][0]]
    plan = plan_from_config("cilium", offline.engine_config(config))
    sources = {e.tenant: e.sources for e in plan.allow_list}
    assert sources["reporting"][0] == "10.40.68.12/32"  # .4 is the ENI's own, slot 7 -> .4 + 1 + 7
    assert sources["payments"][0] == "10.40.68.6/32"  # position 1 when not pinned


def _problems(config) -> dict[str, str]:
    with pytest.raises(ConfigError) as error:
        plan_from_config("cilium", offline.engine_config(config))
    return {p.key: p.message for p in error.value.problems}


def test_too_many_tenants_for_the_gateway_eni(stack_config):
    config = copy.deepcopy(stack_config)
    base = config["egress:tenants"][0]
    config["egress:tenants"] = [{**base, "name": f"t{i}"} for i in range(10)]
    problems = _problems(config)
    assert "c6in.large holds 10 IPv4 addresses per ENI but the egress ENI needs 11" in problems["egress:gatewayInstanceType"]
    assert "pick a type with more" in problems["egress:gatewayInstanceType"]


def test_slot_outside_the_reserved_block(stack_config):
    config = copy.deepcopy(stack_config)
    config["egress:egressSubnetPrefix"] = 28  # /29 reserved: 3 tenant IPs
    config["egress:tenants"][1]["slot"] = 3
    problems = _problems(config)
    assert "gets no egress IP" in problems["egress:tenants[1].slot"]
    assert "holds 3 tenant IPs" in problems["egress:tenants[1].slot"]


def test_bad_gateway_instance_type(stack_config):
    config = {**stack_config, "egress:gatewayInstanceType": "huge"}
    assert _problems(config) == {
        "egress:gatewayInstanceType": "'huge' is not an EC2 instance type; use e.g. 'c6in.large'"
    }


def test_unknown_instance_type_is_a_warning(stack_config):
    config = {**stack_config, "egress:gatewayInstanceType": "c8gn.large"}
    plan = plan_from_config("cilium", offline.engine_config(config))
    assert any("c8gn.large is not in the known list" in w for w in plan.warnings)


def test_two_tenants_on_one_slot_would_share_an_egress_ip_and_are_refused(stack_config):
    config = copy.deepcopy(stack_config)
    config["egress:tenants"][0]["slot"] = 1  # tenants[1] takes slot 1 by its position
    found = _problems(config)
    assert "slot 1 is already taken by tenants[0]" in found["egress:tenants[1].slot"]
