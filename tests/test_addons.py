"""Add-ons follow the Kubernetes minor; metrics-server and the Cluster Autoscaler
run on the system nodes, scale only this cluster's groups and never land on
tenant or gateway nodes."""

from __future__ import annotations

import json
import re

import pytest

from conftest import ADDON, NODE_GROUP, RELEASE, config_with, planned
from patterns import offline
from patterns.registry import PATTERNS
from patterns.versions import CLUSTER_AUTOSCALER_CHART, KUBERNETES_MINORS, SUPPORTED_MINORS

ROLE = "aws:iam/role:Role"
CLUSTER_NAME = "egress-eksCluster"  # the mock's name of the EKS cluster
OIDC = "oidc.eks.eu-west-1.amazonaws.com/id/EGRESS"


def addon_versions(graph) -> dict[str, str]:
    return {r.inputs["addonName"]: r.inputs["addonVersion"] for r in graph.by_type(ADDON)}


# --- versions follow the Kubernetes minor --------------------------------------------


@pytest.mark.parametrize("minor", SUPPORTED_MINORS)
def test_each_row_keeps_the_version_skew(minor):
    pins = KUBERNETES_MINORS[minor]
    # kube-proxy and the autoscaler are built per Kubernetes minor: same minor as the cluster.
    assert pins.kube_proxy.startswith(f"v{minor}.") and re.fullmatch(r"v[\d.]+-eksbuild\.\d+", pins.kube_proxy)
    assert re.fullmatch(rf"v{re.escape(minor)}\.\d+", pins.cluster_autoscaler)
    for version in (pins.vpc_cni, pins.coredns, pins.metrics_server):
        assert re.fullmatch(r"v\d+\.\d+\.\d+-eksbuild\.\d+", version), version


def test_supported_window_is_contiguous_and_includes_the_default():
    minors = [int(m.split(".")[1]) for m in SUPPORTED_MINORS]
    assert minors == list(range(minors[0], minors[0] + len(minors)))
    assert planned("subnet-cidr").plan.settings.kubernetes_version in SUPPORTED_MINORS


@pytest.mark.parametrize("stack", sorted(PATTERNS))
def test_every_eks_addon_is_pinned_to_the_cluster_minor(stack):
    graph = planned(stack)
    pins = KUBERNETES_MINORS[graph.plan.settings.kubernetes_version]
    expected = {"coredns": pins.coredns, "metrics-server": pins.metrics_server}
    if stack != "cilium":  # Cilium replaces the VPC CNI and kube-proxy
        expected |= {"vpc-cni": pins.vpc_cni, "kube-proxy": pins.kube_proxy}
    assert addon_versions(graph) == expected


def test_raising_the_kubernetes_version_upgrades_every_addon():
    graph = offline.run("older", config_with(kubernetesVersion="1.33"))
    pins = KUBERNETES_MINORS["1.33"]
    assert addon_versions(graph) == {
        "vpc-cni": pins.vpc_cni, "kube-proxy": "v1.33.10-eksbuild.13", "coredns": pins.coredns,
        "metrics-server": pins.metrics_server,
    }
    assert graph.get("eks:index:Cluster", "egress").inputs["version"] == "1.33"
    assert {g.inputs["version"] for g in graph.by_type(NODE_GROUP)} == {"1.33"}
    values = graph.get(RELEASE, "egress-cluster-autoscaler").inputs["values"]
    assert values["image"]["tag"] == "v1.33.6"


def test_addons_update_after_the_control_plane_and_nodes_after_the_cni():
    # One `pulumi up` after raising the version: control plane, then vpc-cni and
    # kube-proxy (they read the cluster's name), then the node groups (they wait
    # for the CNI), then CoreDNS, metrics-server and the autoscaler (they wait
    # for the system nodes).
    graph = planned("subnet-cidr")
    cluster = graph.get("eks:index:Cluster", "egress").urn
    system = graph.get(NODE_GROUP, "egress-system").urn
    for name in ("egress-vpc-cni", "egress-kube-proxy"):
        assert cluster in graph.get(ADDON, name).dependencies
        assert graph.get(ADDON, name).urn in graph.get(NODE_GROUP, "egress-system").dependencies
    for name in ("egress-coredns", "egress-metrics-server"):
        assert system in graph.get(ADDON, name).dependencies
    assert system in graph.get(RELEASE, "egress-cluster-autoscaler").dependencies


# --- metrics-server and the Cluster Autoscaler -----------------------------------------


@pytest.fixture(scope="module")
def autoscaler():
    return planned("istio").get(RELEASE, "egress-cluster-autoscaler")


def test_autoscaler_chart_is_pinned_and_its_image_follows_the_minor(autoscaler):
    inputs = autoscaler.inputs
    assert (inputs["chart"], inputs["version"], inputs["namespace"]) == (
        "cluster-autoscaler", CLUSTER_AUTOSCALER_CHART, "kube-system")
    assert inputs["repositoryOpts"]["repo"] == "https://kubernetes.github.io/autoscaler"
    assert inputs["values"]["image"]["tag"] == KUBERNETES_MINORS["1.35"].cluster_autoscaler


def test_autoscaler_runs_on_system_nodes_and_tolerates_no_tenant_or_gateway_taint(autoscaler):
    values = autoscaler.inputs["values"]
    assert values["nodeSelector"] == {"egress/role": "system"}
    assert values["tolerations"] == []
    system = planned("istio").get(NODE_GROUP, "egress-system")
    assert system.inputs["labels"] == {"egress/role": "system"} and not system.inputs.get("taints")


@pytest.mark.parametrize("stack", sorted(PATTERNS))
def test_only_system_nodes_are_untainted(stack):
    # metrics-server (an EKS add-on without placement options) and every other
    # add-on without tolerations can only land on the system nodes.
    for group in planned(stack).by_type(NODE_GROUP):
        no_schedule = [t for t in group.inputs.get("taints", []) if t["effect"] == "NO_SCHEDULE"]
        assert bool(no_schedule) == (group.name != "egress-system"), group.name


def test_autoscaler_discovers_this_clusters_groups_by_the_tags_eks_sets(autoscaler):
    values = autoscaler.inputs["values"]
    assert values["cloudProvider"] == "aws" and values["awsRegion"] == "eu-west-1"
    assert values["autoDiscovery"] == {
        "clusterName": CLUSTER_NAME,
        "tags": ["k8s.io/cluster-autoscaler/enabled", f"k8s.io/cluster-autoscaler/{CLUSTER_NAME}"],
    }
    assert values["extraArgs"]["balance-similar-node-groups"] is True


def test_autoscaler_irsa_role_trusts_only_its_service_account(autoscaler):
    graph = planned("istio")
    values = autoscaler.inputs["values"]
    role = graph.get(ROLE, "egress-cluster-autoscaler")
    assert values["rbac"]["serviceAccount"]["name"] == "cluster-autoscaler"
    assert values["rbac"]["serviceAccount"]["annotations"]["eks.amazonaws.com/role-arn"] == (
        f"arn:aws:iam::{offline.ACCOUNT}:role/egress-cluster-autoscaler")
    trust = json.loads(role.inputs["assumeRolePolicy"])["Statement"][0]
    assert trust["Condition"]["StringEquals"] == {
        f"{OIDC}:sub": "system:serviceaccount:kube-system:cluster-autoscaler",
        f"{OIDC}:aud": "sts.amazonaws.com",
    }


def test_autoscaler_may_resize_only_groups_tagged_for_this_cluster():
    graph = planned("istio")
    policy = json.loads(graph.get("aws:iam/policy:Policy", "egress-cluster-autoscaler").inputs["policy"])
    discover, resize = policy["Statement"]
    assert not any(a.startswith(("autoscaling:Set", "autoscaling:Terminate")) for a in discover["Action"])
    assert sorted(resize["Action"]) == ["autoscaling:SetDesiredCapacity", "autoscaling:TerminateInstanceInAutoScalingGroup"]
    assert resize["Condition"] == {"StringEquals": {
        "aws:ResourceTag/k8s.io/cluster-autoscaler/enabled": "true",
        f"aws:ResourceTag/k8s.io/cluster-autoscaler/{CLUSTER_NAME}": "owned",
    }}
    attachments = [r for r in graph.by_type("aws:iam/rolePolicyAttachment:RolePolicyAttachment")
                   if r.name.startswith("egress-cluster-autoscaler")]
    assert [a.inputs["policyArn"] for a in attachments] == [
        f"arn:aws:iam:eu-west-1:{offline.ACCOUNT}:egress-cluster-autoscaler"]  # the policy above, nothing more


def test_groups_that_must_not_scale_are_fixed_and_the_others_never_reach_zero():
    # Cilium's gateway: one node per AZ holding that AZ's egress ENI (min = max),
    # so the autoscaler leaves it alone. Every other group keeps at least two
    # nodes, so the autoscaler always has a live node to read labels and taints
    # from (scale-from-zero hints are never needed; for a managed group at zero
    # it would read them through eks:DescribeNodegroup anyway).
    for stack in PATTERNS:
        for group in planned(stack).by_type(NODE_GROUP):
            scaling = group.inputs["scalingConfig"]
            if stack == "cilium" and group.name.startswith("egress-gateway"):
                assert scaling["minSize"] == scaling["maxSize"] == 1, group.name
            else:
                assert scaling["minSize"] >= 2 and scaling["maxSize"] >= scaling["minSize"], group.name


def test_autoscaler_reaches_every_api_it_calls_through_vpc_endpoints():
    # Auto Scaling (resize), EC2 (instance types), EKS (DescribeNodegroup) and
    # STS (IRSA) stay on the AWS network; the autoscaler README warns that a
    # private cluster without them can crash the autoscaler at start-up.
    services = {r.inputs["serviceName"].removeprefix("com.amazonaws.eu-west-1.")
                for r in planned("subnet-cidr").by_type("aws:ec2/vpcEndpoint:VpcEndpoint")
                if r.inputs["vpcEndpointType"] == "Interface"}
    assert {"autoscaling", "ec2", "eks", "sts"} <= services
