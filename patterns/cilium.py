"""Pattern 3, cilium: Cilium replaces the VPC CNI and kube-proxy; one
CiliumEgressGatewayPolicy per tenant SNATs the tenant's pods to a fixed egress
IP on a dedicated gateway node in every AZ. The firewall allow-lists the
tenant's egress IPs (one per AZ), known from the address plan before deploy.

How an egress IP gets onto a gateway node (Cilium does not assign it; docs:
https://docs.cilium.io/en/stable/network/egress-gateway/egress-gateway/,
"Preliminary Considerations"): every AZ has one ENI in its egress subnet whose
private IPs are pinned to the tenants' egress IPs. The ENI is tagged
`cilium.io/no_manage=true`, which Cilium's ENI IPAM skips (Helm
`eni.nodeSpec.excludeInterfaceTags`, cilium/cilium PR #19096), and the IPs sit
in an explicit subnet CIDR reservation so AWS never hands them to a node or pod.
The AZ's gateway node attaches the ENI at boot and keeps its addresses
configured (user data below), so a replacement node takes over the same IPs.
"""

from __future__ import annotations

import base64
import ipaddress
import json
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws
import pulumi_kubernetes as k8s

from .addressing import AWS_RESERVED_HEAD, AddressPlan, Subnet, usable_host
from .cluster import SYSTEM_LABEL, Cluster, Cni, NodeRole, Taint
from .network import Network
from .plan import PatternSpec, Plan
from .settings import NAMESPACE, Problem, Settings, Tenant
from .tenancy import TENANT_KEY, TenantNamespaces, gateway_labels, gateway_taint

# Chart 1.19.6: 1.18+ is needed for `egressGateways` (several gateways per
# policy); 1.20.0/1.20.1 have an egress-gateway regression with dual-stack
# policies (cilium/cilium#48660), so stay on the 1.19 line.
CHART = "cilium"
CHART_VERSION = "1.19.6"
CHART_REPO = "https://helm.cilium.io/"
RELEASE_NAMESPACE = "kube-system"
OPERATOR_SERVICE_ACCOUNT = "cilium-operator"

# Cilium removes this taint once its agent runs on the node; NoExecute so no pod
# starts before the CNI (https://docs.cilium.io/en/stable/installation/taints/).
AGENT_NOT_READY = Taint("node.cilium.io/agent-not-ready", "true", "NO_EXECUTE")
GATEWAY_LABEL = gateway_labels("cilium")
GATEWAY_TAINT = gateway_taint("cilium")
ZONE_LABEL = "topology.kubernetes.io/zone"
NO_MANAGE_TAG = ("cilium.io/no_manage", "true")
GATEWAY_ENI_TAG = "egress/gateway-eni"  # value: the stack; scopes the node role's attach permission
POLICY_API_VERSION = "cilium.io/v2"
POLICY_KIND = "CiliumEgressGatewayPolicy"
ROUTE_TABLE = 100  # policy routing table of the egress ENI on gateway nodes

# IPv4 addresses per ENI (EC2 user guide, "IP addresses per network interface
# per instance type"); the egress ENI holds its own primary IP plus one per tenant.
IPV4_PER_ENI = {
    "c6in.large": 10, "c6in.xlarge": 15, "c6in.2xlarge": 15, "c6in.4xlarge": 30, "c6in.8xlarge": 30,
    "c7i.large": 10, "c7i.xlarge": 15, "c7i.2xlarge": 15, "c7i.4xlarge": 30,
    "m7i.large": 10, "m7i.xlarge": 15, "m7i.2xlarge": 15, "m7i.4xlarge": 30,
    "c5n.large": 10, "c5n.xlarge": 15, "c5n.2xlarge": 15, "c5n.4xlarge": 30,
}

# EC2 actions of Cilium's ENI IPAM (operator), from
# https://docs.cilium.io/en/stable/network/concepts/ipam/eni/ "Required Privileges",
# plus DescribeTags (ENI garbage collection) and UnassignPrivateIpAddresses.
OPERATOR_EC2_ACTIONS = [
    "ec2:AssignPrivateIpAddresses", "ec2:AttachNetworkInterface", "ec2:CreateNetworkInterface",
    "ec2:CreateTags", "ec2:DeleteNetworkInterface", "ec2:DescribeInstanceTypes",
    "ec2:DescribeInstances", "ec2:DescribeManagedPrefixLists", "ec2:DescribeNetworkInterfaces",
    "ec2:DescribeRouteTables", "ec2:DescribeSecurityGroups", "ec2:DescribeSubnets",
    "ec2:DescribeTags", "ec2:DescribeVpcs", "ec2:GetManagedPrefixListEntries",
    "ec2:ModifyNetworkInterfaceAttribute", "ec2:UnassignPrivateIpAddresses",
]


@dataclass(frozen=True)
class GatewaySize:
    """One node per AZ: an egress IP can live on one instance at a time."""

    instance_type: str
    min: int = 1
    max: int = 1


# --- the pure plan: egress IPs -------------------------------------------------


def egress_ip_block(subnet: ipaddress.IPv4Network) -> ipaddress.IPv4Network:
    """The first half of an egress subnet, reserved for pinned egress IPs (the
    other half serves the gateway nodes' own addresses)."""
    return next(subnet.subnets(prefixlen_diff=1))


def eni_primary_ip(subnet: Subnet) -> ipaddress.IPv4Address:
    """The egress ENI's own address: never a tenant's, so tenants come and go
    without replacing the ENI."""
    return usable_host(subnet.cidr, 0)


def egress_ip(settings: Settings, subnet: Subnet, tenant: Tenant) -> ipaddress.IPv4Address:
    return usable_host(subnet.cidr, 1 + settings.slots[tenant.name])


def egress_ips(settings: Settings, addresses: AddressPlan, tenant: Tenant) -> dict[str, ipaddress.IPv4Address]:
    """The tenant's egress IP in every AZ."""
    return {s.az: egress_ip(settings, s, tenant) for s in addresses.egress_subnets}


def _sources(settings: Settings, addresses: AddressPlan, tenant: Tenant) -> list[str]:
    return [f"{ip}/32" for ip in egress_ips(settings, addresses, tenant).values()]


def _checks(settings: Settings) -> list[Problem]:
    problems = []
    block = egress_ip_block(ipaddress.IPv4Network(f"0.0.0.0/{settings.egress_subnet_prefix}"))
    # The block starts with AWS's reserved addresses and ends before the
    # subnet's broadcast address; its first usable address is the ENI's own.
    room = block.num_addresses - AWS_RESERVED_HEAD - 1
    for position, tenant in enumerate(settings.tenants):
        slot = settings.slots[tenant.name]
        if slot >= room:
            problems.append(
                Problem(
                    f"{NAMESPACE}:tenants[{position}]" + (".slot" if tenant.slot is not None else ""),
                    f"tenant {tenant.name!r} (slot {slot}) gets no egress IP: the reserved half of each "
                    f"/{settings.egress_subnet_prefix} egress subnet holds {room} tenant IPs; use a shorter "
                    "egress:egressSubnetPrefix or a lower slot",
                )
            )
    limit = IPV4_PER_ENI.get(settings.gateway_instance_type)
    needed = 1 + len(settings.tenants)
    if limit is not None and needed > limit:
        problems.append(
            Problem(
                f"{NAMESPACE}:gatewayInstanceType",
                f"{settings.gateway_instance_type} holds {limit} IPv4 addresses per ENI but the egress ENI "
                f"needs {needed} (its own + one per tenant); pick a type with more, e.g. c6in.4xlarge",
            )
        )
    return problems


def _warnings(settings: Settings, addresses: AddressPlan) -> list[str]:
    warnings = [
        "open-source Cilium has no failover of an egress IP (cilium/cilium#18230): while a gateway "
        "node is down, the pods Cilium assigned to that gateway lose egress to their upstreams "
        "(traffic is dropped, never sent from another IP). This stack runs one gateway per AZ, so a "
        "failure cuts only the pods assigned to that AZ's gateway; EKS replaces the node, which "
        "re-attaches the same ENI and IPs, and Cilium moves those pods to the other gateways once "
        "the failed Node object is deleted. After a gateway node is replaced, re-apply the tenant "
        "policies (Cilium does not re-read a node's addresses); see docs/cilium.md",
    ]
    if settings.gateway_instance_type not in IPV4_PER_ENI:
        warnings.append(
            f"egress:gatewayInstanceType {settings.gateway_instance_type} is not in the known list; "
            f"make sure it holds at least {1 + len(settings.tenants)} IPv4 addresses per ENI"
        )
    return warnings


# --- the pure plan: Kubernetes documents -----------------------------------------


def helm_values(k8s_service_host: str, operator_role_arn: str) -> dict:
    """Cilium on EKS in ENI mode without kube-proxy, with the egress gateway.
    https://docs.cilium.io/en/stable/installation/k8s-install-helm/ (EKS tab),
    .../network/kubernetes/kubeproxy-free/ and .../network/egress-gateway/."""
    return {
        "eni": {
            "enabled": True,
            "iamRole": operator_role_arn,  # IRSA for the operator, the only EC2 caller
            # The egress ENIs are ours: keep Cilium's IPAM off them.
            "nodeSpec": {"excludeInterfaceTags": ["=".join(NO_MANAGE_TAG)]},
        },
        "ipam": {"mode": "eni"},
        "routingMode": "native",
        "kubeProxyReplacement": True,
        # No kube-proxy, so the agent must reach the API server directly.
        "k8sServiceHost": k8s_service_host,
        "k8sServicePort": 443,
        "bpf": {"masquerade": True},
        # The chart defaults this to false in ENI mode (1.18+), and the agent
        # refuses the egress gateway without it.
        "enableIPv4Masquerade": True,
        "egressGateway": {"enabled": True},
        # BPF programs (masquerading, egress gateway SNAT) attach to these; AL2023
        # names NICs ens5, ens6, ..., so the egress ENI is covered too.
        "devices": ["ens+"],
        "identityAllocationMode": "crd",  # kvstore mode is incompatible with the egress gateway
        "ciliumEndpointSlice": {"enabled": False},  # incompatible with the egress gateway
        "operator": {"replicas": 2, "nodeSelector": {"kubernetes.io/os": "linux", **SYSTEM_LABEL}},
    }


def policy_spec(tenant: Tenant, ips: dict[str, ipaddress.IPv4Address]) -> dict:
    """CiliumEgressGatewayPolicy spec: the tenant's labelled pods, in its own
    namespace only, to its upstreams, through one gateway per AZ."""
    gateways = [
        {"nodeSelector": {"matchLabels": {**GATEWAY_LABEL, ZONE_LABEL: az}}, "egressIP": str(ip)}
        for az, ip in ips.items()
    ]
    return {
        "selectors": [
            {
                "podSelector": {
                    "matchLabels": {
                        TENANT_KEY: tenant.name,
                        # The label alone is not the identity: it counts only inside
                        # the tenant's namespace (Cilium's namespace label).
                        "io.kubernetes.pod.namespace": tenant.k8s_namespace,
                    }
                }
            }
        ],
        "destinationCIDRs": list(dict.fromkeys(str(u.cidr) for u in tenant.upstreams)),
        # Ignored when egressGateways is set, but still required by the CRD schema.
        "egressGateway": gateways[0],
        "egressGateways": gateways,
    }


def policy_name(tenant: Tenant) -> str:
    return f"egress-{tenant.name}"


def gateway_user_data(eni_id: str, subnet: ipaddress.IPv4Network) -> str:
    """MIME user data (EKS merges it with its own nodeadm part) that installs a
    service attaching the AZ's egress ENI and keeping its addresses in sync with
    EC2 (IMDS), with a routing table so traffic from an egress IP leaves through
    the ENI that owns it (Cilium picks the device by `ip route get <dst> from
    <egressIP>`). The EKS AL2023 AMI leaves secondary NICs unconfigured
    (awslabs/amazon-eks-ami#1738), so the service does it. It retries forever: a
    replacement node waits until the old instance releases the ENI."""
    router = subnet.network_address + 1
    script = f"""#!/bin/bash
# Attach egress ENI {eni_id} to this instance and keep its IPs configured.
set -uo pipefail
ENI_ID={eni_id}
SUBNET={subnet}
ROUTER={router}
TABLE={ROUTE_TABLE}
imds() {{
  local token
  token=$(curl -sf -X PUT -H 'X-aws-ec2-metadata-token-ttl-seconds: 300' http://169.254.169.254/latest/api/token) &&
    curl -sf -H "X-aws-ec2-metadata-token: $token" "http://169.254.169.254/latest/meta-data/$1"
}}
export AWS_DEFAULT_REGION=$(imds placement/region)
instance=$(imds instance-id)
eni() {{ aws ec2 describe-network-interfaces --network-interface-ids "$ENI_ID" --query "NetworkInterfaces[0].$1" --output text; }}
until [ "$(eni Attachment.InstanceId)" = "$instance" ]; do
  used=$(for mac in $(imds network/interfaces/macs/); do imds "network/interfaces/macs/${{mac%/}}/device-number"; echo; done)
  index=1
  while grep -qx "$index" <<<"$used"; do index=$((index + 1)); done
  aws ec2 attach-network-interface --network-interface-id "$ENI_ID" --instance-id "$instance" \\
    --device-index "$index" >/dev/null || sleep 10
done
mac=$(eni MacAddress)
until dev=$(ip -o link | awk -v mac="$mac" 'index($0, mac) {{sub(":", "", $2); print $2}}') && [ -n "$dev" ]; do
  sleep 2
done
sysctl -qw "net.ipv4.conf.$dev.rp_filter=2"
ip link set dev "$dev" up
while true; do
  want=$(imds "network/interfaces/macs/$mac/local-ipv4s")
  for ip in $want; do
    ip addr replace "$ip/${{SUBNET#*/}}" dev "$dev" noprefixroute
    ip rule show | grep -q "from $ip lookup $TABLE" || ip rule add from "$ip" lookup "$TABLE" priority 100
  done
  for ip in $(ip -4 -o addr show dev "$dev" | awk '{{sub("/.*", "", $4); print $4}}'); do
    grep -qx "$ip" <<<"$want" || {{ ip addr del "$ip/${{SUBNET#*/}}" dev "$dev"; ip rule del from "$ip" lookup "$TABLE"; }}
  done
  ip route replace "$SUBNET" dev "$dev" table "$TABLE"
  ip route replace default via "$ROUTER" dev "$dev" table "$TABLE"
  sleep 5
done
"""
    unit = """[Unit]
Description=Attach and configure the egress gateway ENI (fixed tenant egress IPs)
Wants=network-online.target
After=network-online.target

[Service]
ExecStart=/usr/local/sbin/egress-eni
Restart=always
RestartSec=10

[Install]
WantedBy=multi-user.target
"""
    shell = f"""#!/bin/bash
set -euo pipefail
cat > /usr/local/sbin/egress-eni <<'SCRIPT'
{script}SCRIPT
chmod 0755 /usr/local/sbin/egress-eni
cat > /etc/systemd/system/egress-eni.service <<'UNIT'
{unit}UNIT
systemctl daemon-reload
systemctl enable --now egress-eni.service
"""
    return (
        'MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary="//"\n\n'
        '--//\nContent-Type: text/x-shellscript; charset="us-ascii"\n\n'
        f"{shell}\n--//--\n"
    )


# --- resources ----------------------------------------------------------------------


class Cilium(Cni):
    """Cilium from its Helm chart, replacing aws-node and kube-proxy (the cluster
    is created without them), with its operator on an IRSA role."""

    startup_taints = [AGENT_NOT_READY]

    def __init__(self, name: str, plan: Plan, cluster: Cluster, opts: pulumi.ResourceOptions | None = None):
        super().__init__("egress:cilium:Cilium", name, None, opts)
        stack = plan.stack
        self.operator_policy = aws.iam.Policy(
            f"{name}-cilium-operator",
            description=f"Cilium ENI IPAM ({stack})",
            policy=json.dumps(
                {
                    "Version": "2012-10-17",
                    "Statement": [
                        {
                            "Effect": "Allow",
                            "Action": OPERATOR_EC2_ACTIONS,
                            "Resource": "*",
                            "Condition": {"StringEquals": {"aws:RequestedRegion": plan.settings.region}},
                        }
                    ],
                }
            ),
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.operator_role = cluster.irsa_role(
            f"{name}-cilium-operator", RELEASE_NAMESPACE, OPERATOR_SERVICE_ACCOUNT,
            [self.operator_policy.arn], parent=self,
        )
        self.values = pulumi.Output.all(cluster.endpoint, self.operator_role.arn).apply(
            lambda args: helm_values(args[0].removeprefix("https://"), args[1])
        )
        self.release = k8s.helm.v3.Release(
            f"{name}-cilium",
            name=CHART,
            chart=CHART,
            version=CHART_VERSION,
            namespace=RELEASE_NAMESPACE,
            repository_opts=k8s.helm.v3.RepositoryOptsArgs(repo=CHART_REPO),
            values=self.values,
            # Nodes wait for this component (they become Ready only once the
            # agent runs), and the operator Deployment cannot become Ready before
            # nodes exist: awaiting the release here would deadlock. The chart
            # only needs the API server; readiness is awaited by the node groups.
            skip_await=True,
            atomic=False,
            opts=pulumi.ResourceOptions(parent=self, provider=cluster.provider),
        )
        self.register_outputs({"release": self.release.name})


class CiliumEgress(pulumi.ComponentResource):
    """Gateway subnets, ENIs and nodes per AZ; per tenant a namespace and its
    CiliumEgressGatewayPolicy."""

    def __init__(self, name: str, plan: Plan, network: Network, cluster: Cluster, cni: Cni,
                 namespaces: TenantNamespaces, opts: pulumi.ResourceOptions | None = None):
        super().__init__("egress:patterns:CiliumEgress", name, None, opts)
        settings = plan.settings
        stack = plan.stack
        child = pulumi.ResourceOptions(parent=self)
        tags = {"egress/stack": stack}

        self.eni_security_group = aws.ec2.SecurityGroup(
            f"{name}-gateway-eni",
            vpc_id=network.vpc_id,
            description="Egress ENIs: tenants' upstreams only (stateful: replies return)",
            egress=[
                aws.ec2.SecurityGroupEgressArgs(
                    protocol="tcp", from_port=port, to_port=port, cidr_blocks=[cidr],
                    description=f"{tenant}/{upstream}",
                )
                for (cidr, port), (tenant, upstream) in _egress_rules(settings).items()
            ],
            tags=tags,
            opts=child,
        )
        # Only gateway nodes may attach the egress ENIs: they get their own role.
        gateway_role = cluster.new_node_role(f"{name}-gateway", parent=self)
        self.node_attach_policy = aws.iam.RolePolicy(
            f"{name}-gateway-eni-attach",
            role=gateway_role.role.name,
            policy=json.dumps(_attach_policy(stack)),
            opts=pulumi.ResourceOptions(parent=gateway_role.role),
        )
        self.gateway_role = NodeRole(gateway_role.role, [*gateway_role.policies, self.node_attach_policy])

        self.subnets: dict[str, aws.ec2.Subnet] = {}
        self.enis: dict[str, aws.ec2.NetworkInterface] = {}
        self.node_groups: dict[str, aws.eks.NodeGroup] = {}
        for subnet in plan.addresses.egress_subnets:
            az = subnet.az
            resource = network.gateway_subnets[az]
            # AWS never auto-assigns addresses from an explicit reservation, so
            # nodes and pods cannot take a tenant's future egress IP.
            reservation = aws.ec2.SubnetCidrReservation(
                f"{name}-gateway-{az}-egress-ips",
                subnet_id=resource.id,
                cidr_block=str(egress_ip_block(subnet.cidr)),
                reservation_type="explicit",
                description="Pinned egress IPs of the tenants",
                opts=pulumi.ResourceOptions(parent=resource),
            )
            ips = [eni_primary_ip(subnet), *(egress_ip(settings, subnet, t) for t in settings.tenants)]
            eni = aws.ec2.NetworkInterface(
                f"{name}-gateway-{az}",
                subnet_id=resource.id,
                # An ordered list: the first is the ENI's primary IP, which never changes.
                private_ip_list_enabled=True,
                private_ip_lists=[str(ip) for ip in ips],
                security_groups=[self.eni_security_group.id],
                description=f"Egress IPs of the tenants in {az} ({stack})",
                tags={**tags, "Name": f"{name}-gateway-{az}", GATEWAY_ENI_TAG: stack, NO_MANAGE_TAG[0]: NO_MANAGE_TAG[1]},
                # Pinned IPs inside an explicit reservation: the reservation first.
                opts=pulumi.ResourceOptions(parent=resource, depends_on=[reservation]),
            )
            template = cluster.hardened_launch_template(
                f"{name}-gateway-{az}",
                user_data=eni.id.apply(
                    lambda eni_id, cidr=subnet.cidr: base64.b64encode(
                        gateway_user_data(eni_id, cidr).encode()
                    ).decode()
                ),
                parent=self,
            )
            self.subnets[az] = resource
            self.enis[az] = eni
            self.node_groups[az] = cluster.node_group(
                f"{name}-gateway-{az}",
                subnet_ids=[resource.id],
                size=GatewaySize(settings.gateway_instance_type),
                labels=GATEWAY_LABEL,
                taints=[GATEWAY_TAINT],
                cni=cni,
                parent=self,
                launch_template=template,
                role=self.gateway_role,
            )

        self.policies = {}
        for tenant in settings.tenants:
            self.policies[tenant.name] = k8s.apiextensions.CustomResource(
                f"{name}-{tenant.name}",
                api_version=POLICY_API_VERSION,
                kind=POLICY_KIND,
                metadata={"name": policy_name(tenant), "labels": {TENANT_KEY: tenant.name}},
                spec=policy_spec(tenant, egress_ips(settings, plan.addresses, tenant)),
                opts=pulumi.ResourceOptions(
                    parent=self,
                    provider=cluster.provider,
                    # The CRD is registered by the Cilium operator at start-up, and
                    # Cilium picks an egress IP once, when the policy appears: the
                    # gateway nodes (Ready only with the agent and operator running)
                    # and their ENIs (the IPs) come first.
                    depends_on=[*self.node_groups.values(), *self.enis.values()],
                ),
            )
        self.register_outputs(
            {"policies": [policy_name(t) for t in settings.tenants], "enis": [e.id for e in self.enis.values()]}
        )


def _egress_rules(settings: Settings) -> dict[tuple[str, int], tuple[str, str]]:
    rules: dict[tuple[str, int], tuple[str, str]] = {}
    for tenant in settings.tenants:
        for upstream in tenant.upstreams:
            for port in upstream.ports:
                rules.setdefault((str(upstream.cidr), port), (tenant.name, upstream.name))
    return rules


def _attach_policy(stack: str) -> dict:
    """Gateway nodes may attach this stack's egress ENIs, nothing else."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Action": "ec2:AttachNetworkInterface",
                "Resource": "arn:aws:ec2:*:*:network-interface/*",
                "Condition": {"StringEquals": {f"aws:ResourceTag/{GATEWAY_ENI_TAG}": stack}},
            },
            {"Effect": "Allow", "Action": "ec2:AttachNetworkInterface", "Resource": "arn:aws:ec2:*:*:instance/*"},
            {"Effect": "Allow", "Action": "ec2:DescribeNetworkInterfaces", "Resource": "*"},
        ],
    }


SPEC = PatternSpec(
    name="cilium",
    summary="Cilium egress gateway, one gateway node per AZ; source = the tenant's egress IPs",
    component=CiliumEgress,
    cni=lambda name, plan, cluster: Cilium(name, plan, cluster),
    tenant_range=lambda settings: None,
    sources=_sources,
    checks=_checks,
    warnings=_warnings,
    node_group_count=lambda settings: 1 + len(settings.availability_zones),
)
