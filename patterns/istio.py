"""Pattern 4, istio: tenant pods get Istio sidecars; everything they send to
on-prem is routed through an Envoy egress gateway that runs on a dedicated,
tainted node group in its own subnets, so the firewall allow-lists only the
egress subnets (seed, "Design pattern 4: Egress Gateway with service mesh").

Per upstream the five Istio objects of the seed are created (ServiceEntry,
Gateway, VirtualService, DestinationRule, AuthorizationPolicy), following
https://istio.io/latest/docs/tasks/traffic-management/egress/egress-gateway/,
with the ServiceEntry in two halves: the tenant's sidecars see one that says
what to match (its host, or its range for TCP), the gateway one per host that
says how to reach it (DNS, or fixed addresses):

    tenant pod -> sidecar --(ISTIO_MUTUAL, SNI = upstream host)--> egress gateway
               --(the application's own bytes, TCP proxy)--> on-prem upstream

Every (tenant, upstream, port) gets its own gateway port, so SNI-less TCP
upstreams and tenants that share a host stay apart (several TCP services on
one gateway port collide: https://github.com/istio/istio/issues/42520). The
sidecar->gateway hop is mutual TLS, so the gateway knows the client's
identity and the AuthorizationPolicy admits only the tenant's service account.

Istio "cannot securely enforce that all egress traffic actually flows through
the egress gateways" (egress-gateway task, "Additional security
considerations"): NetworkPolicies let tenant pods reach only the gateway,
istiod and DNS, and only the gateway namespace reaches on-prem; the firewall
admits only the egress subnets.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_aws as aws
import pulumi_kubernetes as k8s

from . import admission as rules
from .addressing import AddressPlan
from .cluster import SYSTEM_LABEL, Cluster, Cni, VpcCni
from .network import Network
from .plan import NamespaceSpec, PatternSpec, Plan, upstream_egress_rules
from .settings import NAMESPACE, NodeGroupSize, Problem, Settings, Tenant, Upstream
from .tenancy import DNS_PEER, DNS_PORTS, TenantNamespace, TenantNamespaces, gateway_labels, gateway_taint

ISTIO_VERSION = "1.30.3"
ISTIO_REPO = "https://istio-release.storage.googleapis.com/charts"
# The release's image hub, set in istiod's values so that the sidecar the
# injector adds is known: <hub>/proxyv2:<tag>, running as PROXY_UID/PROXY_UID
# (injection-template.yaml, istio-cni on).
ISTIO_HUB = "docker.io/istio"
PROXY_IMAGE = f"{ISTIO_HUB}/proxyv2"
PROXY_UID = 1337
ISTIO_NAMESPACE = "istio-system"
GATEWAY_NAMESPACE = "istio-egress"
GATEWAY_NAME = "istio-egressgateway"  # Helm release name = Service and ServiceAccount name
GATEWAY_LABELS = {"istio": "egressgateway"}  # the chart's selector label for this release name
GATEWAY_HOST = f"{GATEWAY_NAME}.{GATEWAY_NAMESPACE}.svc.cluster.local"
TRUST_DOMAIN = "cluster.local"
ISTIOD_LABELS = {"app": "istiod"}
XDS_PORT = 15012  # istiod: xDS and certificate signing for every proxy
WEBHOOK_PORT = 15017  # istiod: injection and validation webhooks, called by the API server
STATUS_PORT = 15021  # gateway readiness (kubelet probes from the node are always allowed)

# Tenant workloads that may leave the cluster run as this service account; the
# gateway admits only its principal (one per tenant namespace).
CLIENT_SERVICE_ACCOUNT = "egress-client"

# The gateway nodes: network-optimised instances (seed: "choose Amazon EC2
# instances that are network-optimized" for high connection rates).
GATEWAY_NODE_LABELS = gateway_labels("istio")
GATEWAY_TAINT = gateway_taint("istio")

# Gateway ports: tenant slot s owns [BASE + s*BLOCK, BASE + (s+1)*BLOCK), so a
# tenant's ports do not move when other tenants are added or removed.
GATEWAY_PORT_BASE = 20000
GATEWAY_PORT_BLOCK = 100
MAX_STATIC_ENDPOINTS = 16  # an IP-only upstream range of at most /28


# --- the pure route plan -------------------------------------------------------


@dataclass(frozen=True)
class PortRoute:
    port: int  # the upstream's port
    gateway_port: int  # the port the egress gateway listens on for it


@dataclass(frozen=True)
class UpstreamRoute:
    """How one upstream of one tenant is reached through the egress gateway."""

    tenant: str
    namespace: str
    upstream: str
    cidr: str
    host: str  # the upstream's host, or a mesh-internal name for an IP-only upstream
    match_sni: bool  # sidecars match the application's SNI; else its destination address
    resolution: str  # how the gateway reaches host: DNS (resolves it) or STATIC (fixed endpoints)
    endpoints: tuple[str, ...]
    ports: tuple[PortRoute, ...]

    @property
    def protocol(self) -> str:
        return "TLS" if self.match_sni else "TCP"

    @property
    def name(self) -> str:
        # '.' cannot occur in a tenant or upstream name, so this is unambiguous.
        return f"{self.tenant}.{self.upstream}"

    @property
    def subset(self) -> str:
        return f"{self.tenant}-{self.upstream}"

    @property
    def principal(self) -> str:
        return f"{TRUST_DOMAIN}/ns/{self.namespace}/sa/{CLIENT_SERVICE_ACCOUNT}"

    @property
    def gateway_ports(self) -> list[int]:
        return [p.gateway_port for p in self.ports]


def upstream_route(settings: Settings, tenant: Tenant, upstream: Upstream, first_index: int) -> UpstreamRoute:
    first = GATEWAY_PORT_BASE + settings.slots[tenant.name] * GATEWAY_PORT_BLOCK + first_index
    ports = tuple(PortRoute(port, first + i) for i, port in enumerate(upstream.ports))
    if upstream.host:
        return UpstreamRoute(
            tenant.name, tenant.k8s_namespace, upstream.name, str(upstream.cidr), upstream.host,
            match_sni=upstream.protocol == "TLS", resolution="DNS", endpoints=(), ports=ports,
        )
    # No host: the gateway cannot resolve anything, and with resolution NONE it
    # would send the traffic to itself ("the gateway will direct the traffic to
    # itself in an infinite loop", egress-gateway task), so it forwards to the
    # range's addresses as STATIC endpoints.
    network = upstream.cidr
    addresses = [network.network_address] if network.prefixlen == 32 else list(network.hosts())
    return UpstreamRoute(
        tenant.name, tenant.k8s_namespace, upstream.name, str(network),
        f"{upstream.name}.{tenant.k8s_namespace}.egress.internal",
        match_sni=False, resolution="STATIC", endpoints=tuple(map(str, addresses)), ports=ports,
    )


def tenant_routes(settings: Settings, tenant: Tenant) -> list[UpstreamRoute]:
    routes, index = [], 0
    for upstream in tenant.upstreams:
        routes.append(upstream_route(settings, tenant, upstream, index))
        index += len(upstream.ports)
    return routes


@dataclass(frozen=True)
class GatewayUpstream:
    """How the egress gateway reaches one host, for every tenant that lists it."""

    host: str
    resolution: str
    endpoints: tuple[str, ...]
    ports: tuple[tuple[int, str], ...]  # (port, protocol), every tenant's ports of the host


def gateway_upstreams(routes: list[UpstreamRoute]) -> list[GatewayUpstream]:
    """One entry per host. Istio keeps one ServiceEntry per host and namespace,
    the oldest (istio/istio pilot/pkg/model/push_context.go, initServiceRegistry),
    and a proxy sees one per host across the namespaces exported to it, again
    the oldest, without merging their ports (pilot/pkg/model/sidecar.go,
    DefaultSidecarScopeForNamespace). Entries of several tenants for one host
    would leave the gateway with only one tenant's ports, so the gateway gets
    one entry with all of them (_checks refuses tenants that disagree on what
    the host is)."""
    by_host: dict[str, tuple[UpstreamRoute, dict[int, str]]] = {}
    for route in routes:
        first, ports = by_host.setdefault(route.host, (route, {}))
        ports.update({p.port: route.protocol for p in route.ports if p.port not in ports})
    return [
        GatewayUpstream(host, first.resolution, first.endpoints, tuple(sorted(ports.items())))
        for host, (first, ports) in by_host.items()
    ]


def _shared_host_problems(settings: Settings) -> list[Problem]:
    """Tenants may share a host (each keeps its own gateway ports and policy),
    but not disagree on it: the gateway's one entry per host (gateway_upstreams)
    has one protocol per port, and the range is what sidecars match, the
    gateway's NetworkPolicy admits and the firewall allow-lists for it."""
    problems = []
    first: dict[str, tuple[str, Tenant, Upstream]] = {}
    for t, tenant in enumerate(settings.tenants):
        for u, upstream in enumerate(tenant.upstreams):
            if not upstream.host:
                continue
            key = f"{NAMESPACE}:tenants[{t}].upstreams[{u}]"
            where, other, declared = first.setdefault(upstream.host, (key, tenant, upstream))
            if other is tenant:
                continue  # the same tenant twice is reported by _checks
            differences = []
            if upstream.cidr != declared.cidr:
                differences.append(f"cidr {upstream.cidr} (tenant {other.name}: {declared.cidr})")
            shared_ports = sorted(set(upstream.ports) & set(declared.ports))
            if upstream.protocol != declared.protocol and shared_ports:
                differences.append(f"protocol {upstream.protocol} on port {', '.join(map(str, shared_ports))} "
                                   f"(tenant {other.name}: {declared.protocol})")
            if differences:
                problems.append(Problem(
                    key, f"host {upstream.host!r} of tenant {tenant.name} is also an upstream of tenant "
                    f"{other.name} ({where.removeprefix(NAMESPACE + ':')}) with a different "
                    f"{' and '.join(differences)}; one host is one service to the egress gateway, so give both "
                    "tenants the same cidr and protocol for it",
                ))
    return problems


def _checks(settings: Settings) -> list[Problem]:
    problems: list[Problem] = _shared_host_problems(settings)
    for t, tenant in enumerate(settings.tenants):
        key = f"{NAMESPACE}:tenants[{t}]"
        slot = settings.slots[tenant.name]
        if GATEWAY_PORT_BASE + (slot + 1) * GATEWAY_PORT_BLOCK - 1 > 65535:
            top = (65536 - GATEWAY_PORT_BASE) // GATEWAY_PORT_BLOCK - 1
            problems.append(Problem(f"{key}.slot", f"slot {slot} is too large for the gateway port range; use 0-{top}"))
        port_count = sum(len(u.ports) for u in tenant.upstreams)
        if port_count > GATEWAY_PORT_BLOCK:
            problems.append(
                Problem(f"{key}.upstreams", f"lists {port_count} upstream ports; a tenant has "
                        f"{GATEWAY_PORT_BLOCK} egress gateway ports, so split it into several tenants")
            )
        hosts: dict[str, int] = {}
        for u, upstream in enumerate(tenant.upstreams):
            if upstream.host in hosts:
                # Sidecars do not merge VirtualServices for one host.
                problems.append(
                    Problem(f"{key}.upstreams[{u}].host", f"{upstream.host!r} is already used by "
                            f"upstreams[{hosts[upstream.host]}]; list all its ports in that one upstream")
                )
            if upstream.host:
                hosts.setdefault(upstream.host, u)
            if upstream.host and upstream.host.startswith("*."):
                problems.append(
                    Problem(f"{key}.upstreams[{u}].host", f"{upstream.host!r} is a wildcard; the egress gateway "
                            "resolves the host itself, so name the exact host")
                )
            if not upstream.host and upstream.cidr.num_addresses > MAX_STATIC_ENDPOINTS:
                problems.append(
                    Problem(f"{key}.upstreams[{u}].cidr", f"{upstream.cidr} has {upstream.cidr.num_addresses} "
                            "addresses and no host; the egress gateway forwards an IP-only upstream to fixed "
                            "addresses, so set host to the service's DNS name or narrow cidr to the servers "
                            f"(at most {MAX_STATIC_ENDPOINTS} addresses, /28)")
                )
    return problems


def _warnings(settings: Settings, addresses: AddressPlan) -> list[str]:
    warnings = []
    for t, tenant in enumerate(settings.tenants):
        if "nodes" in tenant.model_fields_set:
            warnings.append(
                f"egress:tenants[{t}].nodes is ignored by the istio pattern: tenant pods run on the "
                "system nodes and leave through the egress gateway nodes"
            )
        for u, upstream in enumerate(tenant.upstreams):
            if not upstream.host and upstream.cidr.prefixlen < 32:
                warnings.append(
                    f"egress:tenants[{t}].upstreams[{u}] ({upstream.cidr}) has no host: the egress gateway "
                    "balances its connections across every address of the range; list each server as its own "
                    "upstream unless they are interchangeable"
                )
    return warnings


# --- the Kubernetes objects, as plain data ---------------------------------------


def _meta(name: str, namespace: str) -> dict:
    return {"name": name, "namespace": namespace}


def _ports(ports: list[tuple[int, str]]) -> list[dict]:
    return [{"number": port, "name": f"{protocol.lower()}-{port}", "protocol": protocol} for port, protocol in ports]


def service_entry(route: UpstreamRoute) -> dict:
    """What the tenant's sidecars match: the host by SNI, or the range by
    destination address. Sidecars only hand the traffic to the gateway (the
    VirtualService), so they resolve nothing: resolution NONE, which with
    STATIC is also the only one that admits a range in `addresses` (CEL rule of
    the ServiceEntry CRD; istiod's ValidateServiceEntry). Visible to the
    tenant's namespace only, so tenants that share a host never see each
    other's entry."""
    spec: dict = {
        "hosts": [route.host],
        "location": "MESH_EXTERNAL",
        "ports": _ports([(p.port, route.protocol) for p in route.ports]),
        "resolution": "NONE",
        "exportTo": ["."],
    }
    if not route.match_sni:
        spec["addresses"] = [route.cidr]
    return {"apiVersion": "networking.istio.io/v1", "kind": "ServiceEntry",
            "metadata": _meta(route.upstream, route.namespace), "spec": spec}


def gateway_service_entry(upstream: GatewayUpstream) -> dict:
    """How the gateway reaches a host: it resolves the name (DNS), or connects
    to the fixed addresses of an IP-only upstream (STATIC; with NONE the
    gateway would send the traffic to itself, see upstream_route). Visible to
    the gateway's namespace only; the tenants' VirtualServices route to it
    there by host."""
    spec: dict = {
        "hosts": [upstream.host],
        "location": "MESH_EXTERNAL",
        "ports": _ports(list(upstream.ports)),
        "resolution": upstream.resolution,
        "exportTo": ["."],
    }
    if upstream.endpoints:
        spec["endpoints"] = [{"address": a} for a in upstream.endpoints]
    return {"apiVersion": "networking.istio.io/v1", "kind": "ServiceEntry",
            "metadata": _meta(upstream.host, GATEWAY_NAMESPACE), "spec": spec}


def gateway(route: UpstreamRoute) -> dict:
    # The server terminates the sidecar's mutual TLS (ISTIO_MUTUAL), which gives
    # the AuthorizationPolicy a principal; the namespace prefix lets only the
    # tenant's own VirtualServices bind to it.
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "Gateway",
        "metadata": _meta(route.name, GATEWAY_NAMESPACE),
        "spec": {
            "selector": GATEWAY_LABELS,
            "servers": [
                {
                    "port": {"number": p.gateway_port, "name": f"tls-{p.gateway_port}", "protocol": "TLS"},
                    "hosts": [f"{route.namespace}/{route.host}"],
                    "tls": {"mode": "ISTIO_MUTUAL"},
                }
                for p in route.ports
            ],
        },
    }


def destination_rule(route: UpstreamRoute) -> dict:
    # In the client's namespace: the first place Istio looks for it (the
    # egress-gateway task's note on the destination rule lookup path). The SNI
    # selects the gateway server of this upstream. Rules for the same host in
    # one namespace are merged, each contributing its subset (istio/istio
    # pilot/pkg/model/destination_rule.go, mergeDestinationRule).
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "DestinationRule",
        "metadata": _meta(f"{route.upstream}-via-egress-gateway", route.namespace),
        "spec": {
            "host": GATEWAY_HOST,
            "exportTo": ["."],
            "subsets": [
                {
                    "name": route.subset,
                    "trafficPolicy": {
                        "portLevelSettings": [
                            {"port": {"number": p.gateway_port}, "tls": {"mode": "ISTIO_MUTUAL", "sni": route.host}}
                            for p in route.ports
                        ]
                    },
                }
            ],
        },
    }


def virtual_service(route: UpstreamRoute) -> dict:
    gateway_ref = f"{GATEWAY_NAMESPACE}/{route.name}"

    def to_gateway(p: PortRoute) -> list[dict]:
        return [{"destination": {"host": GATEWAY_HOST, "subset": route.subset, "port": {"number": p.gateway_port}}}]

    spec: dict = {"hosts": [route.host], "gateways": ["mesh", gateway_ref], "exportTo": [".", GATEWAY_NAMESPACE]}
    mesh_routes = [
        {
            "match": [
                {"gateways": ["mesh"], "port": p.port, "sniHosts": [route.host]}
                if route.match_sni
                else {"gateways": ["mesh"], "port": p.port, "destinationSubnets": [route.cidr]}
            ],
            "route": to_gateway(p),
        }
        for p in route.ports
    ]
    # At the gateway the mutual TLS is terminated and the application's bytes
    # (its own TLS, if any) are proxied as TCP to the upstream.
    gateway_routes = [
        {
            "match": [{"gateways": [gateway_ref], "port": p.gateway_port}],
            "route": [{"destination": {"host": route.host, "port": {"number": p.port}}, "weight": 100}],
        }
        for p in route.ports
    ]
    if route.match_sni:
        spec["tls"] = mesh_routes
        spec["tcp"] = gateway_routes
    else:
        spec["tcp"] = mesh_routes + gateway_routes
    return {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
            "metadata": _meta(route.upstream, route.namespace), "spec": spec}


def authorization_policy(route: UpstreamRoute) -> dict:
    # On a TCP listener `to.operation.hosts` never matches (HTTP only), so the
    # host is matched on the SNI (https://istio.io/latest/docs/reference/config/security/conditions/).
    return {
        "apiVersion": "security.istio.io/v1",
        "kind": "AuthorizationPolicy",
        "metadata": _meta(route.name, GATEWAY_NAMESPACE),
        "spec": {
            "selector": {"matchLabels": GATEWAY_LABELS},
            "action": "ALLOW",
            "rules": [
                {
                    "from": [{"source": {"principals": [route.principal]}}],
                    "to": [{"operation": {"ports": [str(p) for p in route.gateway_ports]}}],
                    "when": [{"key": "connection.sni", "values": [route.host]}],
                }
            ],
        },
    }


def _peer(namespace: str, labels: dict[str, str]) -> dict:
    return {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}},
        "podSelector": {"matchLabels": labels},
    }


ISTIOD_EGRESS_RULE = {"to": [_peer(ISTIO_NAMESPACE, ISTIOD_LABELS)], "ports": [{"protocol": "TCP", "port": XDS_PORT}]}


def tenant_egress_rules(routes: list[UpstreamRoute]) -> list[dict]:
    """A tenant's pods may reach the egress gateway on the tenant's own ports and
    istiod (DNS and the namespace itself are allowed by TenantNamespace)."""
    return [
        {
            "to": [_peer(GATEWAY_NAMESPACE, GATEWAY_LABELS)],
            "ports": [{"protocol": "TCP", "port": port} for r in routes for port in r.gateway_ports],
        },
        ISTIOD_EGRESS_RULE,
    ]


def gateway_values(settings: Settings, routes: list[UpstreamRoute]) -> dict:
    """Values of the `gateway` chart (schema: manifests/charts/gateway/values.schema.json;
    egress example in the chart README: a ClusterIP Service)."""
    zones = len(settings.availability_zones)
    run_as = {"runAsNonRoot": True, "runAsUser": 1337, "runAsGroup": 1337}
    seccomp = {"seccompProfile": {"type": "RuntimeDefault"}}
    spread = lambda key, when: {  # noqa: E731
        "maxSkew": 1, "topologyKey": key, "whenUnsatisfiable": when, "labelSelector": {"matchLabels": GATEWAY_LABELS},
    }
    return {
        "name": GATEWAY_NAME,
        "labels": GATEWAY_LABELS,
        "service": {
            "type": "ClusterIP",
            "ports": [{"name": "status-port", "port": STATUS_PORT, "protocol": "TCP", "targetPort": STATUS_PORT}]
            + [
                {"name": f"tls-{port}", "port": port, "protocol": "TCP", "targetPort": port}
                for r in routes for port in r.gateway_ports
            ],
        },
        "nodeSelector": GATEWAY_NODE_LABELS,
        "tolerations": [
            {"key": GATEWAY_TAINT.key, "operator": "Equal", "value": GATEWAY_TAINT.value, "effect": "NoSchedule"}
        ],
        # One replica per AZ at least; never two in one zone while another has none.
        "topologySpreadConstraints": [
            spread("topology.kubernetes.io/zone", "DoNotSchedule"),
            spread("kubernetes.io/hostname", "ScheduleAnyway"),
        ],
        "autoscaling": {
            "enabled": True, "minReplicas": max(2, zones), "maxReplicas": 3 * max(2, zones),
            "targetCPUUtilizationPercentage": 70,
        },
        "podDisruptionBudget": {"maxUnavailable": 1},
        "resources": {"requests": {"cpu": "500m", "memory": "512Mi"}, "limits": {"cpu": "2", "memory": "1Gi"}},
        # Replaces the chart's pod default (a sysctl for ports below 1024, which
        # this gateway does not listen on) with a restricted-profile context.
        "securityContext": {**run_as, **seccomp},
        "containerSecurityContext": {
            **run_as, **seccomp,
            "allowPrivilegeEscalation": False,
            "privileged": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        },
        "terminationGracePeriodSeconds": 30,
    }


def istiod_values() -> dict:
    return {
        "meshConfig": {
            "trustDomain": TRUST_DOMAIN,
            "accessLogFile": "/dev/stdout",
            "accessLogEncoding": "JSON",
            # Hygiene, not a control: unknown destinations are dropped by the sidecar.
            "outboundTrafficPolicy": {"mode": "REGISTRY_ONLY"},
            # Applications start only once their sidecar can route their egress.
            "defaultConfig": {"holdApplicationUntilProxyStarts": True},
        },
        # The Istio CNI node agent sets up redirection instead of the privileged
        # istio-init container, so tenant namespaces keep the baseline Pod Security
        # profile (https://istio.io/latest/docs/setup/additional-setup/pod-security-admission/).
        "cni": {"enabled": True},
        "autoscaleMin": 2,
        "autoscaleMax": 5,
        "nodeSelector": SYSTEM_LABEL,
        "topologySpreadConstraints": [
            {"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone", "whenUnsatisfiable": "ScheduleAnyway",
             "labelSelector": {"matchLabels": ISTIOD_LABELS}}
        ],
        "global": {
            "hub": ISTIO_HUB,
            "tag": ISTIO_VERSION,
            "istioNamespace": ISTIO_NAMESPACE,
            "proxy": {"seccompProfile": {"type": "RuntimeDefault"}},
            # istiod shares the system nodes with tenant pods (which may not use
            # system classes): they cannot preempt it. The chart reads
            # global.priorityClassName for the istiod Deployment.
            "priorityClassName": "system-cluster-critical",
        },
    }


# --- the component -----------------------------------------------------------------


class Istio(pulumi.ComponentResource):
    """The egress subnets and gateway nodes, Istio (base, CNI agent, istiod,
    the egress gateway), the gateway namespace's guard, and every tenant."""

    def __init__(self, name: str, plan: Plan, network: Network, cluster: Cluster, cni: Cni,
                 namespaces: TenantNamespaces, opts: pulumi.ResourceOptions | None = None):
        super().__init__("egress:patterns:Istio", name, None, opts)
        settings = plan.settings
        k8s_child = pulumi.ResourceOptions(parent=self)
        self.routes = {t.name: tenant_routes(settings, t) for t in settings.tenants}
        all_routes = [r for routes in self.routes.values() for r in routes]

        # The gateway subnets in every AZ and the gateway node group there (seed:
        # own subnets in >=2 AZs, a dedicated managed node group, taints).
        self.egress_subnets = network.gateway_subnets
        zones = len(settings.availability_zones)
        self.node_group = cluster.node_group(
            f"{name}-gateway",
            subnet_ids=[s.id for s in self.egress_subnets.values()],
            size=NodeGroupSize(instance_type=settings.gateway_instance_type, min=max(2, zones), max=3 * max(2, zones)),
            labels=GATEWAY_NODE_LABELS,
            taints=[GATEWAY_TAINT],
            cni=cni,
            parent=self,
        )

        # The API server calls istiod's webhooks on 15017 and proxies fetch
        # config and certificates on 15012 (aws-ia/terraform-aws-eks-blueprints,
        # patterns/istio). Nodes and control plane share the EKS cluster security
        # group, whose self rule admits this today; these rules keep it explicit.
        self.security_group_rules = [
            aws.vpc.SecurityGroupIngressRule(
                f"{name}-istiod-{port}",
                security_group_id=cluster.security_group_id,
                referenced_security_group_id=cluster.security_group_id,
                ip_protocol="tcp",
                from_port=port,
                to_port=port,
                description=description,
                opts=pulumi.ResourceOptions(parent=self),
            )
            for port, description in (
                (WEBHOOK_PORT, "Istio webhooks: API server to istiod"),
                (XDS_PORT, "Istio xDS and CA: proxies to istiod"),
            )
        ]

        # Control plane, in the order of https://istio.io/latest/docs/setup/install/helm/:
        # base (CRDs) before istiod; the CNI agent alongside.
        self.istio_namespace = k8s.core.v1.Namespace(
            f"{name}-istio-system",
            metadata={
                "name": ISTIO_NAMESPACE,
                # The CNI node agent needs hostPath volumes (privileged profile).
                "labels": {"pod-security.kubernetes.io/enforce": "privileged"},
            },
            opts=k8s_child,
        )
        ns = self.istio_namespace.metadata.name
        # istiod must talk from its start (proxies, webhooks); the CNI agent runs on the host network.
        self.open_namespace = cni.open_platform_namespace(f"{name}-istio-system", ns, self.istio_namespace)
        self.base = self._release(f"{name}-istio-base", "base", "istio-base", ns, {"defaultRevision": "default"})
        self.cni = self._release(
            f"{name}-istio-cni", "cni", "istio-cni", ns, {"seccompProfile": {"type": "RuntimeDefault"}}
        )
        # istiod needs the CRDs; its pods wait for the system nodes within the timeout.
        self.istiod = self._release(f"{name}-istiod", "istiod", "istiod", ns, istiod_values(),
                                    depends_on=[self.base, *self.open_namespace])
        # Istio objects need the CRDs and istiod's validation webhook.
        after_istiod = pulumi.ResourceOptions(parent=self, depends_on=[self.istiod])
        self.peer_authentication = k8s.apiextensions.CustomResource(
            f"{name}-mesh-mtls",
            api_version="security.istio.io/v1",
            kind="PeerAuthentication",
            metadata={"name": "default", "namespace": ns},  # root namespace: mesh-wide
            spec={"mtls": {"mode": "STRICT"}},
            opts=after_istiod,
        )

        # The egress gateway in its own namespace.
        self.gateway_namespace = k8s.core.v1.Namespace(
            f"{name}-{GATEWAY_NAMESPACE}",
            metadata={
                "name": GATEWAY_NAMESPACE,
                "labels": {
                    "pod-security.kubernetes.io/enforce": "restricted",
                    "pod-security.kubernetes.io/warn": "restricted",
                    "pod-security.kubernetes.io/audit": "restricted",
                },
            },
            opts=k8s_child,
        )
        gateway_ns = self.gateway_namespace.metadata.name
        self.gateway_values = gateway_values(settings, all_routes)
        self.gateway = self._release(
            f"{name}-gateway", "gateway", GATEWAY_NAME, gateway_ns, self.gateway_values,
            # The injector (istiod) fills in the proxy image, and the pods can only
            # run on the tainted egress nodes: start the wait once both exist.
            depends_on=[self.istiod, self.node_group],
        )
        self.gateway_policies = self._gateway_network_policies(name, settings, gateway_ns)
        # Deny by default on the gateway; each upstream adds an ALLOW policy.
        self.allow_nothing = k8s.apiextensions.CustomResource(
            f"{name}-egress-gateway-allow-nothing",
            api_version="security.istio.io/v1",
            kind="AuthorizationPolicy",
            metadata={"name": "allow-nothing", "namespace": gateway_ns},
            spec={"selector": {"matchLabels": GATEWAY_LABELS}},
            opts=after_istiod,
        )

        self.upstream_entries = {
            upstream.host: k8s.apiextensions.CustomResource(
                f"{name}-upstream-{upstream.host}",
                api_version=entry["apiVersion"],
                kind=entry["kind"],
                metadata={**entry["metadata"], "namespace": gateway_ns},
                spec=entry["spec"],
                opts=after_istiod,
            )
            for upstream in gateway_upstreams(all_routes)
            for entry in [gateway_service_entry(upstream)]
        }

        self.tenants = {
            tenant.name: IstioTenant(
                tenant.name, tenant, self.routes[tenant.name], namespaces[tenant.name],
                gateway_namespace=gateway_ns, depends_on=[self.istiod],
                opts=pulumi.ResourceOptions(parent=self),
            )
            for tenant in settings.tenants
        }
        self.register_outputs({
            "egress_subnet_ids": [s.id for s in self.egress_subnets.values()],
            "tenants": list(self.tenants),
        })

    def _release(self, name: str, chart: str, release_name: str, namespace: pulumi.Input[str], values: dict, *,
                 depends_on: list[pulumi.Resource] | None = None) -> k8s.helm.v3.Release:
        return k8s.helm.v3.Release(
            name,
            name=release_name,
            chart=chart,
            version=ISTIO_VERSION,
            repository_opts=k8s.helm.v3.RepositoryOptsArgs(repo=ISTIO_REPO),
            namespace=namespace,
            values=values,
            # Wait until the workloads are ready, long enough for new nodes to join.
            skip_await=False,
            timeout=900,
            opts=pulumi.ResourceOptions(parent=self, depends_on=depends_on),
        )

    def _gateway_network_policies(self, name: str, settings: Settings, namespace: pulumi.Input[str]) -> dict:
        """Only the gateway namespace reaches on-prem, and only the tenants reach it."""
        opts = pulumi.ResourceOptions(parent=self.gateway_namespace)
        gateway_pods = {"matchLabels": GATEWAY_LABELS}

        def policy(key: str, spec: dict) -> k8s.networking.v1.NetworkPolicy:
            return k8s.networking.v1.NetworkPolicy(
                f"{name}-{GATEWAY_NAMESPACE}-{key}", metadata={"name": key, "namespace": namespace}, spec=spec, opts=opts
            )

        return {
            "default-deny": policy("default-deny", {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}),
            "allow-tenants": policy("allow-tenants", {
                "podSelector": gateway_pods,
                "policyTypes": ["Ingress"],
                "ingress": [
                    {
                        "from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": t.k8s_namespace}}}],
                        "ports": [{"protocol": "TCP", "port": p} for r in self.routes[t.name] for p in r.gateway_ports],
                    }
                    for t in settings.tenants
                ],
            }),
            "allow-control-plane": policy("allow-control-plane", {
                "podSelector": gateway_pods,
                "policyTypes": ["Egress"],
                "egress": [{"to": [DNS_PEER], "ports": DNS_PORTS}, ISTIOD_EGRESS_RULE],
            }),
            "allow-upstreams": policy("allow-upstreams", {
                "podSelector": gateway_pods,
                "policyTypes": ["Egress"],
                "egress": [rule for t in settings.tenants for rule in upstream_egress_rules(t)],
            }),
        }


class IstioTenant(pulumi.ComponentResource):
    """A tenant in the mesh: the client service account in its namespace (which
    has sidecar injection and the bypass guard, see _tenant_namespace) and the
    five Istio objects per upstream."""

    def __init__(self, name: str, tenant: Tenant, routes: list[UpstreamRoute], tenant_namespace: TenantNamespace,
                 *, gateway_namespace: pulumi.Input[str], depends_on: list[pulumi.Resource],
                 opts: pulumi.ResourceOptions | None = None):
        super().__init__("egress:patterns:IstioTenant", name, None, opts)
        self.namespace = tenant_namespace
        namespace = tenant_namespace.namespace.metadata.name
        self.service_account = k8s.core.v1.ServiceAccount(
            f"{name}-{CLIENT_SERVICE_ACCOUNT}",
            metadata={"name": CLIENT_SERVICE_ACCOUNT, "namespace": namespace},
            automount_service_account_token=False,  # the sidecar uses its own projected token
            opts=pulumi.ResourceOptions(parent=self),
        )
        # Istio objects need the CRDs and istiod's validation webhook (explicit),
        # and their namespace (implicit, through its name).
        opts_ = pulumi.ResourceOptions(parent=self, depends_on=depends_on)
        self.objects: dict[str, dict[str, k8s.apiextensions.CustomResource]] = {}
        for route in routes:
            rendered = {
                "ServiceEntry": service_entry(route),
                "Gateway": gateway(route),
                "VirtualService": virtual_service(route),
                "DestinationRule": destination_rule(route),
                "AuthorizationPolicy": authorization_policy(route),
            }
            self.objects[route.upstream] = {}
            for kind, obj in rendered.items():
                metadata = dict(obj["metadata"])
                metadata["namespace"] = {tenant.k8s_namespace: namespace, GATEWAY_NAMESPACE: gateway_namespace}[
                    metadata["namespace"]
                ]
                self.objects[route.upstream][kind] = k8s.apiextensions.CustomResource(
                    f"{route.name}-{kind.lower()}",
                    api_version=obj["apiVersion"],
                    kind=kind,
                    metadata=metadata,
                    spec=obj["spec"],
                    opts=opts_,
                )
        self.register_outputs({"namespace": namespace, "principal": routes[0].principal if routes else None})


def _tenant_namespace(settings: Settings, tenant: Tenant) -> NamespaceSpec:
    """Sidecar injection on; the bypass guard: egress only to the egress gateway
    (on the tenant's own ports) and istiod."""
    return NamespaceSpec(tenant_egress_rules(tenant_routes(settings, tenant)), {"istio-injection": "enabled"})


def _egress_subnet_cidrs(settings: Settings, addresses: AddressPlan, tenant: Tenant) -> list[str]:
    return [str(s.cidr) for s in addresses.egress_subnets]


SIDECAR_POLICY = "egress-istio-sidecar"
SIDECAR_INJECT = "sidecar.istio.io/inject"
# The traffic capture as the sidecar injector writes it on every pod it injects
# (1.30 injection-template.yaml with istio-cni: interception mode, outbound
# ranges and revision, from the mesh defaults unless the pod sets them), which
# the istio-cni plugin then reads to set up the redirection
# (cni/pkg/plugin/sidecar_redirect.go). Tenant pods keep these values.
SIDECAR_CAPTURE = {
    "sidecar.istio.io/interceptionMode": "REDIRECT",
    "traffic.sidecar.istio.io/includeOutboundIPRanges": "*",
    "istio.io/rev": "default",
}
# Pod annotations the injector never writes here and that narrow the capture or
# replace the proxy: exclusions (https://istio.io/latest/docs/reference/config/annotations/),
# a whole ProxyConfig (interceptionMode NONE), another proxy image or Envoy
# bootstrap.
SIDECAR_BYPASS_ANNOTATIONS = (
    "traffic.sidecar.istio.io/excludeInterfaces",
    "traffic.sidecar.istio.io/excludeOutboundIPRanges",
    "traffic.sidecar.istio.io/excludeOutboundPorts",
    "traffic.sidecar.istio.io/includeOutboundPorts",
    "proxy.istio.io/config",
    "sidecar.istio.io/proxyImage",
    "sidecar.istio.io/bootstrapOverride",
)
# Containers named like Istio's own: the istio-cni plugin skips a pod with an
# istio-init container (it assumes that one set up iptables), or whose
# istio-proxy is not a sidecar (args) or has DISABLE_ENVOY, and takes the UID
# and GID its rules let through from istio-proxy's securityContext
# (cni/pkg/plugin/plugin.go, kubernetes.go). A container of the pod's own named
# istio-proxy is merged over the injected one (custom injection), so these are
# checked on the pod the injector leaves.
_PROXY = (
    f"name == 'istio-proxy' && starts_with(image || '', '{PROXY_IMAGE}:') && !command"
    " && args[0] == 'proxy' && args[1] == 'sidecar'"
    f" && securityContext.runAsUser == `{PROXY_UID}` && securityContext.runAsGroup == `{PROXY_UID}`"
    " && !(env[?name == 'DISABLE_ENVOY'])"
)
_VALIDATION = (f"name == 'istio-validation' && starts_with(image || '', '{PROXY_IMAGE}:') && !command"
               " && args[0] == 'istio-iptables'")
_ISTIO_CONTAINERS = ("istio-proxy", "istio-validation", "istio-init")
# Every container of the pod; the pipe ends the projection, so a filter after
# it selects containers.
_CONTAINERS = "request.object.spec.[containers, initContainers][] | "
_ISTIOS_OWN = f"(({_PROXY}) || ({_VALIDATION}))"


def _is(expression: str) -> tuple[str, str, bool]:
    """A deny condition on a JMESPath boolean. Kyverno compares strings with
    wildcards (Equals/NotEquals, operator/equal.go), so a value such as "*"
    is compared inside JMESPath, not by the operator."""
    return f"{{{{ {expression} }}}}", "Equals", True


def _annotation_other_than(key: str, value: str) -> str:
    return f"(request.object.metadata.annotations.\"{key}\" || '{value}') != '{value}'"


@dataclass(frozen=True)
class SidecarAdmission:
    """Tenants told apart by their namespace's mesh identity: tenant pods keep
    the sidecar and its full traffic capture, the only way to the gateway.
    Kyverno validates the pod after every mutating webhook, so it sees the
    sidecar and the annotations the injector added
    (https://kubernetes.io/docs/reference/access-authn-authz/extensible-admission-controllers/)."""

    def policies(self, tenants: Sequence[Tenant]) -> list[dict[str, Any]]:
        namespaces = [t.k8s_namespace for t in tenants]
        capture = ", ".join(f"{k}: {v!r}" for k, v in SIDECAR_CAPTURE.items())
        return [rules.policy(SIDECAR_POLICY, "Tenant pods keep the Istio sidecar and its full traffic capture.", [
            {
                "name": "no-sidecar-opt-out",
                "match": rules.pods(namespaces),
                "validate": rules.validate(
                    "Pods in tenant namespaces get the Istio sidecar, which sends on-prem traffic through the "
                    f"egress gateway: remove the {SIDECAR_INJECT} label and annotation or set them to \"true\".",
                    pattern={
                        "metadata": {
                            "=(labels)": {f"=({SIDECAR_INJECT})": "true"},
                            "=(annotations)": {f"=({SIDECAR_INJECT})": "true"},
                        }
                    },
                ),
            },
            {
                "name": "no-sidecar-bypass",
                "match": rules.pods(namespaces),
                "validate": rules.validate(
                    "Pods in tenant namespaces may not narrow the sidecar's traffic capture or pick another proxy "
                    f"(traffic would bypass the egress gateway): leave {capture} (label istio.io/rev too) as the "
                    f"sidecar injector sets them, and remove the annotations {', '.join(SIDECAR_BYPASS_ANNOTATIONS)}.",
                    deny=rules.deny_if(
                        *[_is(_annotation_other_than(k, v)) for k, v in SIDECAR_CAPTURE.items()],
                        _is("(request.object.metadata.labels.\"istio.io/rev\" || 'default') != 'default'"),
                        ("{{ keys(request.object.metadata.annotations || `{}`) }}", "AnyIn",
                         list(SIDECAR_BYPASS_ANNOTATIONS)),
                    ),
                ),
            },
            {
                "name": "no-proxy-identity",
                "match": rules.pods(namespaces),
                "validate": rules.validate(
                    f"Traffic from user or group {PROXY_UID} (the sidecar's) bypasses the traffic capture, and the "
                    f"containers {', '.join(_ISTIO_CONTAINERS)} are Istio's: in tenant namespaces no pod or container "
                    f"may set runAsUser or runAsGroup {PROXY_UID}, no container may take one of those names, and the "
                    "istio-proxy container is left to the sidecar injector (no image, command, args, user or "
                    "DISABLE_ENVOY of the pod's own).",
                    deny=rules.deny_if(
                        _is(f"length({_CONTAINERS}[?contains({list(_ISTIO_CONTAINERS)}, name) && !{_ISTIOS_OWN}])"
                            " > `0`"),
                        _is("length([request.object.spec.securityContext.runAsUser, "
                            "request.object.spec.securityContext.runAsGroup, "
                            f"{_CONTAINERS}[?!{_ISTIOS_OWN}].securityContext.[runAsUser, runAsGroup][]][]"
                            f" | [?@ == `{PROXY_UID}`]) > `0`"),
                    ),
                ),
            },
        ])]

    def escapes(self, tenant: Tenant, tenants: Sequence[Tenant]) -> list[dict[str, Any]]:
        busybox = "public.ecr.aws/docker/library/busybox:1.36"
        return [
            {"metadata": {"labels": {SIDECAR_INJECT: "false"}}},
            {"metadata": {"annotations": {SIDECAR_INJECT: "false"}}},
            {"metadata": {"annotations": {"sidecar.istio.io/interceptionMode": "NONE"}}},
            {"metadata": {"annotations": {"traffic.sidecar.istio.io/includeOutboundIPRanges": "10.1.0.0/16"}}},
            {"metadata": {"annotations": {"istio.io/rev": "canary"}}},
            {"metadata": {"labels": {"istio.io/rev": "canary"}}},
            {"metadata": {"annotations": {"proxy.istio.io/config": "interceptionMode: NONE"}}},
            {"metadata": {"annotations": {"sidecar.istio.io/proxyImage": busybox}}},
            {"metadata": {"annotations": {"sidecar.istio.io/bootstrapOverride": "my-envoy-bootstrap"}}},
            {"spec": {"securityContext": {"runAsUser": PROXY_UID}}},
            {"spec": {"securityContext": {"runAsGroup": PROXY_UID}}},
            {"spec": {"containers": [{"name": "app", "image": busybox, "securityContext": {"runAsUser": PROXY_UID}}]}},
            {"spec": {"initContainers": [{"name": "istio-init", "image": busybox}]}},
        ] + [{"metadata": {"annotations": {a: "10.0.0.0/8"}}} for a in SIDECAR_BYPASS_ANNOTATIONS
             if a.startswith("traffic.sidecar.istio.io/")]

    def outside_escapes(self, tenants: Sequence[Tenant]) -> list[dict[str, Any]]:
        # Outside the tenant namespaces no pod holds a tenant's principal, and
        # NetworkPolicies keep every namespace but the tenants' from the gateway.
        return []


SPEC = PatternSpec(
    name="istio",
    summary="sidecars + an Istio egress gateway on tainted nodes in the egress subnets; source = the egress subnet CIDRs",
    component=Istio,
    cni=lambda name, plan, cluster, opts: VpcCni(name, cluster, opts=opts),  # enforces the NetworkPolicy bypass guard
    tenant_range=lambda settings: None,
    sources=_egress_subnet_cidrs,
    admission=SidecarAdmission(),
    tenant_namespace=_tenant_namespace,
    checks=_checks,
    warnings=_warnings,
    node_group_count=lambda settings: 2,
    gateway_nodes=True,
    multi_az_node_groups=lambda settings: ["the istio gateway group"],
    # The gateway runs in its namespace; the istio-cni agent (istio-system) runs on every node.
    gateway_namespaces=(GATEWAY_NAMESPACE, ISTIO_NAMESPACE),
    own_namespaces=(ISTIO_NAMESPACE, GATEWAY_NAMESPACE),
)

