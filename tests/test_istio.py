"""The istio pattern: egress gateway nodes and subnets, the Istio install, the
five Istio objects per upstream, the bypass guard, and the allow-list."""

from __future__ import annotations

import copy
import json

import pytest

from conftest import NETPOL, RELEASE
from patterns import istio, offline
from patterns.settings import ConfigError
from istio_injection import injected
from kyverno_engine import api_server_pod, review
from patterns.guardrails import cluster_policies
from schemas import crd_errors, helm_values_validator


STACK = "istio"  # the graph fixture (conftest)
KINDS = ("ServiceEntry", "Gateway", "VirtualService", "DestinationRule", "AuthorizationPolicy")
TYPES = {
    "ServiceEntry": "kubernetes:networking.istio.io/v1:ServiceEntry",
    "Gateway": "kubernetes:networking.istio.io/v1:Gateway",
    "VirtualService": "kubernetes:networking.istio.io/v1:VirtualService",
    "DestinationRule": "kubernetes:networking.istio.io/v1:DestinationRule",
    "AuthorizationPolicy": "kubernetes:security.istio.io/v1:AuthorizationPolicy",
    "PeerAuthentication": "kubernetes:security.istio.io/v1:PeerAuthentication",
}
GW = "istio-egressgateway.istio-egress.svc.cluster.local"

# (tenant, namespace, upstream, host, [(port, gateway port)], SNI match?)
EXPECTED = [
    ("payments", "payments", "core-banking", "corebank.corp.example", [(443, 20000)], True),
    ("payments", "payments", "ledger-db", "ledger-db.corp.example", [(1521, 20001)], False),
    ("reporting", "reporting-prod", "data-warehouse", "dwh.corp.example", [(443, 20100), (5439, 20101)], True),
    ("reporting", "reporting-prod", "core-banking", "corebank.corp.example", [(443, 20102)], True),
]


def _obj(graph, kind, name):
    return graph.get(TYPES[kind], name).inputs


# --- allow-list and egress nodes ---------------------------------------------


def test_allow_list_is_the_egress_subnets_and_equals_the_output(graph):
    plan = graph.plan
    egress = [str(s.cidr) for s in plan.addresses.egress_subnets]
    assert egress == ["10.40.68.0/24", "10.40.69.0/24", "10.40.70.0/24"]
    for entry in plan.allow_list:
        assert list(entry.sources) == egress
    by_tenant = {e.tenant: e for e in plan.allow_list}
    assert [d.host for d in by_tenant["reporting"].destinations] == ["dwh.corp.example", "corebank.corp.example"]
    assert by_tenant["reporting"].destinations[0].ports == (443, 5439)
    assert graph.outputs["egressAllowList"] == plan.allow_list_json()
    assert graph.outputs["pattern"] == "istio"


def test_egress_subnets_are_private_one_per_az_and_routed(graph):
    subnets = {s.az: s for s in graph.plan.addresses.egress_subnets}
    for az, planned in subnets.items():
        subnet = graph.get("aws:ec2/subnet:Subnet", f"egress-gateway-{az}").inputs
        assert subnet["cidrBlock"] == str(planned.cidr)
        assert subnet["availabilityZone"] == az
        assert subnet["mapPublicIpOnLaunch"] is False
        assert subnet["tags"]["egress/role"] == "gateway"
        assoc = graph.get("aws:ec2/routeTableAssociation:RouteTableAssociation", f"egress-gateway-{az}").inputs
        assert assoc["subnetId"] == graph.get("aws:ec2/subnet:Subnet", f"egress-gateway-{az}").id
        assert assoc["routeTableId"] == graph.get("aws:ec2/routeTable:RouteTable", f"egress-private-{az}").id


def test_egress_node_group_is_dedicated_tainted_and_in_the_egress_subnets(graph):
    group = graph.get("aws:eks/nodeGroup:NodeGroup", "egress-gateway").inputs
    azs = graph.plan.settings.availability_zones
    assert group["subnetIds"] == [graph.get("aws:ec2/subnet:Subnet", f"egress-gateway-{az}").id for az in azs]
    assert group["labels"] == {"egress/gateway": "istio"}
    assert group["taints"] == [{"key": "egress/gateway", "value": "istio", "effect": "NO_SCHEDULE"}]
    assert group["scalingConfig"]["minSize"] == 3 and group["scalingConfig"]["maxSize"] == 9
    assert group["instanceTypes"] == ["c6in.large"]
    system = graph.get("aws:eks/nodeGroup:NodeGroup", "egress-system").inputs
    assert "taints" not in system or system["taints"] == []


def test_istiod_ports_are_open_from_the_cluster_security_group(graph):
    rules = {r.inputs["fromPort"]: r.inputs for r in graph.by_type("aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule")
             if r.name.startswith("egress-istiod-")}
    assert set(rules) == {15017, 15012}
    for port, rule in rules.items():
        assert rule["toPort"] == port and rule["ipProtocol"] == "tcp"
        assert rule["securityGroupId"] == rule["referencedSecurityGroupId"] == "sg-egress-cluster"


# --- the Istio install -------------------------------------------------------


def _releases(graph):
    """Istio's releases (the guardrails add Kyverno's)."""
    return {r.inputs["chart"]: r for r in graph.by_type(RELEASE) if "istio" in r.inputs["repositoryOpts"]["repo"]}


def test_istio_charts_are_pinned_and_ordered(graph):
    releases = _releases(graph)
    assert set(releases) == {"base", "istiod", "cni", "gateway"}
    for release in releases.values():
        assert release.inputs["version"] == "1.30.3"
        assert release.inputs["repositoryOpts"]["repo"] == "https://istio-release.storage.googleapis.com/charts"
        assert release.inputs["timeout"] == 900
    assert releases["gateway"].inputs["namespace"] == "istio-egress"
    assert releases["gateway"].inputs["name"] == "istio-egressgateway"
    assert {releases[c].inputs["namespace"] for c in ("base", "istiod", "cni")} == {"istio-system"}
    assert releases["base"].urn in releases["istiod"].dependencies
    node_group = graph.get("aws:eks/nodeGroup:NodeGroup", "egress-gateway").urn
    assert {releases["istiod"].urn, node_group} <= set(releases["gateway"].dependencies)
    namespaces = {r.inputs["metadata"]["name"]: r.urn for r in graph.by_type("kubernetes:core/v1:Namespace")}
    for kind in KINDS + ("PeerAuthentication",):
        for resource in graph.by_type(TYPES[kind]):
            assert releases["istiod"].urn in resource.dependencies, resource.name
            assert namespaces[resource.inputs["metadata"]["namespace"]] in resource.dependencies, resource.name


def test_mesh_config_strict_mtls_registry_only_access_logs(graph):
    values = _releases(graph)["istiod"].inputs["values"]
    assert values["meshConfig"]["outboundTrafficPolicy"] == {"mode": "REGISTRY_ONLY"}
    assert values["meshConfig"]["accessLogFile"] == "/dev/stdout"
    assert values["cni"] == {"enabled": True}
    assert values["autoscaleMin"] >= 2
    peer = graph.get(TYPES["PeerAuthentication"], "egress-mesh-mtls").inputs
    assert peer["metadata"] == {"name": "default", "namespace": "istio-system"}
    assert peer["spec"] == {"mtls": {"mode": "STRICT"}}


def test_gateway_values(graph):
    values = _releases(graph)["gateway"].inputs["values"]
    assert values["service"]["type"] == "ClusterIP"
    ports = [(p["port"], p["targetPort"]) for p in values["service"]["ports"]]
    gateway_ports = [gp for *_, pairs, _ in EXPECTED for _, gp in pairs]
    assert ports == [(15021, 15021)] + [(p, p) for p in gateway_ports]
    assert values["nodeSelector"] == {"egress/gateway": "istio"}
    assert values["tolerations"] == [
        {"key": "egress/gateway", "operator": "Equal", "value": "istio", "effect": "NoSchedule"}
    ]
    spread = {c["topologyKey"]: c for c in values["topologySpreadConstraints"]}
    assert spread["topology.kubernetes.io/zone"]["whenUnsatisfiable"] == "DoNotSchedule"
    assert "kubernetes.io/hostname" in spread
    for constraint in spread.values():
        assert constraint["labelSelector"] == {"matchLabels": {"istio": "egressgateway"}}
    assert values["autoscaling"]["enabled"] is True and values["autoscaling"]["minReplicas"] == 3
    assert values["podDisruptionBudget"] == {"maxUnavailable": 1}
    assert values["resources"]["requests"] and values["resources"]["limits"]["memory"] == "1Gi"
    container = values["containerSecurityContext"]
    assert container["runAsNonRoot"] and container["readOnlyRootFilesystem"]
    assert container["allowPrivilegeEscalation"] is False and container["capabilities"] == {"drop": ["ALL"]}
    assert values["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}


def test_gateway_values_validate_against_the_chart_schema(graph):
    validator = helm_values_validator("gateway", istio.ISTIO_VERSION)
    values = _releases(graph)["gateway"].inputs["values"]
    validator.validate(values)
    assert list(validator.iter_errors({**values, "nodeSelectors": {}}))  # the chart's schema is strict


# --- the five objects per upstream -------------------------------------------


@pytest.mark.parametrize("tenant,namespace,upstream,host,ports,sni", EXPECTED)
def test_five_objects_per_upstream(graph, tenant, namespace, upstream, host, ports, sni):
    name = f"{tenant}.{upstream}"
    subset = f"{tenant}-{upstream}"
    gateway_ports = [gp for _, gp in ports]
    objs = {kind: _obj(graph, kind, f"{name}-{kind.lower()}") for kind in KINDS}

    se = objs["ServiceEntry"]  # what the tenant's sidecars match; the gateway's entry is per host
    assert se["metadata"] == {"name": upstream, "namespace": namespace}
    assert se["spec"]["hosts"] == [host] and se["spec"]["resolution"] == "NONE"
    assert se["spec"]["location"] == "MESH_EXTERNAL"
    assert [(p["number"], p["protocol"]) for p in se["spec"]["ports"]] == [(p, "TLS" if sni else "TCP") for p, _ in ports]
    assert se["spec"]["exportTo"] == ["."]
    upstream_cidr = next(str(u.cidr) for t in graph.plan.settings.tenants for u in t.upstreams
                         if t.name == tenant and u.name == upstream)
    assert se["spec"].get("addresses") == (None if sni else [upstream_cidr])

    gw = objs["Gateway"]
    assert gw["metadata"] == {"name": name, "namespace": "istio-egress"}
    assert gw["spec"]["selector"] == {"istio": "egressgateway"}
    assert [s["port"]["number"] for s in gw["spec"]["servers"]] == gateway_ports
    for server in gw["spec"]["servers"]:
        assert server["hosts"] == [f"{namespace}/{host}"] and server["tls"] == {"mode": "ISTIO_MUTUAL"}

    dr = objs["DestinationRule"]
    assert dr["metadata"]["namespace"] == namespace and dr["spec"]["host"] == GW
    [sub] = dr["spec"]["subsets"]
    assert sub["name"] == subset
    assert sub["trafficPolicy"]["portLevelSettings"] == [
        {"port": {"number": gp}, "tls": {"mode": "ISTIO_MUTUAL", "sni": host}} for gp in gateway_ports
    ]

    vs = objs["VirtualService"]["spec"]
    assert vs["hosts"] == [host] and vs["gateways"] == ["mesh", f"istio-egress/{name}"]
    mesh = vs["tls"] if sni else [r for r in vs["tcp"] if r["match"][0]["gateways"] == ["mesh"]]
    outbound = [r for r in vs["tcp"] if r["match"][0]["gateways"] != ["mesh"]]
    for (port, gp), to_gateway, at_gateway in zip(ports, mesh, outbound, strict=True):
        match = to_gateway["match"][0]
        assert match["port"] == port
        assert match.get("sniHosts") == ([host] if sni else None)
        assert to_gateway["route"] == [{"destination": {"host": GW, "subset": subset, "port": {"number": gp}}}]
        assert at_gateway["match"] == [{"gateways": [f"istio-egress/{name}"], "port": gp}]
        assert at_gateway["route"][0]["destination"] == {"host": host, "port": {"number": port}}

    ap = objs["AuthorizationPolicy"]
    assert ap["metadata"] == {"name": name, "namespace": "istio-egress"}
    assert ap["spec"]["action"] == "ALLOW"
    assert ap["spec"]["rules"] == [
        {
            "from": [{"source": {"principals": [f"cluster.local/ns/{namespace}/sa/egress-client"]}}],
            "to": [{"operation": {"ports": [str(gp) for gp in gateway_ports]}}],
            "when": [{"key": "connection.sni", "values": [host]}],
        }
    ]


def test_the_gateway_reaches_each_host_through_one_shared_entry(graph):
    entries = {r.inputs["metadata"]["name"]: r for r in graph.by_type(TYPES["ServiceEntry"])
               if r.inputs["metadata"]["namespace"] == "istio-egress"}
    assert set(entries) == {"corebank.corp.example", "ledger-db.corp.example", "dwh.corp.example"}
    for host, entry in entries.items():
        spec = entry.inputs["spec"]
        assert entry.name == f"egress-upstream-{host}"
        assert spec["hosts"] == [host] and spec["resolution"] == "DNS" and spec["exportTo"] == ["."]
        assert spec["location"] == "MESH_EXTERNAL" and "addresses" not in spec and "endpoints" not in spec
    ports = lambda host: [(p["number"], p["protocol"]) for p in entries[host].inputs["spec"]["ports"]]  # noqa: E731
    assert ports("corebank.corp.example") == [(443, "TLS")]  # both tenants' port, once
    assert ports("ledger-db.corp.example") == [(1521, "TCP")]
    assert ports("dwh.corp.example") == [(443, "TLS"), (5439, "TLS")]
    # Every route the gateway takes leads to a port of its entry.
    for vs in graph.by_type(TYPES["VirtualService"]):
        for route in vs.inputs["spec"]["tcp"]:
            destination = route["route"][0]["destination"]
            if route["match"][0]["gateways"] != ["mesh"]:
                assert destination["port"]["number"] in dict(ports(destination["host"]))


def _visible_entries(graph, namespace: str) -> dict[str, list[dict]]:
    """The ServiceEntries a proxy in `namespace` sees, by host (exportTo "."
    is the entry's own namespace, "*" every namespace)."""
    seen: dict[str, list[dict]] = {}
    for resource in graph.by_type(TYPES["ServiceEntry"]):
        entry = resource.inputs
        export = [entry["metadata"]["namespace"] if e == "." else e for e in entry["spec"]["exportTo"]]
        if namespace in export or "*" in export:
            for host in entry["spec"]["hosts"]:
                seen.setdefault(host, []).append(entry)
    return seen


def test_every_proxy_sees_one_entry_per_host_with_what_it_needs(graph):
    # Istio keeps the oldest of several entries for a host (push_context.go,
    # sidecar.go): with one visible entry per host there is nothing to pick.
    gateway = _visible_entries(graph, "istio-egress")
    assert {host: len(entries) for host, entries in gateway.items()} == {
        "corebank.corp.example": 1, "ledger-db.corp.example": 1, "dwh.corp.example": 1}
    assert {e[0]["spec"]["resolution"] for e in gateway.values()} == {"DNS"}
    payments = _visible_entries(graph, "payments")
    assert {host: len(entries) for host, entries in payments.items()} == {
        "corebank.corp.example": 1, "ledger-db.corp.example": 1}
    ledger = payments["ledger-db.corp.example"][0]["spec"]
    assert (ledger["addresses"], ledger["resolution"]) == (["10.101.4.16/28"], "NONE")  # the sidecar matches the range
    assert _visible_entries(graph, "reporting-prod").keys() == {"corebank.corp.example", "dwh.corp.example"}


def test_gateway_denies_by_default_and_tenants_get_a_client_account(graph):
    nothing = _obj(graph, "AuthorizationPolicy", "egress-egress-gateway-allow-nothing")
    assert nothing["spec"] == {"selector": {"matchLabels": {"istio": "egressgateway"}}}
    accounts = {r.inputs["metadata"]["namespace"]: r.inputs for r in graph.by_type("kubernetes:core/v1:ServiceAccount")}
    assert set(accounts) == {"payments", "reporting-prod"}
    assert all(a["metadata"]["name"] == "egress-client" and a["automountServiceAccountToken"] is False
               for a in accounts.values())


def test_istio_objects_validate_against_the_crds(graph):
    checked = 0
    for kind, type_ in TYPES.items():
        for resource in graph.by_type(type_):
            assert crd_errors(resource.inputs) == [], resource.name
            checked += 1
    assert checked == 4 * 5 + 3 + 2  # five per upstream, the gateway's entry per host, mesh-wide policies
    broken = copy.deepcopy(graph.get(TYPES["Gateway"], "payments.core-banking-gateway").inputs)
    broken["spec"]["servers"][0]["tls"]["mode"] = "ISTIO_MUTAL"
    assert crd_errors(broken)


# --- the bypass guard --------------------------------------------------------


def _policies(graph, namespace):
    return {r.inputs["metadata"]["name"]: r.inputs["spec"] for r in graph.by_type(NETPOL)
            if r.inputs["metadata"]["namespace"] == namespace}


@pytest.mark.parametrize("namespace,gateway_ports", [("payments", [20000, 20001]),
                                                       ("reporting-prod", [20100, 20101, 20102])])
def test_tenant_pods_reach_only_the_gateway_istiod_and_dns(graph, namespace, gateway_ports):
    policies = _policies(graph, namespace)
    assert set(policies) == {"default-deny", "allow-dns", "allow-same-namespace", "allow-egress"}
    egress = policies["allow-egress"]["egress"]
    assert egress == [
        {
            "to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "istio-egress"}},
                    "podSelector": {"matchLabels": {"istio": "egressgateway"}}}],
            "ports": [{"protocol": "TCP", "port": p} for p in gateway_ports],
        },
        {
            "to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "istio-system"}},
                    "podSelector": {"matchLabels": {"app": "istiod"}}}],
            "ports": [{"protocol": "TCP", "port": 15012}],
        },
    ]
    assert "ipBlock" not in json.dumps(policies)
    namespace_obj = next(r.inputs for r in graph.by_type("kubernetes:core/v1:Namespace")
                         if r.inputs["metadata"]["name"] == namespace)
    assert namespace_obj["metadata"]["labels"]["istio-injection"] == "enabled"
    assert namespace_obj["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "baseline"


def test_only_the_gateway_namespace_reaches_on_prem(graph):
    policies = _policies(graph, "istio-egress")
    assert policies["default-deny"] == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
    upstreams = policies["allow-upstreams"]["egress"]
    assert [(r["to"][0]["ipBlock"]["cidr"], [p["port"] for p in r["ports"]]) for r in upstreams] == [
        ("10.100.10.0/24", [443]), ("10.101.4.16/28", [1521]), ("10.102.0.0/24", [443, 5439]), ("10.100.10.0/24", [443]),
    ]
    ingress = policies["allow-tenants"]["ingress"]
    assert [(r["from"][0]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"],
             [p["port"] for p in r["ports"]]) for r in ingress] == [
        ("payments", [20000, 20001]), ("reporting-prod", [20100, 20101, 20102]),
    ]
    control = policies["allow-control-plane"]["egress"]
    assert [p["port"] for rule in control for p in rule["ports"]] == [53, 53, 15012]
    on_prem = [r for r in graph.by_type(NETPOL) if "ipBlock" in json.dumps(r.inputs)]
    assert {r.inputs["metadata"]["namespace"] for r in on_prem} == {"istio-egress"}


# --- routes for upstreams without a host ---------------------------------------


def _route(upstream: dict) -> istio.UpstreamRoute:
    settings = offline.plan_from_config("x", offline.engine_config({**_base_config(), "egress:tenants": [
        {"name": "t", "upstreams": [upstream]}]})).settings
    return istio.tenant_routes(settings, settings.tenants[0])[0]


def _base_config():
    config = offline.read_stack_file(offline.stack_path("istio"))
    config.pop("egress:tenants")
    return config


def test_ip_only_upstream_gets_static_endpoints_and_a_subnet_match():
    route = _route({"name": "mainframe", "cidr": "10.101.0.8/30", "ports": [4000, 4001], "protocol": "TLS"})
    assert route.resolution == "STATIC" and not route.match_sni
    assert route.endpoints == ("10.101.0.9", "10.101.0.10")
    assert [(p.port, p.gateway_port) for p in route.ports] == [(4000, 20000), (4001, 20001)]
    se = istio.service_entry(route)["spec"]
    assert se["hosts"] == ["mainframe.t.egress.internal"] and se["addresses"] == ["10.101.0.8/30"]
    assert se["resolution"] == "NONE" and "endpoints" not in se
    assert {p["protocol"] for p in se["ports"]} == {"TCP"}
    [upstream] = istio.gateway_upstreams([route])
    at_gateway = istio.gateway_service_entry(upstream)
    assert at_gateway["metadata"] == {"name": "mainframe.t.egress.internal", "namespace": "istio-egress"}
    assert at_gateway["spec"]["resolution"] == "STATIC" and "addresses" not in at_gateway["spec"]
    assert at_gateway["spec"]["endpoints"] == [{"address": "10.101.0.9"}, {"address": "10.101.0.10"}]
    vs = istio.virtual_service(route)["spec"]
    assert "tls" not in vs
    assert vs["tcp"][0]["match"] == [{"gateways": ["mesh"], "port": 4000, "destinationSubnets": ["10.101.0.8/30"]}]
    single = _route({"name": "host", "cidr": "10.101.0.7/32", "ports": [22], "protocol": "TCP"})
    assert single.endpoints == ("10.101.0.7",)


def test_ip_only_upstream_objects_pass_the_crds():
    route = _route({"name": "mainframe", "cidr": "10.101.0.8/30", "ports": [4000, 4001], "protocol": "TLS"})
    for render in (istio.service_entry, istio.virtual_service, istio.gateway, istio.destination_rule,
                   istio.authorization_policy):
        assert crd_errors(render(route)) == []
    assert crd_errors(istio.gateway_service_entry(istio.gateway_upstreams([route])[0])) == []


def test_plan_warns_for_ip_ranges_and_ignored_node_sizes():
    config = {**_base_config(), "egress:tenants": [
        {"name": "t", "nodes": {"min": 2, "max": 3},
         "upstreams": [{"name": "pool", "cidr": "10.101.0.16/29", "ports": [22], "protocol": "TCP"}]}]}
    warnings = offline.plan_from_config("x", offline.engine_config(config)).warnings
    assert any("tenants[0].upstreams[0] (10.101.0.16/29) has no host" in w for w in warnings)
    assert any("tenants[0].nodes is ignored" in w for w in warnings)


# --- bad input -------------------------------------------------------------


def test_bad_istio_input_is_reported_at_once_before_any_resource():
    tenants = [
        {"name": "a", "namespace": "istio-egress", "upstreams": [
            {"name": "wild", "cidr": "10.100.1.0/24", "host": "*.corp.example", "ports": [443]},
            {"name": "range", "cidr": "10.100.2.0/24", "ports": [22], "protocol": "TCP"},
            {"name": "dup", "cidr": "10.100.3.0/24", "host": "db.corp.example", "ports": [5432], "protocol": "TCP"},
            {"name": "dup2", "cidr": "10.100.3.0/24", "host": "db.corp.example", "ports": [5433], "protocol": "TCP"},
        ]},
        {"name": "b", "slot": 0, "upstreams": [
            {"name": "many", "cidr": "10.100.4.0/24", "host": "many.corp.example", "ports": list(range(1, 102))}]},
        {"name": "c", "slot": 500, "upstreams": [
            {"name": "x", "cidr": "10.100.5.0/24", "host": "x.corp.example", "ports": [443]}]},
    ]
    with pytest.raises(ConfigError) as error:
        offline.run("bad", {**_base_config(), "egress:tenants": tenants})
    found = {p.key: p.message for p in error.value.problems}
    assert "'istio-egress' is reserved" in found["egress:tenants[0].namespace"]
    assert "wildcard" in found["egress:tenants[0].upstreams[0].host"] and "exact host" in found["egress:tenants[0].upstreams[0].host"]
    assert "256 addresses and no host" in found["egress:tenants[0].upstreams[1].cidr"]
    assert "set host" in found["egress:tenants[0].upstreams[1].cidr"]
    assert "already used by upstreams[2]" in found["egress:tenants[0].upstreams[3].host"]
    assert "slot 0 is already taken by tenants[0]" in found["egress:tenants[1].slot"]
    assert "lists 101 upstream ports" in found["egress:tenants[1].upstreams"]
    assert "too large" in found["egress:tenants[2].slot"] and "0-454" in found["egress:tenants[2].slot"]


def test_gateway_ports_follow_the_tenant_slot():
    config = {**_base_config(), "egress:tenants": [
        {"name": "late", "slot": 3, "upstreams": [{"name": "u", "cidr": "10.100.1.0/24", "host": "u.corp.example",
                                                   "ports": [443]}]},
        {"name": "early", "upstreams": [{"name": "u", "cidr": "10.100.1.0/24", "host": "u.corp.example",
                                        "ports": [443]}]},
    ]}
    settings = offline.plan_from_config("x", offline.engine_config(config)).settings
    assert [istio.tenant_routes(settings, t)[0].gateway_ports for t in settings.tenants] == [[20300], [20100]]


# --- one host, several tenants -------------------------------------------------


def _tenants_sharing(first: dict, second: dict) -> dict:
    base = {"name": "db", "cidr": "10.100.3.0/24", "host": "db.corp.example", "ports": [5432], "protocol": "TCP"}
    return {**_base_config(), "egress:tenants": [
        {"name": "a", "upstreams": [{**base, **first}]},
        {"name": "b", "upstreams": [{**base, **second}]},
    ]}


def test_tenants_sharing_a_host_share_the_gateways_entry_with_all_their_ports():
    config = _tenants_sharing({"ports": [5432]}, {"ports": [5432, 5433]})
    settings = offline.plan_from_config("x", offline.engine_config(config)).settings
    routes = [r for t in settings.tenants for r in istio.tenant_routes(settings, t)]
    [upstream] = istio.gateway_upstreams(routes)
    assert (upstream.host, upstream.ports) == ("db.corp.example", ((5432, "TCP"), (5433, "TCP")))
    # Each tenant keeps its own gateway ports: the shared entry widens no tenant's reach.
    assert [r.gateway_ports for r in routes] == [[20000], [20100, 20101]]


@pytest.mark.parametrize(("second", "differences"), [
    ({"cidr": "10.100.4.0/24"}, ["cidr 10.100.4.0/24 (tenant a: 10.100.3.0/24)"]),
    ({"protocol": "TLS", "ports": [5432, 443]}, ["protocol TLS on port 5432 (tenant a: TCP)"]),
    ({"cidr": "10.100.4.0/24", "protocol": "TLS"},
     ["cidr 10.100.4.0/24 (tenant a: 10.100.3.0/24)", "protocol TLS on port 5432 (tenant a: TCP)"]),
])
def test_tenants_that_disagree_on_a_host_are_refused_naming_both(second, differences):
    with pytest.raises(ConfigError) as error:
        offline.run("bad", _tenants_sharing({}, second))
    found = {p.key: p.message for p in error.value.problems}
    message = found["egress:tenants[1].upstreams[0]"]
    assert "host 'db.corp.example' of tenant b is also an upstream of tenant a (tenants[0].upstreams[0])" in message
    assert f"with a different {' and '.join(differences)};" in message
    assert "give both tenants the same cidr and protocol" in message


def test_tenants_may_share_a_host_on_other_ports_with_another_protocol():
    config = _tenants_sharing({}, {"protocol": "TLS", "ports": [443]})
    settings = offline.plan_from_config("x", offline.engine_config(config)).settings
    routes = [r for t in settings.tenants for r in istio.tenant_routes(settings, t)]
    [upstream] = istio.gateway_upstreams(routes)
    assert upstream.ports == ((443, "TLS"), (5432, "TCP"))


# --- the sidecar guard, on pods as the injector leaves them -------------------------


def _tenant_pod(**changes) -> dict:
    """A tenant's pod as its Deployment asks for it (before any webhook)."""
    pod = {"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": "payments-api-7d4b9", "labels": {"app": "payments-api"}, "annotations": {}},
           "spec": {"serviceAccountName": "egress-client",
                    "containers": [{"name": "api", "image": "111122223333.dkr.ecr.eu-west-1.amazonaws.com/api:1.4",
                                    "securityContext": {"runAsNonRoot": True, "runAsUser": 10001}}]}}
    for part, values in changes.items():
        for key, value in values.items():
            target = pod["metadata"] if part in ("labels", "annotations") else pod["spec"]
            if part in ("labels", "annotations"):
                target[part][key] = value
            else:
                target[key] = value
    return pod


def _review(graph, pod: dict, *, native: bool, policies=None):
    policies = cluster_policies(graph.plan) if policies is None else policies
    return review(policies, api_server_pod(injected(pod, native_sidecar=native)), "payments")


NATIVE = pytest.mark.parametrize("native", [True, False], ids=["native-sidecar", "sidecar-container"])


@NATIVE
def test_a_pod_as_the_injector_leaves_it_is_admitted(graph, native):
    pod = injected(_tenant_pod(), native_sidecar=native)
    annotations = pod["metadata"]["annotations"]
    assert annotations["sidecar.istio.io/interceptionMode"] == "REDIRECT"
    assert annotations["traffic.sidecar.istio.io/includeOutboundIPRanges"] == "*"
    assert annotations["istio.io/rev"] == "default"
    proxy = next(c for c in pod["spec"]["initContainers" if native else "containers"] if c["name"] == "istio-proxy")
    assert proxy["image"] == "docker.io/istio/proxyv2:1.30.3"
    assert proxy["securityContext"]["runAsUser"] == proxy["securityContext"]["runAsGroup"] == 1337
    result = _review(graph, _tenant_pod(), native=native)
    assert result.admitted, result.refusals
    # Pinned in istiod's values, so the injected image is the one the guard expects.
    values = _releases(graph)["istiod"].inputs["values"]
    assert (values["global"]["hub"], values["global"]["tag"]) == ("docker.io/istio", "1.30.3")


def _own_proxy(**fields) -> dict:
    return {"containers": [_tenant_pod()["spec"]["containers"][0], {"name": "istio-proxy", **fields}]}


BUSYBOX = "public.ecr.aws/docker/library/busybox:1.36"
# (what the tenant adds to its pod, the rule that refuses the injected result)
BYPASSES = {
    "no capture": ({"annotations": {"sidecar.istio.io/interceptionMode": "NONE"}}, "no-sidecar-bypass"),
    "TPROXY capture": ({"annotations": {"sidecar.istio.io/interceptionMode": "TPROXY"}}, "no-sidecar-bypass"),
    "capture of some ranges": ({"annotations": {"traffic.sidecar.istio.io/includeOutboundIPRanges": "10.1.0.0/16"}},
                               "no-sidecar-bypass"),
    "on-prem excluded": ({"annotations": {"traffic.sidecar.istio.io/excludeOutboundIPRanges": "10.100.0.0/14"}},
                         "no-sidecar-bypass"),
    "port excluded": ({"annotations": {"traffic.sidecar.istio.io/excludeOutboundPorts": "1521"}}, "no-sidecar-bypass"),
    "interface excluded": ({"annotations": {"traffic.sidecar.istio.io/excludeInterfaces": "eth0"}},
                           "no-sidecar-bypass"),
    "proxy config without capture": ({"annotations": {"proxy.istio.io/config": "interceptionMode: NONE"}},
                                     "no-sidecar-bypass"),
    "another revision": ({"labels": {"istio.io/rev": "canary"}}, "no-sidecar-bypass"),
    "another proxy image": ({"annotations": {"sidecar.istio.io/proxyImage": BUSYBOX}}, "no-sidecar-bypass"),
    "pod as the proxy's user": ({"spec": {"securityContext": {"runAsUser": 1337}}}, "no-proxy-identity"),
    "pod in the proxy's group": ({"spec": {"securityContext": {"runAsGroup": 1337}}}, "no-proxy-identity"),
    "app as the proxy's user": ({"spec": {"containers": [{"name": "api", "image": BUSYBOX,
                                                          "securityContext": {"runAsUser": 1337}}]}},
                                "no-proxy-identity"),
    "init container as the proxy's user": ({"spec": {"initContainers": [
        {"name": "setup", "image": BUSYBOX, "securityContext": {"runAsUser": 1337}}]}}, "no-proxy-identity"),
    "an istio-init of its own (istio-cni skips the pod)": (
        {"spec": {"initContainers": [{"name": "istio-init", "image": BUSYBOX}]}}, "no-proxy-identity"),
    "own proxy image": ({"spec": _own_proxy(image=BUSYBOX)}, "no-proxy-identity"),
    "own proxy command": ({"spec": _own_proxy(command=["sh", "-c", "nc 10.100.10.20 443"])}, "no-proxy-identity"),
    "proxy UID of the app (istio-cni lets it through)": (
        {"spec": _own_proxy(securityContext={"runAsUser": 10001, "runAsGroup": 10001})}, "no-proxy-identity"),
    "proxy disabled (istio-cni skips the pod)": (
        {"spec": _own_proxy(env=[{"name": "DISABLE_ENVOY", "value": "true"}])}, "no-proxy-identity"),
    "proxy as a router (istio-cni skips the pod)": ({"spec": _own_proxy(args=["proxy", "router"])},
                                                    "no-proxy-identity"),
}


@NATIVE
@pytest.mark.parametrize("bypass", BYPASSES)
def test_each_way_around_the_sidecar_is_refused_on_the_injected_pod(graph, native, bypass):
    changes, rule = BYPASSES[bypass]
    result = _review(graph, _tenant_pod(**changes), native=native)
    refused = result.refused_by()
    assert f"{istio.SIDECAR_POLICY}/{rule}" in refused, result.refusals
    assert {r.split("/")[0] for r in refused} == {istio.SIDECAR_POLICY}
    # The sidecar policy is what stops it.
    others = [p for p in cluster_policies(graph.plan) if p["metadata"]["name"] != istio.SIDECAR_POLICY]
    assert _review(graph, _tenant_pod(**changes), native=native, policies=others).admitted


def test_kyverno_compares_strings_as_wildcards_so_star_is_checked_in_jmespath():
    narrowed = {"metadata": {"annotations": {"traffic.sidecar.istio.io/includeOutboundIPRanges": "10.1.0.0/16"}}}
    naive = {"key": "{{ request.object.metadata.annotations.\"traffic.sidecar.istio.io/includeOutboundIPRanges\" }}",
             "operator": "NotEquals", "value": "*"}
    policy = {"metadata": {"name": "p"}, "spec": {"rules": [{
        "name": "r", "match": {"any": [{"resources": {"kinds": ["Pod"]}}]},
        "validate": {"failureAction": "Enforce", "message": "m", "deny": {"conditions": {"any": [naive]}}}}]}}
    pod = {"kind": "Pod", "metadata": {"name": "p", **narrowed["metadata"]}, "spec": {}}
    assert review([policy], pod, "payments").admitted  # "*" matches any value: never refused
    rule = next(r for r in istio.SidecarAdmission().policies([])[0]["spec"]["rules"] if r["name"] == "no-sidecar-bypass")
    policy["spec"]["rules"][0]["validate"]["deny"] = rule["validate"]["deny"]
    assert not review([policy], pod, "payments").admitted


@NATIVE
def test_a_proxy_resized_by_custom_injection_is_still_admitted(graph, native):
    # https://istio.io/latest/docs/setup/additional-setup/sidecar-injection/#customizing-injection
    pod = _tenant_pod(spec=_own_proxy(image="auto", resources={"requests": {"cpu": "500m", "memory": "256Mi"}}))
    result = _review(graph, pod, native=native)
    assert result.admitted, result.refusals
