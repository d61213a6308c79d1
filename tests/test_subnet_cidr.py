"""Pattern 1: tenant subnets in every AZ, a tainted node group per tenant only
there, the tenant namespace with default-deny egress; allow-list = subnets."""

from __future__ import annotations

from conftest import NETPOL, NODE_GROUP, SUBNET, config_with, problems
from patterns import offline

STACK = "subnet-cidr"
PAYMENTS = ["10.20.72.0/23", "10.20.74.0/23", "10.20.76.0/23"]
REPORTING = ["10.20.80.0/23", "10.20.82.0/23", "10.20.84.0/23"]


def tenant_subnets(graph, tenant):
    return {r.inputs["availabilityZone"]: r for r in graph.by_type(SUBNET) if r.name.startswith(f"{tenant}-")}


def test_each_tenant_has_a_subnet_in_every_az(graph):
    for tenant, cidrs in (("payments", PAYMENTS), ("reporting", REPORTING)):
        subnets = tenant_subnets(graph, tenant)
        assert [subnets[az].inputs["cidrBlock"] for az in ("eu-west-1a", "eu-west-1b", "eu-west-1c")] == cidrs
        for az, subnet in subnets.items():
            assert subnet.inputs["mapPublicIpOnLaunch"] is False
            assert subnet.inputs["tags"]["egress/tenant"] == tenant
            association = graph.get("aws:ec2/routeTableAssociation:RouteTableAssociation", f"{tenant}-{az}")
            assert association.inputs["subnetId"] == subnet.id
            # The AZ's private route table: on-prem via the transit gateway, in-AZ NAT for the internet.
            assert association.inputs["routeTableId"] == graph.get(
                "aws:ec2/routeTable:RouteTable", f"egress-private-{az}").id


def test_tenant_node_group_is_tainted_labelled_and_confined_to_its_subnets(graph):
    for tenant in ("payments", "reporting"):
        group = graph.get(NODE_GROUP, tenant)
        subnets = tenant_subnets(graph, tenant)
        assert sorted(group.inputs["subnetIds"]) == sorted(s.id for s in subnets.values())
        assert group.inputs["taints"] == [{"key": "egress/tenant", "value": tenant, "effect": "NO_SCHEDULE"}]
        assert group.inputs["labels"] == {"egress/tenant": tenant}
    assert graph.get(NODE_GROUP, "payments").inputs["scalingConfig"] == {"minSize": 2, "desiredSize": 2, "maxSize": 6}
    system = graph.get(NODE_GROUP, "egress-system")
    assert "taints" not in system.inputs or system.inputs["taints"] == []


def test_namespace_and_network_policies(graph):
    namespace = graph.get("kubernetes:core/v1:Namespace", "reporting")
    assert namespace.inputs["metadata"]["name"] == "reporting-prod"
    labels = namespace.inputs["metadata"]["labels"]
    assert labels["egress/tenant"] == "reporting"
    assert labels["pod-security.kubernetes.io/enforce"] == "baseline"

    deny = graph.get(NETPOL, "payments-default-deny").inputs["spec"]
    assert deny == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
    dns = graph.get(NETPOL, "payments-allow-dns").inputs["spec"]["egress"][0]
    assert dns["ports"] == [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]
    assert dns["to"][0]["podSelector"] == {"matchLabels": {"k8s-app": "kube-dns"}}
    egress = graph.get(NETPOL, "payments-allow-egress").inputs["spec"]["egress"]
    assert egress == [
        {"to": [{"ipBlock": {"cidr": "10.100.10.0/24"}}], "ports": [{"protocol": "TCP", "port": 443}]},
        {"to": [{"ipBlock": {"cidr": "10.101.4.16/28"}}], "ports": [{"protocol": "TCP", "port": 1521}]},
    ]
    for policy in graph.by_type(NETPOL):
        # Tenants' own, and the add-ons' allow-all under the VPC CNI's strict mode.
        assert policy.inputs["metadata"]["namespace"] in ("payments", "reporting-prod", "kube-system", "kyverno")
        assert policy.provider.endswith("::egress-k8s")


def test_allow_list_output_equals_the_plan(graph):
    allow = {entry["tenant"]: entry for entry in graph.outputs["egressAllowList"]}
    assert allow["payments"]["sources"] == PAYMENTS
    assert allow["reporting"]["sources"] == REPORTING
    assert allow["payments"]["destinations"][1] == {
        "name": "ledger-db", "cidr": "10.101.4.16/28", "host": None, "ports": [1521], "protocol": "TCP",
    }
    assert graph.outputs["egressAllowList"] == graph.plan.allow_list_json()


def test_more_tenants_than_the_node_group_quota_get_a_warning():
    tenants = [
        {"name": f"app{i:02d}", "upstreams": [{"name": "db", "cidr": "10.100.0.0/24", "ports": [443]}]}
        for i in range(30)
    ]
    config = config_with(tenantSubnetPrefix=24, tenants=tenants)  # a /16 VPC holds 46 such tenants
    assert problems(config) == []
    plan = offline.run("quota", config).plan
    assert any("31 managed node groups" in w and "quota" in w for w in plan.warnings)
    assert not offline.run("small", config_with()).plan.warnings
