"""Cilium as the cluster's CNI: the Helm release replacing aws-node and
kube-proxy, in ENI mode with the egress gateway, and its operator's IAM role."""

from __future__ import annotations

import json
import re

import pulumi
import pulumi_aws as aws
import pulumi_kubernetes as k8s

from ..cluster import SYSTEM_LABEL, Cluster, Cni, Taint
from ..plan import Plan
from .iam import CILIUM_CLUSTER_TAG, operator_policy

# Chart 1.19.6, the newest 1.19 patch, for its egress-gateway fixes (release
# notes): 1.19.4 stops hashing endpoints onto a gateway whose node stopped
# matching (cilium/cilium#44705) and respects the egress interface in the FIB
# lookup (#45661); 1.19.5 fixes a corrupted namespaceSelector (#45926); 1.19.6
# handles nil egress-gateway events (#46476). 1.20.0/1.20.1 have an
# egress-gateway regression with dual-stack policies (cilium/cilium#48660), so
# stay on the 1.19 line.
CHART = "cilium"
CHART_VERSION = "1.19.6"
CHART_REPO = "https://helm.cilium.io/"
RELEASE_NAMESPACE = "kube-system"
OPERATOR_SERVICE_ACCOUNT = "cilium-operator"

# Cilium removes this taint once its agent runs on the node; NoExecute so no pod
# starts before the CNI (https://docs.cilium.io/en/stable/installation/taints/).
AGENT_NOT_READY = Taint("node.cilium.io/agent-not-ready", "true", "NO_EXECUTE")
NO_MANAGE_TAG = ("cilium.io/no_manage", "true")

# Cilium's own cluster name (ClusterInfo validation, pkg/clustermesh/types):
# at most 32 characters, lower-case alphanumerics and dashes, alphanumeric at
# both ends.
CLUSTER_NAME_RULE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,30}[a-z0-9])?$")


def cilium_cluster_name(eks_name: str) -> str:
    """The EKS cluster's name as Cilium accepts it. pulumi-eks names the
    cluster `<name>-eksCluster-<random>`, unique in the account and region,
    so lower-casing keeps it unique."""
    name = eks_name.lower()[:32].strip("-")
    if not CLUSTER_NAME_RULE.match(name):
        raise ValueError(f"cannot derive a Cilium cluster name from {eks_name!r}")
    return name


def helm_values(k8s_service_host: str, operator_role_arn: str, eks_cluster_name: str) -> dict:
    """Cilium on EKS in ENI mode without kube-proxy, with the egress gateway.
    https://docs.cilium.io/en/stable/installation/k8s-install-helm/ (EKS tab),
    .../network/kubernetes/kubeproxy-free/ and .../network/egress-gateway/."""
    return {
        # Without it every cluster is "default", and the operator's ENI garbage
        # collection (tags below) would delete detached ENIs of any other
        # Cilium cluster in the account and region.
        "cluster": {"name": cilium_cluster_name(eks_cluster_name)},
        "eni": {
            "enabled": True,
            "iamRole": operator_role_arn,  # IRSA for the operator, the only EC2 caller
            # The egress ENIs are ours: keep Cilium's IPAM off them.
            "nodeSpec": {"excludeInterfaceTags": ["=".join(NO_MANAGE_TAG)]},
            # Put on every ENI Cilium creates; detached ENIs carrying them are
            # garbage collected. The operator's IAM policy keys on the name.
            "gcTags": {"io.cilium/cilium-managed": "true", CILIUM_CLUSTER_TAG: eks_cluster_name},
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
        # BPF programs (masquerading, egress gateway SNAT) attach to these, and
        # the egress ENI must be one of them. systemd names every Ethernet NIC
        # en* (systemd.net-naming-scheme(7)): ens5 on most Nitro instances,
        # enp39s0 on 8th-generation ones; Cilium's own devices (lxc*, cilium_*)
        # never match.
        "devices": ["en+"],
        "identityAllocationMode": "crd",  # kvstore mode is incompatible with the egress gateway
        "ciliumEndpointSlice": {"enabled": False},  # incompatible with the egress gateway
        "operator": {"replicas": 2, "nodeSelector": {"kubernetes.io/os": "linux", **SYSTEM_LABEL}},
    }


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
            policy=pulumi.Output.all(cluster.vpc_id, cluster.name).apply(
                lambda args: json.dumps(operator_policy(plan.settings.region, args[0], args[1]))
            ),
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.operator_role = cluster.irsa_role(
            f"{name}-cilium-operator", RELEASE_NAMESPACE, OPERATOR_SERVICE_ACCOUNT,
            [self.operator_policy.arn], parent=self,
        )
        self.values = pulumi.Output.all(cluster.endpoint, self.operator_role.arn, cluster.name).apply(
            lambda args: helm_values(args[0].removeprefix("https://"), args[1], args[2])
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
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.register_outputs({"release": self.release.name})

