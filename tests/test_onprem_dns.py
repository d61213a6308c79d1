"""On-prem names resolve in the VPC: a Route 53 Resolver outbound endpoint in the
cluster subnets forwards the on-prem domains to the on-prem resolvers."""

from __future__ import annotations

from conftest import assert_problem, config_with, planned
from patterns import offline

STACK = "subnet-cidr"
ENDPOINT = "aws:route53/resolverEndpoint:ResolverEndpoint"
RULE = "aws:route53/resolverRule:ResolverRule"
ASSOCIATION = "aws:route53/resolverRuleAssociation:ResolverRuleAssociation"
GROUP = "aws:ec2/securityGroup:SecurityGroup"


def test_outbound_endpoint_sits_in_every_cluster_subnet():
    graph = planned(STACK)
    (endpoint,) = graph.by_type(ENDPOINT)
    assert endpoint.inputs["direction"] == "OUTBOUND"
    subnets = [graph.by_id(a["subnetId"]) for a in endpoint.inputs["ipAddresses"]]
    assert all(s.name.startswith("egress-cluster-") for s in subnets)
    # AWS requires at least two IPs in two AZs: one per AZ, and there are 2-4 AZs.
    assert len({s.inputs["availabilityZone"] for s in subnets}) == len(subnets) == 3


def test_endpoint_may_only_speak_dns_to_the_resolvers():
    graph = planned(STACK)
    (endpoint,) = graph.by_type(ENDPOINT)
    (group_id,) = endpoint.inputs["securityGroupIds"]
    group = graph.by_id(group_id)
    assert not group.inputs.get("ingress")
    rules = {(r["protocol"], r["fromPort"], r["toPort"]): r["cidrBlocks"] for r in group.inputs["egress"]}
    assert rules == {("udp", 53, 53): ["10.100.0.53/32", "10.101.0.53/32"],
                     ("tcp", 53, 53): ["10.100.0.53/32", "10.101.0.53/32"]}


def test_each_domain_is_forwarded_to_the_resolvers_and_associated_with_the_vpc():
    config = config_with(onPremDns={"domains": ["corp.example", "Branch.Example."],
                                    "resolverIps": ["10.100.0.53", "10.101.0.53"]})
    graph = offline.run("dns", config)
    (endpoint,) = graph.by_type(ENDPOINT)
    rules = {r.inputs["domainName"]: r for r in graph.by_type(RULE)}
    assert set(rules) == {"corp.example", "branch.example"}
    vpc = graph.get("aws:ec2/vpc:Vpc", "egress-vpc")
    for rule in rules.values():
        assert rule.inputs["ruleType"] == "FORWARD"
        assert rule.inputs["resolverEndpointId"] == endpoint.id
        assert rule.inputs["targetIps"] == [{"ip": "10.100.0.53", "port": 53}, {"ip": "10.101.0.53", "port": 53}]
        (association,) = [a for a in graph.by_type(ASSOCIATION) if a.inputs["resolverRuleId"] == rule.id]
        assert association.inputs["vpcId"] == vpc.id


def test_without_on_prem_dns_nothing_is_created_and_the_hosts_are_named():
    plan = offline.plan_from_config("x", offline.engine_config(config_with(onPremDns=None)))
    (warning,) = [w for w in plan.warnings if "upstream hosts" in w]
    assert "corebank.corp.example, dwh.corp.example" in warning and "egress:onPremDns" in warning
    graph = offline.run("nodns", config_with(onPremDns=None))
    assert not graph.by_type(ENDPOINT) and not graph.by_type(RULE)
    assert not [w for w in planned(STACK).plan.warnings if "upstream hosts" in w]


def test_hosts_outside_the_forwarded_domains_are_named():
    config = config_with(onPremDns={"domains": ["dwh.corp.example"], "resolverIps": ["10.100.0.53"]})
    (warning,) = [w for w in offline.plan_from_config("x", offline.engine_config(config)).warnings
                  if "upstream hosts" in w]
    assert "upstream hosts corebank.corp.example resolve" in warning and "onPremDns.domains" in warning


def test_bad_on_prem_dns_is_refused_with_the_key():
    def dns(**fields):
        return config_with(onPremDns={"domains": ["corp.example"], "resolverIps": ["10.100.0.53"], **fields})

    assert_problem(dns(domains=["*.corp.example"]), "egress:onPremDns.domains[0]", "not a DNS domain", "no wildcards")
    assert_problem(dns(domains=["corp"]), "egress:onPremDns.domains[0]", "top-level domain")
    assert_problem(dns(domains=[]), "egress:onPremDns.domains", "is empty")
    assert_problem(dns(domains=["corp.example", "corp.example."]), "egress:onPremDns.domains[1]", "list it once")
    assert_problem(dns(resolverIps=["10.100.0.300"]), "egress:onPremDns.resolverIps[0]", "not an IPv4 address")
    assert_problem(dns(resolverIps=["192.168.1.53"]), "egress:onPremDns.resolverIps[0]",
                   "outside egress:onPremCidrs (10.100.0.0/14)")
    assert_problem(dns(resolverIps=[]), "egress:onPremDns.resolverIps", "is empty")
    assert_problem(dns(resolverIp=["10.100.0.53"]), "egress:onPremDns.resolverIp", "did you mean 'resolverIps'")
    assert_problem(config_with(transitGatewayId=""), "egress:onPremDns", "needs egress:transitGatewayId")
