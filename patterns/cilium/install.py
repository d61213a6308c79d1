"""Cilium as the cluster's CNI: the Helm release replacing aws-node and
kube-proxy, in ENI mode with the egress gateway, and its operator's IAM role."""

from __future__ import annotations

import json

import pulumi
import pulumi_kubernetes as k8s
import pulumi_aws as aws

from ..cluster import SYSTEM_LABEL, Cluster, Cni, Taint
from ..plan import Plan

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
NO_MANAGE_TAG = ("cilium.io/no_manage", "true")

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
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.register_outputs({"release": self.release.name})

