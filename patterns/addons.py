"""Cluster add-ons every pattern runs on the system nodes: metrics-server (the
resource metrics API every HorizontalPodAutoscaler reads, e.g. the istio egress
gateway's) and the Cluster Autoscaler, which gives the node groups' `max` a
meaning.

Why the Cluster Autoscaler rather than Karpenter: tenants and gateways are
managed node groups, each pinned to its own subnets and carrying its own taint;
the autoscaler scales exactly those groups between their min and max (EKS tags
their Auto Scaling groups for its auto-discovery), so the subnet a tenant's
node lands in, and so its source address, stays decided by the group. Karpenter
would launch its own instances outside the groups and need a NodePool per
tenant to keep that guarantee.

Both run on the system nodes (label egress/role=system), the only untainted
nodes, and tolerate nothing: tenant and gateway nodes stay theirs alone.
"""

from __future__ import annotations

import json
from typing import Any

import pulumi
import pulumi_aws as aws
import pulumi_kubernetes as k8s

from .cluster import SYSTEM_LABEL, Cluster, SystemNodes
from .plan import Plan
from .versions import CLUSTER_AUTOSCALER_CHART

AUTOSCALER_REPO = "https://kubernetes.github.io/autoscaler"
AUTOSCALER_NAMESPACE = "kube-system"
AUTOSCALER_SERVICE_ACCOUNT = "cluster-autoscaler"
# EKS tags the Auto Scaling group of every managed node group with these (EKS
# user guide, "Managed node groups": "k8s.io/cluster-autoscaler/enabled=true"
# and "k8s.io/cluster-autoscaler/<cluster-name>=owned"); the autoscaler
# discovers groups by them and its role may only resize groups that carry both.
DISCOVERY_ENABLED_TAG = "k8s.io/cluster-autoscaler/enabled"


def discovery_owner_tag(cluster_name: str) -> str:
    return f"k8s.io/cluster-autoscaler/{cluster_name}"


def autoscaler_policy(cluster_name: str) -> dict[str, Any]:
    """The Cluster Autoscaler AWS README's "Full Cluster Autoscaler Features
    Policy" (auto-discovery), with the resizing actions restricted by tag
    conditions as the README recommends: only this cluster's node groups.
    The Describe actions support no resource-level restriction."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "Discover",
                "Effect": "Allow",
                "Action": [
                    "autoscaling:DescribeAutoScalingGroups",
                    "autoscaling:DescribeAutoScalingInstances",
                    "autoscaling:DescribeLaunchConfigurations",
                    "autoscaling:DescribeScalingActivities",
                    "ec2:DescribeImages",
                    "ec2:DescribeInstanceTypes",
                    "ec2:DescribeLaunchTemplateVersions",
                    "ec2:GetInstanceTypesFromInstanceRequirements",
                    "eks:DescribeNodegroup",  # labels and taints of a managed group at zero nodes
                ],
                "Resource": "*",
            },
            {
                "Sid": "ResizeThisClustersGroups",
                "Effect": "Allow",
                "Action": ["autoscaling:SetDesiredCapacity", "autoscaling:TerminateInstanceInAutoScalingGroup"],
                "Resource": "*",
                "Condition": {
                    "StringEquals": {
                        f"aws:ResourceTag/{DISCOVERY_ENABLED_TAG}": "true",
                        f"aws:ResourceTag/{discovery_owner_tag(cluster_name)}": "owned",
                    }
                },
            },
        ],
    }


def autoscaler_values(cluster_name: str, region: str, role_arn: str, image_tag: str) -> dict[str, Any]:
    return {
        "cloudProvider": "aws",
        # With the region given, the autoscaler needs no instance metadata (the
        # nodes' IMDS hop limit is 1, out of reach of pods); credentials come
        # from IRSA through the STS interface endpoint.
        "awsRegion": region,
        "autoDiscovery": {
            "clusterName": cluster_name,
            "tags": [DISCOVERY_ENABLED_TAG, discovery_owner_tag(cluster_name)],
        },
        # The autoscaler's minor must match the cluster's (autoscaler README, "Releases").
        "image": {"tag": image_tag},
        "rbac": {
            "serviceAccount": {
                "create": True,
                "name": AUTOSCALER_SERVICE_ACCOUNT,
                "annotations": {"eks.amazonaws.com/role-arn": role_arn},
            }
        },
        "extraEnv": {"AWS_STS_REGIONAL_ENDPOINTS": "regional"},
        "extraArgs": {
            # Each group spans every AZ; groups alike (none today: tenants differ
            # by labels and taints) would be grown evenly rather than one at a time.
            "balance-similar-node-groups": True,
            "expander": "least-waste",
            # Tenant pods with emptyDir would otherwise pin their nodes forever.
            "skip-nodes-with-local-storage": False,
        },
        "replicaCount": 2,  # leader election: one active, one ready to take over
        "priorityClassName": "system-cluster-critical",
        "nodeSelector": dict(SYSTEM_LABEL),
        "tolerations": [],
        "podDisruptionBudget": {"maxUnavailable": 1},
    }


class ClusterAddons(pulumi.ComponentResource):
    """metrics-server (EKS add-on) and the Cluster Autoscaler (Helm, IRSA), both
    pinned to the cluster's Kubernetes minor and installed once the system nodes
    they run on exist (under cilium those wait for the CNI in turn)."""

    def __init__(self, name: str, plan: Plan, cluster: Cluster, system_nodes: SystemNodes,
                 opts: pulumi.ResourceOptions | None = None):
        super().__init__("egress:base:ClusterAddons", name, None, opts)
        settings = plan.settings
        # Both wait for running pods: an EKS add-on stays CREATING until its
        # Deployment is available, and the release awaits readiness.
        on_system_nodes = [system_nodes.node_group]

        # No placement configuration: every node but the system nodes is tainted
        # (tenant and gateway taints), so its pods can only land there.
        self.metrics_server = cluster.addon(
            f"{name}-metrics-server", "metrics-server", cluster.pins.metrics_server,
            parent=self, depends_on=on_system_nodes,
        )

        self.autoscaler_policy = aws.iam.Policy(
            f"{name}-cluster-autoscaler",
            description=f"Cluster Autoscaler: resize this cluster's managed node groups ({plan.stack})",
            policy=cluster.name.apply(lambda cluster_name: json.dumps(autoscaler_policy(cluster_name))),
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.autoscaler_role = cluster.irsa_role(
            f"{name}-cluster-autoscaler", AUTOSCALER_NAMESPACE, AUTOSCALER_SERVICE_ACCOUNT,
            [self.autoscaler_policy.arn], parent=self,
        )
        image_tag = cluster.pins.cluster_autoscaler
        self.autoscaler = k8s.helm.v3.Release(
            f"{name}-cluster-autoscaler",
            name="cluster-autoscaler",
            chart="cluster-autoscaler",
            version=CLUSTER_AUTOSCALER_CHART,
            repository_opts=k8s.helm.v3.RepositoryOptsArgs(repo=AUTOSCALER_REPO),
            namespace=AUTOSCALER_NAMESPACE,
            values=pulumi.Output.all(cluster.name, self.autoscaler_role.arn).apply(
                lambda args: autoscaler_values(args[0], settings.region, args[1], image_tag)
            ),
            opts=pulumi.ResourceOptions(parent=self, depends_on=on_system_nodes),
        )
        self.register_outputs({
            "metrics_server": self.metrics_server.addon_version,
            "autoscaler_role_arn": self.autoscaler_role.arn,
        })
