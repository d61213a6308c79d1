"""The Kubernetes minors this program deploys, and what is pinned to each.

One row per minor EKS still supports (standard or extended support). The
supported window of egress:kubernetesVersion is this table's keys; the EKS
add-ons and the Cluster Autoscaler image follow the row of the cluster's minor,
so raising the version upgrades them in the same `pulumi up` (an unpinned
`addon_version` would keep the version EKS picked at creation, and kube-proxy
would drift out of its skew with the control plane).

Sources, read 2026-11-30:
- Support window: EKS user guide, "Understand the Kubernetes version lifecycle
  on EKS" (14 months standard + 12 months extended support per minor), dates as
  listed at endoflife.date/amazon-eks. 1.31 left extended support on 2026-11-26;
  extended support ends for 1.32 on 2027-03-23, 1.33 on 2027-07-29, 1.34 on
  2027-12-02, 1.35 on 2028-03-27 (drop a row when its minor leaves it).
- kube-proxy, CoreDNS: EKS user guide, "Manage kube-proxy in Amazon EKS
  clusters" and "Manage CoreDNS for DNS in Amazon EKS clusters", tables of the
  latest Amazon EKS add-on version per Kubernetes version (newest rendering of
  the pages available here lists 1.31-1.36).
- vpc-cni: the EKS user guide ("Assign IPs to Pods with the Amazon VPC CNI")
  lists one version for every supported minor; the newest rendering available
  here stops at 1.33, so v1.22.3-eksbuild.1 (listed by
  `aws eks describe-addon-versions` for 1.33 in July 2026) could NOT be
  confirmed for 1.34-1.36 from the docs. Check before the first deploy of a
  new minor: `aws eks describe-addon-versions --addon-name vpc-cni
  --kubernetes-version <minor>`.
- metrics-server (EKS community add-on): one version for every minor;
  v0.8.0-eksbuild.2 is confirmed to exist (public configurations pin it), its
  per-minor compatibility could not be confirmed from the docs; same check.
- Cluster Autoscaler: kubernetes/autoscaler release tags (its minor must match
  the cluster's, cluster-autoscaler/README.md "Releases"): newest patch per
  minor as of 2026-07-22; chart cluster-autoscaler-chart-9.59.0 (2026-07-21).
EKS refuses an add-on version it does not offer for the cluster's minor
(InvalidParameterException) before changing anything, so a stale row fails
the update early and safely; refresh the table when adding a minor.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MinorPins:
    vpc_cni: str
    kube_proxy: str
    coredns: str
    metrics_server: str
    cluster_autoscaler: str  # image tag of registry.k8s.io/autoscaling/cluster-autoscaler


_VPC_CNI = "v1.22.3-eksbuild.1"
_METRICS_SERVER = "v0.8.0-eksbuild.2"

KUBERNETES_MINORS: dict[str, MinorPins] = {
    "1.32": MinorPins(_VPC_CNI, "v1.32.13-eksbuild.16", "v1.11.4-eksbuild.40", _METRICS_SERVER, "v1.32.7"),
    "1.33": MinorPins(_VPC_CNI, "v1.33.10-eksbuild.13", "v1.12.4-eksbuild.18", _METRICS_SERVER, "v1.33.6"),
    "1.34": MinorPins(_VPC_CNI, "v1.34.6-eksbuild.13", "v1.13.2-eksbuild.11", _METRICS_SERVER, "v1.34.5"),
    "1.35": MinorPins(_VPC_CNI, "v1.35.3-eksbuild.13", "v1.14.3-eksbuild.3", _METRICS_SERVER, "v1.35.2"),
    "1.36": MinorPins(_VPC_CNI, "v1.36.0-eksbuild.14", "v1.14.3-eksbuild.3", _METRICS_SERVER, "v1.36.1"),
}
SUPPORTED_MINORS = tuple(KUBERNETES_MINORS)

CLUSTER_AUTOSCALER_CHART = "9.59.0"
