"""The private-nat pattern: private NAT gateways per AZ per egress profile, tenant
subnets in a secondary range, routes to the same-AZ NAT of the tenant's profile."""

from __future__ import annotations

import ipaddress
import json

import pytest

from conftest import NAT, ROUTE, RTA, SUBNET
from patterns import offline
from patterns.addressing import usable_host
from patterns.program import plan_from_config
from patterns.settings import ConfigError

STACK = "private-nat"
AZS = ["eu-west-1a", "eu-west-1b", "eu-west-1c"]
PROFILES = {"payments": 0, "warehouse": 8}  # slot: payments = its tenant's slot, warehouse pinned
TENANT_PROFILE = {"payments": "payments", "reporting": "warehouse", "analytics": "warehouse"}
RT = "aws:ec2/routeTable:RouteTable"


def stack_config() -> dict:
    return offline.read_stack_file(offline.stack_path(STACK))


def plan(config: dict):
    return plan_from_config(STACK, offline.engine_config(config))


def problems(config: dict) -> dict[str, list[str]]:
    with pytest.raises(ConfigError) as caught:
        plan(config)
    found: dict[str, list[str]] = {}
    for problem in caught.value.problems:
        found.setdefault(problem.key, []).append(problem.message)
    return found


def rid(resource) -> str:
    return resource.id  # the offline engine's id for a resource


def egress_subnet_cidrs(graph) -> dict[str, ipaddress.IPv4Network]:
    return {s.az: s.cidr for s in graph.plan.addresses.egress_subnets}


def routes_of(graph, table_name: str) -> dict[str, dict]:
    table = graph.get("aws:ec2/routeTable:RouteTable", table_name)
    return {
        r.inputs["destinationCidrBlock"]: r.inputs
        for r in graph.by_type(ROUTE)
        if r.inputs["routeTableId"] == rid(table)
    }


# --- NAT gateways ---------------------------------------------------------------


def test_one_private_nat_per_az_per_profile_in_that_azs_nat_subnet(graph):
    nats = [n for n in graph.by_type(NAT) if n.inputs["connectivityType"] == "private"]
    assert sorted(n.name for n in nats) == sorted(f"egress-nat-{p}-{az}" for p in PROFILES for az in AZS)
    for profile in PROFILES:
        for az in AZS:
            nat = graph.get(NAT, f"egress-nat-{profile}-{az}")
            subnet = graph.get(SUBNET, f"egress-gateway-{az}")
            assert nat.inputs["subnetId"] == rid(subnet)
            assert subnet.inputs["availabilityZone"] == az
            assert subnet.inputs["cidrBlock"] == str(egress_subnet_cidrs(graph)[az])
            assert "allocationId" not in nat.inputs  # private: no Elastic IP


def test_nat_subnets_are_in_the_routable_primary_range_clear_of_on_prem(graph):
    settings = graph.plan.settings
    for cidr in egress_subnet_cidrs(graph).values():
        assert cidr.subnet_of(settings.vpc_cidr)
        assert not any(cidr.overlaps(o) for o in settings.on_prem_cidrs)


def test_nat_ips_are_pinned_inside_their_subnet_in_the_profiles_block(graph):
    cidrs = egress_subnet_cidrs(graph)
    for profile, slot in PROFILES.items():
        secondaries = 1 if profile == "warehouse" else 0
        for az in AZS:
            nat = graph.get(NAT, f"egress-nat-{profile}-{az}")
            expected = [str(usable_host(cidrs[az], slot * 8 + i)) for i in range(1 + secondaries)]
            assert nat.inputs["privateIp"] == expected[0]
            assert nat.inputs.get("secondaryPrivateIpAddresses", []) == expected[1:]
            for ip in expected:
                assert ipaddress.IPv4Address(ip) in cidrs[az]
    assert graph.get(NAT, "egress-nat-payments-eu-west-1a").inputs["privateIp"] == "10.30.68.4"
    assert graph.get(NAT, "egress-nat-warehouse-eu-west-1b").inputs["secondaryPrivateIpAddresses"] == ["10.30.69.69"]


# --- the secondary range and tenant subnets ----------------------------------------


def test_secondary_range_is_associated_before_tenant_subnets(graph):
    association = graph.get("aws:ec2/vpcIpv4CidrBlockAssociation:VpcIpv4CidrBlockAssociation", "egress-tenant-range")
    assert association.inputs["cidrBlock"] == "100.64.0.0/16"
    assert association.inputs["vpcId"] == rid(graph.get("aws:ec2/vpc:Vpc", "egress-vpc"))
    tenant_range = ipaddress.IPv4Network("100.64.0.0/16")
    for tenant in TENANT_PROFILE:
        for az in AZS:
            subnet = graph.get(SUBNET, f"{tenant}-{az}")
            assert ipaddress.IPv4Network(subnet.inputs["cidrBlock"]).subnet_of(tenant_range)
            assert association.urn in subnet.dependencies
    # NAT subnets live in the primary range and need not wait for it.
    assert association.urn not in graph.get(SUBNET, "egress-gateway-eu-west-1a").dependencies


def test_endpoint_security_group_admits_the_tenant_range(graph):
    sg = graph.get("aws:ec2/securityGroup:SecurityGroup", "egress-endpoints")
    assert sg.inputs["ingress"][0]["cidrBlocks"] == ["10.30.0.0/16", "100.64.0.0/16"]


# --- routing ----------------------------------------------------------------------


def tenant_table(graph, tenant: str, az: str):
    association = graph.get(RTA, f"{tenant}-{az}")
    assert association.inputs["subnetId"] == rid(graph.get(SUBNET, f"{tenant}-{az}"))
    return next(
        t for t in graph.by_type("aws:ec2/routeTable:RouteTable") if rid(t) == association.inputs["routeTableId"]
    )


def test_every_tenant_subnet_routes_on_prem_to_its_profiles_nat_in_the_same_az(graph):
    for tenant, profile in TENANT_PROFILE.items():
        for az in AZS:
            table = tenant_table(graph, tenant, az)
            assert table.name == f"egress-profile-{profile}-{az}"
            routes = routes_of(graph, table.name)
            nat = graph.get(NAT, f"egress-nat-{profile}-{az}")
            assert routes["10.100.0.0/14"]["natGatewayId"] == rid(nat)
            # Internet (image registries) through the same-AZ public NAT, as the base does.
            assert routes["0.0.0.0/0"]["natGatewayId"] == rid(graph.get(NAT, f"egress-nat-{az}"))
            assert set(routes) == {"10.100.0.0/14", "0.0.0.0/0"}


def test_tenants_sharing_a_profile_share_its_route_tables_and_nats(graph):
    for az in AZS:
        assert tenant_table(graph, "reporting", az).urn == tenant_table(graph, "analytics", az).urn
        assert tenant_table(graph, "payments", az).urn != tenant_table(graph, "reporting", az).urn
    tables = {t.name for t in graph.by_type("aws:ec2/routeTable:RouteTable") if t.name.startswith("egress-profile-")}
    assert tables == {f"egress-profile-{p}-{az}" for p in PROFILES for az in AZS}


def test_profile_tables_reach_s3_through_the_gateway_endpoint(graph):
    s3 = graph.get("aws:ec2/vpcEndpoint:VpcEndpoint", "egress-s3")
    associated = {
        a.inputs["routeTableId"]
        for a in graph.by_type("aws:ec2/vpcEndpointRouteTableAssociation:VpcEndpointRouteTableAssociation")
        if a.inputs["vpcEndpointId"] == rid(s3)
    }
    for profile in PROFILES:
        for az in AZS:
            assert graph.get(RT, f"egress-profile-{profile}-{az}").id in associated
            assert graph.get(RT, f"egress-private-{az}").id in associated


def test_nat_subnets_route_on_prem_to_the_transit_gateway(graph):
    for az in AZS:
        association = graph.get(RTA, f"egress-gateway-{az}")
        assert association.inputs["routeTableId"] == graph.get(RT, f"egress-private-{az}").id
        routes = routes_of(graph, f"egress-private-{az}")
        assert routes["10.100.0.0/14"]["transitGatewayId"] == "tgw-0a1b2c3d4e5f60718"


def test_with_internet_over_the_transit_gateway_tenants_leave_translated():
    config = stack_config()
    config["egress:internetEgress"] = "transit-gateway"
    graph = offline.run(STACK, config)
    for az in AZS:
        nat = graph.get(NAT, f"egress-nat-warehouse-{az}")
        routes = routes_of(graph, f"egress-profile-warehouse-{az}")
        # The tenant range is non-routable: everything leaves through the private NAT.
        assert routes["0.0.0.0/0"]["natGatewayId"] == rid(nat)
        assert routes["10.100.0.0/14"]["natGatewayId"] == rid(nat)
        assert routes_of(graph, f"egress-private-{az}")["0.0.0.0/0"]["transitGatewayId"] == "tgw-0a1b2c3d4e5f60718"
    assert not [n for n in graph.by_type(NAT) if n.inputs["connectivityType"] == "public"]


# --- CNI and tenancy ------------------------------------------------------------------


def test_vpc_cni_runs_with_external_snat_and_network_policy(graph):
    addon = graph.get("aws:eks/addon:Addon", "egress-vpc-cni")
    configuration = json.loads(addon.inputs["configurationValues"])
    assert configuration["env"]["AWS_VPC_K8S_CNI_EXTERNALSNAT"] == "true"
    assert configuration["enableNetworkPolicy"] == "true"


def test_each_tenant_namespace_may_reach_only_its_own_upstreams(graph):
    policy = graph.get("kubernetes:networking.k8s.io/v1:NetworkPolicy", "analytics-allow-egress")
    assert policy.inputs["spec"]["egress"] == [
        {"to": [{"ipBlock": {"cidr": "10.102.0.0/24"}}],
         "ports": [{"protocol": "TCP", "port": 443}, {"protocol": "TCP", "port": 5439}]}
    ]
    payments = graph.get("kubernetes:networking.k8s.io/v1:NetworkPolicy", "payments-allow-egress")
    assert [r["to"][0]["ipBlock"]["cidr"] for r in payments.inputs["spec"]["egress"]] == [
        "10.100.10.0/24", "10.101.4.16/28"
    ]


def test_tenant_node_groups_are_tainted_and_confined_to_their_subnets(graph):
    group = graph.get("aws:eks/nodeGroup:NodeGroup", "reporting")
    assert group.inputs["subnetIds"] == [graph.get("aws:ec2/subnet:Subnet", f"reporting-{az}").id for az in AZS]
    assert {"key": "egress/tenant", "value": "reporting", "effect": "NO_SCHEDULE"} in group.inputs["taints"]


# --- allow-list and outputs ----------------------------------------------------------


def test_allow_list_is_every_ip_of_the_profiles_nats_and_equals_the_output(graph):
    assert graph.outputs["egressAllowList"] == graph.plan.allow_list_json()
    for entry in graph.outputs["egressAllowList"]:
        profile = TENANT_PROFILE[entry["tenant"]]
        nats = [graph.get(NAT, f"egress-nat-{profile}-{az}") for az in AZS]
        ips = [ip for n in nats for ip in [n.inputs["privateIp"], *n.inputs.get("secondaryPrivateIpAddresses", [])]]
        assert entry["sources"] == [f"{ip}/32" for ip in ips]
    by_tenant = {e["tenant"]: e["sources"] for e in graph.outputs["egressAllowList"]}
    assert by_tenant["payments"] == ["10.30.68.4/32", "10.30.69.4/32", "10.30.70.4/32"]
    assert by_tenant["reporting"] == by_tenant["analytics"]
    assert len(by_tenant["reporting"]) == 6
    assert graph.plan.warnings == ()


def test_nat_ips_stay_put_when_tenants_are_appended_or_secondaries_added():
    before = {e.tenant: e.sources for e in plan(stack_config()).allow_list}
    config = stack_config()
    config["egress:tenants"].append(
        {"name": "audit", "upstreams": [{"name": "siem", "cidr": "10.103.0.0/24", "ports": [6514]}]}
    )
    config["egress:privateNat"]["profiles"]["warehouse"]["secondaryIps"] = 3
    after = {e.tenant: e.sources for e in plan(config).allow_list}
    assert after["payments"] == before["payments"]
    assert set(before["reporting"]) < set(after["reporting"])
    assert len(after["reporting"]) == 3 * 4
    others = {ip for tenant, sources in after.items() if tenant != "audit" for ip in sources}
    assert after["audit"] and not set(after["audit"]) & others


def test_vpc_and_cluster_urns_are_the_same_as_under_subnet_cidr(graph):
    other = stack_config()
    other["egress:pattern"] = "subnet-cidr"
    del other["egress:privateNat"]
    for tenant in other["egress:tenants"]:
        tenant.pop("egressProfile", None)
    subnet_cidr = offline.run(STACK, other)
    for type_, name in (("aws:ec2/vpc:Vpc", "egress-vpc"), ("eks:index:Cluster", "egress"),
                        ("egress:base:Cluster", "egress"), ("aws:kms/key:Key", "egress-secrets")):
        mine, theirs = graph.get(type_, name), subnet_cidr.get(type_, name)
        assert mine.urn == theirs.urn
        assert mine.inputs == theirs.inputs


# --- validation -----------------------------------------------------------------------


def test_more_than_eight_ips_per_nat_is_rejected():
    config = stack_config()
    config["egress:privateNat"]["profiles"]["warehouse"]["secondaryIps"] = 8
    found = problems(config)
    assert found == {
        "egress:privateNat.profiles.warehouse.secondaryIps": [
            "8 is out of range: a NAT gateway holds at most 8 private IPs (1 primary + 7 secondary); "
            "use 0-7, and move some tenants to another profile for more capacity"
        ]
    }


def test_tenant_cidr_must_not_overlap_the_vpc():
    config = stack_config()
    config["egress:privateNat"]["tenantCidr"] = "10.30.128.0/17"
    message = problems(config)["egress:privateNat.tenantCidr"]
    assert message == ["10.30.128.0/17 overlaps egress:vpcCidr 10.30.0.0/16; it is a second range of the VPC, "
                       "so pick one outside it, e.g. 100.64.0.0/16"]


def test_tenant_cidr_must_be_associable_with_the_vpc():
    config = stack_config()
    config["egress:privateNat"]["tenantCidr"] = "172.20.0.0/16"
    assert problems(config) == {
        "egress:privateNat.tenantCidr": [
            "AWS does not associate 172.20.0.0/16 (172.16.0.0/12) with a VPC whose primary range is in "
            "10.0.0.0/8; use a range in 10.0.0.0/8 or in 100.64.0.0/10"
        ]
    }
    config["egress:privateNat"]["tenantCidr"] = "100.64.0.0/12"
    assert problems(config) == {
        "egress:privateNat.tenantCidr": [
            "100.64.0.0/12 cannot be a VPC range; AWS accepts /16 to /28, e.g. 100.64.0.0/16"
        ]
    }


@pytest.mark.parametrize(
    "vpc, tenant_cidr, restricted, advice",
    [
        # One case per row of the VPC guide's association restrictions table.
        ("10.0.0.0/16", "10.1.0.0/16", None, None),
        ("10.1.0.0/16", "10.0.0.0/16", "10.0.0.0/16", "10.0.0.0/8 outside 10.0.0.0/16, or in 100.64.0.0/10"),
        ("10.30.0.0/16", "10.0.0.0/16", None, None),  # primary outside 10.0.0.0/15: 10.0.0.0/16 is fine
        ("10.30.0.0/16", "192.168.0.0/16", "192.168.0.0/16", "10.0.0.0/8 or in 100.64.0.0/10"),
        ("172.20.0.0/16", "172.31.0.0/16", "172.31.0.0/16", "172.16.0.0/12 outside 172.31.0.0/16"),
        ("172.20.0.0/16", "172.21.0.0/16", None, None),
        ("192.168.0.0/16", "10.40.0.0/16", "10.0.0.0/8", "192.168.0.0/16 or in 100.64.0.0/10"),
        ("100.64.0.0/16", "10.40.0.0/16", "10.0.0.0/8", "100.64.0.0/10"),
        ("100.64.0.0/16", "100.65.0.0/16", None, None),
        ("172.20.0.0/16", "100.64.0.0/16", None, None),
    ],
)
def test_tenant_cidr_follows_the_association_restrictions_table(vpc, tenant_cidr, restricted, advice):
    config = stack_config()
    config["egress:vpcCidr"] = vpc
    config["egress:privateNat"]["tenantCidr"] = tenant_cidr
    if restricted is None:
        plan(config)  # accepted
        return
    (message,) = problems(config)["egress:privateNat.tenantCidr"]
    assert message.startswith(f"AWS does not associate {tenant_cidr} ({restricted}) with a VPC whose primary range")
    assert advice in message


def test_on_prem_ranges_inside_the_tenant_range_are_refused():
    config = stack_config()
    config["egress:onPremCidrs"] = ["10.100.0.0/14", "100.64.8.0/24", "100.64.0.0/16"]
    found = problems(config)
    for index, onprem in ((1, "100.64.8.0/24"), (2, "100.64.0.0/16")):
        assert found[f"egress:onPremCidrs[{index}]"] == [
            f"{onprem} lies inside egress:privateNat.tenantCidr 100.64.0.0/16, so AWS refuses its route and the "
            "tenants could not reach it; move tenantCidr to a range clear of it, e.g. 100.65.0.0/16"
        ]


def test_tenant_cidr_may_overlap_on_prem_but_not_a_tenants_upstream():
    config = stack_config()
    config["egress:privateNat"]["tenantCidr"] = "10.103.0.0/16"  # on-prem, no upstream there: fine
    assert plan(config).addresses.tenants["payments"].subnets[0].cidr.subnet_of(ipaddress.IPv4Network("10.103.0.0/16"))
    config["egress:privateNat"]["tenantCidr"] = "10.102.0.0/16"
    found = problems(config)
    assert set(found) == {"egress:tenants[1].upstreams[0].cidr", "egress:tenants[2].upstreams[0].cidr"}
    assert found["egress:tenants[1].upstreams[0].cidr"] == [
        "10.102.0.0/24 overlaps egress:privateNat.tenantCidr 10.102.0.0/16: the VPC's local route wins, "
        "so the tenant could never reach it; move tenantCidr off the upstreams' ranges"
    ]


def test_nat_subnets_overlapping_on_prem_are_rejected():
    config = stack_config()
    config["egress:vpcCidr"] = "10.100.0.0/16"  # inside on-prem 10.100.0.0/14
    found = problems(config)
    assert "10.100.0.0/14 overlaps egress:vpcCidr 10.100.0.0/16" in found["egress:onPremCidrs[0]"][0]


def test_a_profile_without_a_slot_is_rejected():
    config = stack_config()
    config["egress:tenants"][0]["egressProfile"] = "card-schemes"
    assert problems(config) == {
        "egress:tenants[0].egressProfile": [
            "profile 'card-schemes' has no slot: no tenant is named after it and "
            "egress:privateNat.profiles.card-schemes.slot is not set; pin it there (a number no other "
            "profile uses), or name an existing tenant's profile"
        ]
    }


def test_profiles_may_not_share_a_slot_or_outgrow_the_nat_subnet():
    config = stack_config()
    config["egress:privateNat"]["profiles"]["warehouse"]["slot"] = 0
    assert problems(config) == {
        "egress:privateNat.profiles.warehouse.slot": [
            "profile 'warehouse' gets slot 0, already held by profile 'payments'; "
            "pin a free slot under egress:privateNat.profiles.warehouse.slot"
        ]
    }
    config = stack_config()
    config["egress:egressSubnetPrefix"] = 27  # 27 usable addresses: three blocks of 8
    assert problems(config) == {
        "egress:privateNat.profiles.warehouse.slot": [
            "profile 'warehouse' (slot 8) does not fit: each egress subnet (/27) holds 3 profile(s) of 8 "
            "NAT IPs; pin a lower slot under egress:privateNat.profiles.warehouse.slot or use a shorter "
            "egress:egressSubnetPrefix"
        ]
    }


def test_every_pattern_problem_is_reported_at_once_before_any_resource():
    config = stack_config()
    config["egress:privateNat"]["tenantCidr"] = "10.30.0.0/16"
    config["egress:tenants"][0]["egressProfile"] = "nowhere"
    with pytest.raises(ConfigError) as caught:
        offline.run(STACK, config)  # raises while planning, before the program registers anything
    assert {p.key for p in caught.value.problems} == {
        "egress:privateNat.tenantCidr", "egress:tenants[0].egressProfile"
    }


def test_unknown_private_nat_keys_name_the_fix():
    config = stack_config()
    config["egress:privateNat"]["profiles"]["warehouse"]["secondaryIp"] = 1
    assert problems(config) == {
        "egress:privateNat.profiles.warehouse.secondaryIp": ["unknown key; did you mean 'secondaryIps'?"]
    }


# --- warnings ---------------------------------------------------------------------------


def test_warns_when_connections_per_destination_exceed_the_nats_ips():
    config = stack_config()
    config["egress:tenants"][0]["expectedConnectionsPerDestination"] = 60_000
    (warning,) = plan(config).warnings
    assert warning.startswith("profile 'payments': tenants payments expect up to 60,000 simultaneous connections")
    assert "more than the 55,000 one NAT gateway with 1 IP(s) holds" in warning
    assert "raise egress:privateNat.profiles.payments.secondaryIps" in warning
    # The shared profile adds up its tenants: 40,000 + 75,000 > 2 x 55,000.
    config = stack_config()
    config["egress:tenants"][2]["expectedConnectionsPerDestination"] = 75_000
    (warning,) = plan(config).warnings
    assert "profile 'warehouse': tenants reporting, analytics expect up to 115,000" in warning
    config["egress:privateNat"]["profiles"]["warehouse"]["secondaryIps"] = 2
    assert plan(config).warnings == ()


def test_warns_at_the_nat_gateway_quota_per_az():
    config = stack_config()
    extra = [{"name": f"t{i}", "upstreams": [{"name": "dwh", "cidr": "10.102.0.0/24", "ports": [443]}]} for i in range(2)]
    config["egress:tenants"] += extra  # 4 private + 1 public NAT per AZ
    (warning,) = plan(config).warnings
    assert "puts 5 NAT gateways in each AZ (4 private (one per egress profile) + 1 public" in warning
    assert "another profile needs a quota increase" in warning
    config["egress:tenants"].append({**extra[0], "name": "t9"})
    (warning,) = plan(config).warnings
    assert "puts 6 NAT gateways in each AZ" in warning and "request an increase in Service Quotas" in warning


def test_warns_about_shared_profiles_with_different_upstreams_and_unused_profiles():
    config = stack_config()
    config["egress:tenants"][2]["upstreams"][0]["ports"] = [443]
    config["egress:privateNat"]["profiles"]["spare"] = {"slot": 9}
    warnings = plan(config).warnings
    assert len(warnings) == 2
    assert warnings[0].startswith("profile 'warehouse' is shared by tenants with different upstreams")
    assert warnings[1] == "egress:privateNat.profiles.spare is not used by any tenant (egressProfile); it creates nothing"


def test_tenants_that_do_not_fit_the_tenant_range_name_its_key():
    config = stack_config()
    config["egress:privateNat"] = {**config.get("egress:privateNat", {}), "tenantCidr": "100.64.0.0/22"}
    plan(config)  # the derived tenant subnets (/27) fit a /22 tenant range
    config["egress:tenantSubnetPrefix"] = 23
    found = problems(config)
    messages = [m for key, ms in found.items() if key.startswith("egress:tenants[") for m in ms]
    assert any("does not fit" in m and "use a /19 or larger egress:privateNat.tenantCidr" in m
               for m in messages), found
