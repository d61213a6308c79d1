"""Tenant guardrails, the same for every pattern: the upstream firewall trusts
the cluster's scheduling and labels, so wrong ones are refused at admission.

Kyverno (pinned Helm chart, highly available) enforces ClusterPolicies that are
generated from the pattern and the tenants by the pure `cluster_policies`;
each tenant team's IAM role (`iamRoleArn`) gets an EKS access entry whose
Kubernetes group is bound to an edit role in the tenant namespace only
(patterns.tenancy.TenantNamespace).

Kyverno 1.19 still serves kyverno.io/v1 ClusterPolicy (deprecated since 1.17,
with an admission warning on every write); `failureAction` is set per rule, as
the spec-level `validationFailureAction` is deprecated
(https://kyverno.io/docs/policy-types/cluster-policy/validate/). Move to
ValidatingPolicy/MutatingPolicy before upgrading to Kyverno 1.20.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import pulumi
import pulumi_aws as aws
import pulumi_kubernetes as k8s

from .cluster import SYSTEM_LABEL, Cluster, SystemNodes
from .plan import Plan
from .settings import Tenant
from .tenancy import GATEWAY_KEY, TENANT_KEY, tenant_group

KYVERNO_REPO = "https://kyverno.github.io/kyverno/"
KYVERNO_CHART = "kyverno"
KYVERNO_VERSION = "3.9.0"  # app v1.19.0
KYVERNO_NAMESPACE = "kyverno"
# Kyverno's webhooks never see these (kube-system by the selector below, its own
# namespace by `config.excludeKyvernoNamespace`); cluster add-ons run there.
UNGUARDED_NAMESPACES = ("kube-system", KYVERNO_NAMESPACE)

# Patterns whose tenants run on their own tainted nodes, and the one that
# selects a tenant's pods by label.
PLACEMENT_PATTERNS = ("subnet-cidr", "private-nat")
LABEL_PATTERNS = ("cilium",)
SIDECAR_PATTERNS = ("istio",)
ISTIO_INJECTION = "istio-injection"
SIDECAR_INJECT = "sidecar.istio.io/inject"
# Pod annotations that let traffic leave around the sidecar (and so around the
# egress gateway): https://istio.io/latest/docs/reference/config/annotations/
SIDECAR_BYPASS_ANNOTATIONS = (
    "sidecar.istio.io/interceptionMode",
    "traffic.sidecar.istio.io/excludeInterfaces",
    "traffic.sidecar.istio.io/excludeOutboundIPRanges",
    "traffic.sidecar.istio.io/excludeOutboundPorts",
    "traffic.sidecar.istio.io/includeOutboundIPRanges",
    "traffic.sidecar.istio.io/includeOutboundPorts",
)
POD_SECURITY_ENFORCE = "pod-security.kubernetes.io/enforce"
AUTOGEN = "pod-policies.kyverno.io/autogen-controllers"

# Policy names (cluster-scoped objects; stable across tenants being added).
TENANT_DEFAULTS = "egress-tenant-defaults"
TENANT_ISOLATION = "egress-tenant-isolation"
TENANT_NAMESPACES = "egress-tenant-namespaces"
GATEWAY_NODES = "egress-gateway-nodes"
NO_NODE_NAME = "egress-no-node-name"
SIDECAR = "egress-istio-sidecar"

_WRITES = ["CREATE", "UPDATE"]


# --- the policies, as data ----------------------------------------------------


def _pods(namespaces: Sequence[str] | None = None, operations: Sequence[str] = _WRITES) -> dict[str, Any]:
    resources: dict[str, Any] = {"kinds": ["Pod"], "operations": list(operations)}
    if namespaces is not None:
        resources["namespaces"] = list(namespaces)
    return {"any": [{"resources": resources}]}


def _validate(message: str, **check: Any) -> dict[str, Any]:
    return {"failureAction": "Enforce", "message": message, **check}


def _deny_if(*conditions: tuple[str, str, Any]) -> dict[str, Any]:
    return {"conditions": {"any": [{"key": k, "operator": op, "value": v} for k, op, v in conditions]}}


def _count(path: str) -> str:
    """A JMESPath count of the matches of `path`, 0 when the field is absent."""
    return f"{{{{ length({path} || `[]`) }}}}"


def _value(path: str) -> str:
    return f"{{{{ {path} || '' }}}}"


def _policy(name: str, description: str, rules: list[dict], *, background: bool = True,
            autogen: bool = True) -> dict[str, Any]:
    annotations = {
        "policies.kyverno.io/title": name,
        "policies.kyverno.io/category": "Egress tenancy",
        "policies.kyverno.io/description": description,
    }
    if not autogen:
        # Mutations and must-have checks apply to Pods only: every Pod a
        # controller creates is admitted itself, and patching controllers'
        # templates would drift from what their owners deploy
        # (https://kyverno.io/docs/policy-types/cluster-policy/autogen/).
        annotations[AUTOGEN] = "none"
    return {
        "apiVersion": "kyverno.io/v1",
        "kind": "ClusterPolicy",
        "metadata": {"name": name, "annotations": annotations},
        "spec": {
            "background": background,
            # Fail closed: if Kyverno cannot answer, the request is refused.
            "webhookConfiguration": {"failurePolicy": "Fail", "timeoutSeconds": 10},
            "rules": rules,
        },
    }


_SELECTOR = f'request.object.spec.nodeSelector."{TENANT_KEY}"'
_LABEL = f'request.object.metadata.labels."{TENANT_KEY}"'
_TOLERATIONS = "request.object.spec.tolerations"


def _placement_rules(tenant: Tenant) -> tuple[list[dict], list[dict]]:
    """(defaults, isolation) rules keeping one tenant's pods on its own nodes."""
    ns = tenant.k8s_namespace
    toleration = {"key": TENANT_KEY, "operator": "Equal", "value": tenant.name, "effect": "NoSchedule"}
    defaults = [
        {
            "name": f"{tenant.name}-node-selector",
            "match": _pods([ns], ["CREATE"]),
            # `+(key)` adds only when absent: a foreign value is left for the
            # isolation policy to refuse, not silently overwritten.
            "mutate": {"patchStrategicMerge": {"spec": {"nodeSelector": {f"+({TENANT_KEY})": tenant.name}}}},
        },
        {
            "name": f"{tenant.name}-toleration",
            "match": _pods([ns], ["CREATE"]),
            "preconditions": {
                "all": [{"key": _count(f"{_TOLERATIONS}[?key=='{TENANT_KEY}']"), "operator": "Equals", "value": 0}]
            },
            # Appended with a JSON patch: a strategic merge would replace the
            # toleration list, which has no merge key
            # (https://kyverno.io/policies/other/add-tolerations/add-tolerations/).
            "mutate": {"patchesJson6902": json.dumps([{"op": "add", "path": "/spec/tolerations/-", "value": toleration}])},
        },
        {
            "name": f"{tenant.name}-on-own-nodes",
            "match": _pods([ns]),
            "validate": _validate(
                f"Pods in namespace {ns} run on the nodes of tenant {tenant.name}: set spec.nodeSelector "
                f"{TENANT_KEY}: {tenant.name} (or leave it out; it is added on creation).",
                pattern={"spec": {"nodeSelector": {TENANT_KEY: tenant.name}}},
            ),
        },
    ]
    isolation = [
        {
            "name": f"{tenant.name}-no-foreign-nodes",
            "match": _pods([ns]),
            "validate": _validate(
                f"Pods in namespace {ns} may only select and tolerate the nodes of tenant {tenant.name}: use "
                f"nodeSelector {TENANT_KEY}: {tenant.name} and the toleration {TENANT_KEY}={tenant.name}:NoSchedule "
                "(operator Equal), or leave both out; they are added on creation.",
                deny=_deny_if(
                    (_value(_SELECTOR), "AnyNotIn", ["", tenant.name]),
                    (
                        _count(f"{_TOLERATIONS}[?key=='{TENANT_KEY}' && (operator=='Exists' || value!='{tenant.name}')]"),
                        "GreaterThan",
                        0,
                    ),
                ),
            ),
        }
    ]
    return defaults, isolation


def _label_rules(tenant: Tenant) -> tuple[list[dict], list[dict]]:
    """(defaults, isolation) rules: a pod's tenant label names its namespace's tenant."""
    ns = tenant.k8s_namespace
    defaults = [
        {
            "name": f"{tenant.name}-add-label",
            "match": _pods([ns], ["CREATE"]),
            "mutate": {"patchStrategicMerge": {"metadata": {"labels": {f"+({TENANT_KEY})": tenant.name}}}},
        },
        {
            "name": f"{tenant.name}-require-label",
            "match": _pods([ns]),
            "validate": _validate(
                f"Pods in namespace {ns} carry the label {TENANT_KEY}: {tenant.name}, which routes them "
                f"through the egress IP of tenant {tenant.name}: set it to {tenant.name} (or leave it out; it is "
                "added on creation).",
                pattern={"metadata": {"labels": {TENANT_KEY: tenant.name}}},
            ),
        },
    ]
    isolation = [
        {
            "name": f"{tenant.name}-own-label",
            "match": _pods([ns]),
            "validate": _validate(
                f"Pods in namespace {ns} may only carry the label {TENANT_KEY}: {tenant.name}; "
                "change the label's value or remove it.",
                deny=_deny_if((_value(_LABEL), "AnyNotIn", ["", tenant.name])),
            ),
        }
    ]
    return defaults, isolation


def _outside_tenants_rule(pattern: str, namespaces: list[str]) -> dict:
    where = ", ".join(namespaces)
    if pattern in LABEL_PATTERNS:
        return {
            "name": "tenant-label-only-in-tenant-namespaces",
            "match": _pods(),
            "exclude": {"any": [{"resources": {"namespaces": namespaces}}]},
            "validate": _validate(
                f"Only pods in tenant namespaces ({where}) may carry the label {TENANT_KEY}; remove it, "
                "or deploy the pod into its tenant's namespace.",
                deny=_deny_if((_value(_LABEL), "NotEquals", "")),
            ),
        }
    return {
        "name": "tenant-nodes-only-for-tenants",
        "match": _pods(),
        "exclude": {"any": [{"resources": {"namespaces": namespaces}}]},
        "validate": _validate(
            f"Only pods in tenant namespaces ({where}) may tolerate or select tenant nodes; remove the "
            f"{TENANT_KEY} toleration and nodeSelector, or deploy the pod into its tenant's namespace.",
            deny=_deny_if(
                (_count(f"{_TOLERATIONS}[?key=='{TENANT_KEY}']"), "GreaterThan", 0),
                (_value(_SELECTOR), "NotEquals", ""),
            ),
        ),
    }


def _namespace_rules(pattern: str, tenants: Sequence[Tenant]) -> list[dict]:
    rules = []
    for tenant in tenants:
        labels = {TENANT_KEY: tenant.name, POD_SECURITY_ENFORCE: "baseline | restricted"}
        keep = f"{TENANT_KEY}: {tenant.name} and {POD_SECURITY_ENFORCE}: baseline or restricted"
        if pattern in SIDECAR_PATTERNS:
            labels[ISTIO_INJECTION] = "enabled"
            keep += f" and {ISTIO_INJECTION}: enabled"
        rules.append(
            {
                "name": f"{tenant.name}-namespace-labels",
                "match": {"any": [{"resources": {"kinds": ["Namespace"], "names": [tenant.k8s_namespace],
                                                 "operations": _WRITES}}]},
                "validate": _validate(
                    f"Namespace {tenant.k8s_namespace} belongs to tenant {tenant.name} and keeps the labels "
                    f"{keep}; restore them (they are set by the egress stack).",
                    pattern={"metadata": {"labels": labels}},
                ),
            }
        )
    return rules


def _sidecar_rules(namespaces: list[str]) -> list[dict]:
    return [
        {
            "name": "no-sidecar-opt-out",
            "match": _pods(namespaces),
            "validate": _validate(
                f"Pods in tenant namespaces get the Istio sidecar, which sends on-prem traffic through the "
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
            "match": _pods(namespaces),
            "validate": _validate(
                "Pods in tenant namespaces may not narrow the sidecar's traffic capture (it would let traffic "
                f"bypass the egress gateway): remove the annotations {', '.join(SIDECAR_BYPASS_ANNOTATIONS)}.",
                pattern={"metadata": {"=(annotations)": {f"X({a})": "null" for a in SIDECAR_BYPASS_ANNOTATIONS}}},
            ),
        },
    ]


def cluster_policies(pattern: str, tenants: Sequence[Tenant],
                     gateway_namespaces: Sequence[str] = ()) -> list[dict[str, Any]]:
    """The ClusterPolicy manifests for a pattern and its tenants. Pure."""
    namespaces = [t.k8s_namespace for t in tenants]
    policies = []
    if pattern in PLACEMENT_PATTERNS or pattern in LABEL_PATTERNS:
        make = _placement_rules if pattern in PLACEMENT_PATTERNS else _label_rules
        defaults, isolation = [], []
        for tenant in tenants:
            tenant_defaults, tenant_isolation = make(tenant)
            defaults += tenant_defaults
            isolation += tenant_isolation
        isolation.append(_outside_tenants_rule(pattern, namespaces))
        policies += [
            _policy(TENANT_DEFAULTS, "Gives each tenant's pods their tenant's placement or label.",
                    defaults, autogen=False),
            _policy(TENANT_ISOLATION, "Refuses pods that claim another tenant's egress identity.", isolation),
        ]
    if pattern in SIDECAR_PATTERNS:
        policies.append(_policy(SIDECAR, "Tenant pods keep the Istio sidecar and its full traffic capture.",
                                _sidecar_rules(namespaces)))
    policies.append(
        _policy(TENANT_NAMESPACES, "Tenant namespaces keep their tenant, Pod Security and mesh labels.",
                _namespace_rules(pattern, tenants))
    )
    gateways = list(gateway_namespaces)
    gateway_rule: dict[str, Any] = {
        "name": "gateway-taint-only-for-gateways",
        "match": _pods(),
        "validate": _validate(
            f"Only egress gateway pods (namespaces: {', '.join(gateways) or 'none in this pattern'}) may run on "
            f"egress gateway nodes: remove the {GATEWAY_KEY} toleration, and any toleration with operator "
            "Exists and no key (it tolerates every taint).",
            deny=_deny_if(
                (_count(f"{_TOLERATIONS}[?key=='{GATEWAY_KEY}']"), "GreaterThan", 0),
                (_count(f"{_TOLERATIONS}[?!key && operator=='Exists']"), "GreaterThan", 0),
            ),
        ),
    }
    if gateways:
        gateway_rule["exclude"] = {"any": [{"resources": {"namespaces": gateways}}]}
    policies.append(_policy(GATEWAY_NODES, "Only egress gateway pods run on egress gateway nodes.", [gateway_rule]))
    policies.append(
        _policy(
            NO_NODE_NAME,
            "Pods are placed by the scheduler, which honours the tenant and gateway taints.",
            [
                {
                    "name": "no-node-name",
                    "match": _pods(operations=["CREATE"]),
                    "validate": _validate(
                        "spec.nodeName bypasses the scheduler and so the taints that keep tenants and egress "
                        "gateways on their own nodes: remove it (use a nodeSelector).",
                        deny=_deny_if((_value("request.object.spec.nodeName"), "NotEquals", "")),
                    ),
                }
            ],
            # Every running Pod has a nodeName (set when it is bound), so this is
            # an admission-only check, not one for background scans.
            background=False,
        )
    )
    return policies


def kyverno_values() -> dict[str, Any]:
    """Helm values: every controller replicated across zones with a PDB, on the
    system nodes, and kube-system left alone. Sizes follow the Kyverno HA guide
    (https://kyverno.io/docs/guides/high-availability/)."""

    def ha(component: str, replicas: int) -> dict[str, Any]:
        return {
            "replicas": replicas,
            "podDisruptionBudget": {"enabled": True, "minAvailable": 1},
            "topologySpreadConstraints": [
                {
                    "maxSkew": 1,
                    "topologyKey": "topology.kubernetes.io/zone",
                    "whenUnsatisfiable": "ScheduleAnyway",
                    "labelSelector": {"matchLabels": {"app.kubernetes.io/component": component}},
                }
            ],
        }

    return {
        "global": {"nodeSelector": dict(SYSTEM_LABEL)},
        "crds": {"install": True},
        # The admission controller serves every webhook call: at least three.
        "admissionController": ha("admission-controller", 3),
        "backgroundController": ha("background-controller", 2),
        "cleanupController": ha("cleanup-controller", 2),
        "reportsController": ha("reports-controller", 2),
        "config": {
            "excludeKyvernoNamespace": True,
            # kube-system stays outside the webhooks, or the VPC CNI and CoreDNS
            # cannot start while Kyverno itself is down (EKS platform notes,
            # https://kyverno.io/docs/installation/platform-notes/).
            "webhooks": {
                "namespaceSelector": {
                    "matchExpressions": [
                        {"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": ["kube-system"]}
                    ]
                }
            },
        },
    }


# --- the component --------------------------------------------------------------


class Guardrails(pulumi.ComponentResource):
    """Kyverno with the stack's ClusterPolicies, and the tenants' EKS access entries."""

    def __init__(self, name: str, plan: Plan, cluster: Cluster, system_nodes: SystemNodes,
                 opts: pulumi.ResourceOptions | None = None):
        super().__init__("egress:guardrails:Guardrails", name, None, opts)
        settings = plan.settings
        in_cluster = pulumi.ResourceOptions(parent=self)

        self.namespace = k8s.core.v1.Namespace(
            f"{name}-kyverno",
            metadata={
                "name": KYVERNO_NAMESPACE,
                "labels": {
                    POD_SECURITY_ENFORCE: "baseline",
                    "pod-security.kubernetes.io/warn": "restricted",
                    "pod-security.kubernetes.io/audit": "restricted",
                },
            },
            opts=in_cluster,
        )
        self.release = k8s.helm.v3.Release(
            f"{name}-kyverno",
            name="kyverno",  # fixed, so the chart's object names are predictable
            chart=KYVERNO_CHART,
            version=KYVERNO_VERSION,
            repository_opts=k8s.helm.v3.RepositoryOptsArgs(repo=KYVERNO_REPO),
            namespace=self.namespace.metadata.name,
            values=kyverno_values(),
            # Waits until every controller is ready (and the CRD migration hook
            # has run), so policies are only applied to a serving Kyverno.
            skip_await=False,
            wait_for_jobs=True,
            timeout=900,
            cleanup_on_fail=True,
            opts=pulumi.ResourceOptions(
                parent=self,
                # The release waits for ready pods, which need the system nodes;
                # without them it would time out while the node group is created.
                depends_on=[system_nodes.node_group],
            ),
        )
        self.manifests = cluster_policies(settings.pattern, settings.tenants, plan.spec.gateway_namespaces)
        self.policies = {
            manifest["metadata"]["name"]: k8s.apiextensions.CustomResource(
                f"{name}-{manifest['metadata']['name'].removeprefix('egress-')}",
                api_version=manifest["apiVersion"],
                kind=manifest["kind"],
                metadata=manifest["metadata"],
                spec=manifest["spec"],
                # The ClusterPolicy CRD and the webhook come with the release.
                opts=pulumi.ResourceOptions(parent=self, depends_on=[self.release]),
            )
            for manifest in self.manifests
        }
        self.access_entries = {
            tenant.name: aws.eks.AccessEntry(
                f"{name}-{tenant.name}-access",
                cluster_name=cluster.name,
                principal_arn=tenant.iam_role_arn,
                type="STANDARD",
                # No EKS access policy: the group's rights come from the tenant
                # namespace's edit Role alone (AmazonEKSEditPolicy would let the
                # tenant rewrite its NetworkPolicies).
                kubernetes_groups=[tenant_group(tenant)],
                tags={"egress/stack": plan.stack, TENANT_KEY: tenant.name},
                opts=pulumi.ResourceOptions(parent=self),
            )
            for tenant in settings.tenants
            if tenant.iam_role_arn
        }
        self.register_outputs(
            {"policies": list(self.policies), "access_entries": list(self.access_entries)}
        )
