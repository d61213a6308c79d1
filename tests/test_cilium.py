"""The cilium pattern: Cilium replacing aws-node and kube-proxy, gateway nodes and
egress ENIs per AZ, one CiliumEgressGatewayPolicy per tenant."""

from __future__ import annotations

import base64
import copy
import ipaddress
import json

import pytest
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st

from conftest import NODE_GROUP
from patterns import cilium, offline
from patterns.program import plan_from_config
from patterns.settings import ConfigError
from schemas import crd_errors, helm_values_validator

STACK = "cilium"  # the graph fixture (conftest)
POLICY = "kubernetes:cilium.io/v2:CiliumEgressGatewayPolicy"
AGENT_NOT_READY = {"key": "node.cilium.io/agent-not-ready", "value": "true", "effect": "NO_EXECUTE"}
GATEWAY_TAINT = {"key": "egress/gateway", "value": "cilium", "effect": "NO_SCHEDULE"}


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
    assert values["operator"]["nodeSelector"]["egress/role"] == "system"


def test_cluster_name_and_eni_garbage_collection_tags_name_this_cluster(graph):
    """Left at "default", every Cilium cluster's operator would garbage-collect
    the others' detached ENIs in the account and region."""
    values = _release(graph).inputs["values"]
    assert values["cluster"] == {"name": "egress-ekscluster"}  # the mock names the EKS cluster egress-eksCluster
    assert values["eni"]["gcTags"] == {"io.cilium/cilium-managed": "true", "io.cilium/cluster-name": "egress-eksCluster"}
    # Cilium's rule: at most 32 characters, lower-case alphanumerics and dashes.
    assert cilium.cilium_cluster_name("egress-eksCluster-5f3c2a1") == "egress-ekscluster-5f3c2a1"
    assert len(cilium.cilium_cluster_name("a" * 40)) == 32
    with pytest.raises(ValueError):
        cilium.cilium_cluster_name("egress_eks")


def _cilium_device_match(pattern: str, device: str) -> bool:
    """Cilium's `devices` syntax: a trailing '+' matches any suffix."""
    return device.startswith(pattern[:-1]) if pattern.endswith("+") else device == pattern


@pytest.mark.parametrize("device, attached", [
    ("ens5", True), ("ens6", True),  # most Nitro instances on AL2023
    ("enp39s0", True), ("enp40s0", True),  # 8th-generation instances
    ("lxc1a2b3c", False), ("cilium_host", False), ("cilium_net", False), ("lo", False),
])
def test_bpf_devices_cover_every_al2023_nic_name_and_no_cilium_device(graph, device, attached):
    patterns = _release(graph).inputs["values"]["devices"]
    assert any(_cilium_device_match(p, device) for p in patterns) is attached


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


def _operator_statements(graph) -> dict[str, dict]:
    policy = json.loads(graph.get("aws:iam/policy:Policy", "egress-cilium-operator").inputs["policy"])
    return {s["Sid"]: s for s in policy["Statement"]}


def _actions(statement) -> set[str]:
    return set([statement["Action"]] if isinstance(statement["Action"], str) else statement["Action"])


def test_operator_may_change_enis_only_in_its_vpc_and_cluster(graph):
    statements = _operator_statements(graph)
    vpc_arn = {"ArnLike": {"ec2:Vpc": "arn:aws:ec2:eu-west-1:*:vpc/vpc-egress-vpc"}}  # the mock VPC id
    allowed = set().union(*(_actions(s) for s in statements.values() if s["Effect"] == "Allow"))
    # The privileges of the ENI IPAM docs, nothing more.
    assert allowed == set(cilium.iam.OPERATOR_READ_ACTIONS) | {
        "ec2:CreateNetworkInterface", "ec2:CreateTags", "ec2:AttachNetworkInterface", "ec2:DeleteNetworkInterface",
        "ec2:ModifyNetworkInterfaceAttribute", "ec2:AssignPrivateIpAddresses", "ec2:UnassignPrivateIpAddresses",
    }
    # Only reads are unscoped (EC2 has no resource-level permission for them).
    for sid, statement in statements.items():
        if statement["Effect"] == "Allow" and statement["Resource"] == "*":
            assert _actions(statement) <= set(cilium.iam.OPERATOR_READ_ACTIONS), sid
    assert statements["CreateEnisInTheVpc"]["Condition"] == vpc_arn
    assert statements["CreateTaggedEnis"]["Condition"] == {
        "StringEquals": {"aws:RequestTag/io.cilium/cluster-name": "egress-eksCluster"}}
    # As AWS's VPC CNI policy: tags on ENIs only, and here only while creating one.
    assert statements["TagOnCreateOnly"]["Resource"] == "arn:aws:ec2:eu-west-1:*:network-interface/*"
    assert statements["TagOnCreateOnly"]["Condition"] == {"StringEquals": {"ec2:CreateAction": "CreateNetworkInterface"}}
    assert statements["ManageItsOwnEnis"]["Condition"] == {
        "StringEquals": {"aws:ResourceTag/io.cilium/cluster-name": "egress-eksCluster"}}
    assert statements["PodIpsOnTheVpcsEnis"]["Condition"] == vpc_arn
    assert statements["AttachToTheClustersNodes"]["Resource"] == "arn:aws:ec2:eu-west-1:*:instance/*"
    assert statements["AttachToTheClustersNodes"]["Condition"] == {
        "StringEquals": {"aws:ResourceTag/eks:cluster-name": "egress-eksCluster"}}


def test_operator_can_never_touch_or_mark_an_egress_eni(graph):
    statements = _operator_statements(graph)
    guard = statements["NeverTouchEgressEnis"]
    assert guard["Effect"] == "Deny"
    assert _actions(guard) >= {"ec2:AssignPrivateIpAddresses", "ec2:UnassignPrivateIpAddresses",
                               "ec2:AttachNetworkInterface", "ec2:DetachNetworkInterface",
                               "ec2:DeleteNetworkInterface", "ec2:ModifyNetworkInterfaceAttribute"}
    assert guard["Condition"] == {"Null": {"aws:ResourceTag/egress/gateway-eni": "false"}}
    mark = statements["NeverMarkEgressEnis"]
    assert mark["Effect"] == "Deny" and _actions(mark) == {"ec2:CreateTags", "ec2:DeleteTags"}
    assert mark["Condition"] == {"ForAnyValue:StringEquals": {"aws:TagKeys": ["egress/gateway-eni"]}}


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


def test_gateways_are_auto_repaired_and_upgraded_one_az_at_a_time(graph):
    groups = _gateway_groups(graph)
    azs = graph.plan.settings.availability_zones
    for position, az in enumerate(azs):
        group = groups[f"egress-gateway-{az}"]
        assert group.inputs["nodeRepairConfig"] == {"enabled": True}
        assert group.inputs["updateConfig"] == {"maxUnavailable": 1}
        gateway_deps = {u.rsplit("::", 1)[1] for u in group.dependencies if "nodeGroup" in u}
        # Each AZ's group waits for the previous one, so Pulumi replaces or
        # upgrades them in turn, never two AZs at once.
        assert gateway_deps == ({f"egress-gateway-{azs[position - 1]}"} if position else set()), az
    system = graph.get(NODE_GROUP, "egress-system").inputs
    assert "nodeRepairConfig" not in system  # only the gateways change here


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


def test_each_az_eni_holds_every_slot_it_can_in_slot_order_and_is_kept_from_cilium_ipam(graph):
    plan = graph.plan
    for subnet in plan.addresses.egress_subnets:
        eni = graph.get("aws:ec2/networkInterface:NetworkInterface", f"egress-gateway-{subnet.az}")
        base = subnet.cidr.network_address
        # c6in.large: 10 addresses per ENI -> its own (.4) and slots 0-8 (.5-.13), in slot order.
        assert eni.inputs["privateIpListEnabled"] is True
        assert eni.inputs["privateIpLists"] == [str(base + 4 + i) for i in range(10)]
        for tenant in plan.settings.tenants:
            ip = cilium.egress_ips(plan.settings, plan.addresses, tenant)[subnet.az]
            assert eni.inputs["privateIpLists"][1 + plan.settings.slots[tenant.name]] == str(ip)
        assert eni.inputs["subnetId"] == graph.get("aws:ec2/subnet:Subnet", f"egress-gateway-{subnet.az}").id
        assert eni.inputs["tags"]["cilium.io/no_manage"] == "true"
        assert eni.inputs["tags"]["egress/gateway-eni"] == "cilium"
        reservation = graph.get("aws:ec2/subnetCidrReservation:SubnetCidrReservation", f"egress-gateway-{subnet.az}-egress-ips")
        assert reservation.urn in eni.dependencies
        assert ipaddress.IPv4Address(eni.inputs["privateIpLists"][-1]) in ipaddress.IPv4Network(reservation.inputs["cidrBlock"])


def _eni_lists(config) -> dict[str, list[str]]:
    plan = plan_from_config("cilium", offline.engine_config(config))
    return {s.az: [str(ip) for ip in cilium.eni_ips(plan.settings, s)] for s in plan.addresses.egress_subnets}


def _clone(tenant: dict, name: str) -> dict:
    """Another tenant like `tenant` (its own namespace; no IAM role, which is one per tenant)."""
    return {**{k: v for k, v in tenant.items() if k != "iamRoleArn"}, "name": name, "namespace": name}


@pytest.mark.parametrize("edit", ["add-at-top", "add-at-end", "reorder", "remove", "nine-tenants"])
def test_adding_reordering_or_removing_tenants_never_changes_an_eni(stack_config, edit):
    """A change of private_ip_list makes the provider unassign every secondary
    IP and assign them again: every tenant's egress would drop. The list is
    the ENI's capacity, whoever holds the slots."""
    tenants = stack_config["egress:tenants"]
    new = {**_clone(tenants[0], "newcomer")}
    edited = {
        "add-at-top": [new, *tenants],
        "add-at-end": [*tenants, new],
        "reorder": tenants[::-1],
        "remove": tenants[:1],
        "nine-tenants": [_clone(tenants[0], f"t{i}") for i in range(9)],
    }[edit]
    assert _eni_lists({**stack_config, "egress:tenants": edited}) == _eni_lists(stack_config)


def test_warnings_say_how_many_more_tenants_fit_before_the_eni_must_grow(graph, stack_config):
    (warning,) = [w for w in graph.plan.warnings if "tenant IPs" in w]
    assert "the egress ENIs hold 9 tenant IPs (c6in.large: 10 IPv4 addresses per ENI" in warning
    assert "7 more tenant(s) fit (slots 2-8)" in warning
    full = {**stack_config, "egress:tenants": [
        _clone(stack_config["egress:tenants"][0], f"t{i}") for i in range(9)]}
    plan = plan_from_config("cilium", offline.engine_config(full))
    assert any("0 more tenant(s) fit without touching the ENIs" in w for w in plan.warnings)


def test_gateway_user_data_runs_the_egress_eni_service_for_the_az_eni(graph):
    plan = graph.plan
    for subnet in plan.addresses.egress_subnets:
        template = graph.get("aws:ec2/launchTemplate:LaunchTemplate", f"egress-gateway-{subnet.az}").inputs
        assert template["metadataOptions"] == {"httpEndpoint": "enabled", "httpTokens": "required",
                                               "httpPutResponseHopLimit": 1}
        user_data = base64.b64decode(template["userData"]).decode()
        assert user_data.startswith("MIME-Version: 1.0\nContent-Type: multipart/mixed")
        eni = graph.get("aws:ec2/networkInterface:NetworkInterface", f"egress-gateway-{subnet.az}")
        assert f"ENI_ID={eni.id}\nSUBNET={subnet.cidr}\nROUTER={subnet.cidr.network_address + 1}\n" in user_data
        assert "CLUSTER_NAME=egress-eksCluster\nREADY_LABEL=egress/eni-ready\n" in user_data
        assert cilium.node_script.SCRIPT.read_text() in user_data
        group = _gateway_groups(graph)[f"egress-gateway-{subnet.az}"]
        assert group.inputs["launchTemplate"]["id"] == graph.get(
            "aws:ec2/launchTemplate:LaunchTemplate", f"egress-gateway-{subnet.az}").id


def test_only_gateway_nodes_may_attach_this_stacks_gateway_enis_each_to_itself(graph):
    attach = graph.get("aws:iam/rolePolicy:RolePolicy", "egress-gateway-eni-attach")
    gateway_role = graph.get("aws:iam/role:Role", "egress-gateway")
    assert attach.inputs["role"] == gateway_role.name  # the engine's mock names a role after its resource
    assert [r.name for r in graph.by_type("aws:iam/rolePolicy:RolePolicy")] == ["egress-gateway-eni-attach"]
    for group in graph.by_type(NODE_GROUP):
        gateway = group.name.startswith("egress-gateway-")
        assert (group.inputs["nodeRoleArn"] == f"arn:aws:iam::{offline.ACCOUNT}:role/egress-gateway") == gateway
        if gateway:
            assert attach.urn in group.dependencies  # nodes boot only once they may attach the ENI
    statements = {s["Sid"]: s for s in json.loads(attach.inputs["policy"])["Statement"]}
    assert {s["Effect"] for s in statements.values()} == {"Allow"}
    assert {a for s in statements.values() for a in [s["Action"]]} == {
        "ec2:AttachNetworkInterface", "ec2:DescribeNetworkInterfaces"}
    eni = statements["TheStacksEgressEnis"]
    assert eni["Resource"] == "arn:aws:ec2:eu-west-1:*:network-interface/*"
    assert eni["Condition"] == {"StringEquals": {"aws:ResourceTag/egress/gateway-eni": "cilium"}}
    # The instance side: the calling instance only (the variable EC2 sets for
    # instance-profile credentials), never another node.
    assert statements["ToItselfOnly"]["Resource"] == "${ec2:SourceInstanceARN}"


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


def test_one_az_local_policy_per_tenant_and_az(graph):
    plan = graph.plan
    policies = _policies(graph)
    azs = plan.settings.availability_zones
    assert sorted(policies) == sorted(f"egress-{t.name}-{az}" for t in plan.settings.tenants for az in azs)
    for tenant in plan.settings.tenants:
        ips = cilium.egress_ips(plan.settings, plan.addresses, tenant)
        for az in azs:
            policy = policies[f"egress-{tenant.name}-{az}"]
            assert (policy.inputs["apiVersion"], policy.inputs["kind"]) == ("cilium.io/v2", "CiliumEgressGatewayPolicy")
            assert "namespace" not in policy.inputs["metadata"]  # cluster-scoped
            spec = policy.inputs["spec"]
            # The tenant's labelled pods, in its namespace, on nodes of this AZ only...
            assert spec["selectors"] == [{
                "podSelector": {"matchLabels": {"egress/tenant": tenant.name,
                                                "io.kubernetes.pod.namespace": tenant.k8s_namespace}},
                "nodeSelector": {"matchLabels": {"topology.kubernetes.io/zone": az}},
            }]
            assert spec["destinationCIDRs"] == [str(u.cidr) for u in tenant.upstreams]
            # ...through this AZ's gateway, only once its egress IPs are up, with the tenant's IP there.
            assert spec["egressGateway"] == {
                "nodeSelector": {"matchLabels": {"egress/gateway": "cilium", "topology.kubernetes.io/zone": az,
                                                 "egress/eni-ready": "true"}},
                "egressIP": str(ips[az]),
            }
            assert "egressGateways" not in spec
            for group in _gateway_groups(graph).values():
                assert group.urn in policy.dependencies


def test_a_gateway_loss_affects_only_its_own_azs_pods(graph):
    """Every tenant pod, on a node in any AZ, matches exactly one policy, and
    that policy's gateway is in the pod's AZ: losing one gateway leaves every
    other AZ's pods on their own gateways."""
    plan = graph.plan
    policies = [p.inputs["spec"] for p in _policies(graph).values()]
    for tenant in plan.settings.tenants:
        pod = {"egress/tenant": tenant.name, "io.kubernetes.pod.namespace": tenant.k8s_namespace}
        for node_az in plan.settings.availability_zones:
            node = {"topology.kubernetes.io/zone": node_az}
            matching = [
                spec for spec in policies
                if any(pod.items() >= sel["podSelector"]["matchLabels"].items()
                       and node.items() >= sel["nodeSelector"]["matchLabels"].items() for sel in spec["selectors"])
            ]
            assert len(matching) == 1, (tenant.name, node_az)
            gateway = matching[0]["egressGateway"]["nodeSelector"]["matchLabels"]
            assert gateway["topology.kubernetes.io/zone"] == node_az


def test_policies_validate_against_the_crd_schema(graph):
    for name, policy in _policies(graph).items():
        document = {k: policy.inputs[k] for k in ("apiVersion", "kind", "metadata", "spec")}
        assert crd_errors(document) == [], name
        ipaddress.IPv4Address(document["spec"]["egressGateway"]["egressIP"])  # the CRD's isIP rule (CEL)
    broken = copy.deepcopy(document)
    del broken["spec"]["destinationCIDRs"]
    assert crd_errors(broken)
    broken = copy.deepcopy(document)
    broken["spec"]["selectors"][0]["nodeSelector"]["zone"] = "eu-west-1a"  # not a label selector field
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


def test_warnings_state_which_pods_lose_egress_when_a_gateway_goes_and_for_how_long(graph):
    (warning,) = [w for w in graph.plan.warnings if "fail an egress IP over" in w]
    assert "AZ-local" in warning and "the tenants' pods on that AZ's nodes lose egress" in warning
    assert "Pods in the other 2 AZ(s) keep their egress" in warning
    assert "about a minute in a node group upgrade" in warning and "up to 30 minutes" in warning
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
    base = {k: v for k, v in config["egress:tenants"][0].items() if k != "iamRoleArn"}  # one role per tenant
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


def test_a_removed_tenants_reserved_slot_keeps_its_ip_and_counts_as_taken(stack_config):
    """The firewall may still trust a removed tenant's IPs: its slot stays
    reserved, so it is not offered as free, and the ENI keeps the address."""
    before = plan_from_config("cilium", offline.engine_config(stack_config))
    previous = {"assignment": before.settings.assignment.to_output()}
    removed = {**stack_config, "egress:tenants": stack_config["egress:tenants"][1:]}  # payments (slot 0) goes
    after = plan_from_config("cilium", offline.engine_config(removed), previous)
    (warning,) = [w for w in after.warnings if "tenant IPs" in w]
    assert "7 more tenant(s) fit (slots 2-8)" in warning
    assert _eni_lists(removed) == _eni_lists(stack_config)
    assert [str(ip) for ip in cilium.eni_ips(after.settings, after.addresses.egress_subnets[0])][1] == "10.40.68.5"


@hsettings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.permutations(range(9)).flatmap(lambda order: st.integers(1, 9).map(lambda n: order[:n])))
def test_any_set_and_order_of_tenants_leaves_every_eni_as_it_was(stack_config, order):
    """Property: whichever tenants exist, in whatever order, the ENIs hold the
    same addresses in the same order (their capacity, by slot)."""
    base = stack_config["egress:tenants"][0]
    tenants = [_clone(base, f"t{i}") for i in order]
    assert _eni_lists({**stack_config, "egress:tenants": tenants}) == _eni_lists(stack_config)
