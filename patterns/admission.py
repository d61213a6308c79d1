"""Admission rules as data: the Kyverno vocabulary every guardrail is written in,
and the contract by which a pattern contributes the rules of its own egress
identity (`PatternSpec.admission`).

Pure: plain dicts, no Pulumi objects. Kyverno 1.19 still serves kyverno.io/v1
ClusterPolicy (deprecated since 1.17, with an admission warning on every
write); `failureAction` is set per rule, as the spec-level
`validationFailureAction` is deprecated
(https://kyverno.io/docs/policy-types/cluster-policy/validate/). Move to
ValidatingPolicy/MutatingPolicy before upgrading to Kyverno 1.20.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from .settings import Tenant

WRITES = ("CREATE", "UPDATE")
KYVERNO_NAMESPACE = "kyverno"
# Namespaces no tenant may be given, whatever the pattern: Kubernetes' own
# ("kube-" is its prefix) and Kyverno's, which its webhooks never check
# (`config.excludeKyvernoNamespace`). Each pattern adds the namespaces it
# creates (PatternSpec.own_namespaces).
PLATFORM_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease", KYVERNO_NAMESPACE)
KUBERNETES_PREFIX = "kube-"
AUTOGEN = "pod-policies.kyverno.io/autogen-controllers"
TOLERATIONS = "request.object.spec.tolerations"
# Pulumi reports a ClusterPolicy created only once this condition holds (the
# `pulumi.com/waitFor` annotation of pulumi-kubernetes 4.18+, taking precedence
# over the default await since 4.18.4, pulumi/pulumi-kubernetes#3329); Kyverno
# sets Ready once its webhook configuration covers the policy's resources
# (kyverno/kyverno#11145, #11436), i.e. once the policy is in force.
WAIT_FOR_READY = {"pulumi.com/waitFor": "condition=Ready"}


def match(kinds: Sequence[str], namespaces: Sequence[str] | None = None,
          operations: Sequence[str] = WRITES, names: Sequence[str] | None = None) -> dict[str, Any]:
    resources: dict[str, Any] = {"kinds": list(kinds), "operations": list(operations)}
    if namespaces is not None:
        resources["namespaces"] = list(namespaces)
    if names is not None:
        resources["names"] = list(names)
    return {"any": [{"resources": resources}]}


def excluding(namespaces: Sequence[str]) -> dict[str, Any]:
    """A rule's `exclude`: requests in these namespaces."""
    return {"any": [{"resources": {"namespaces": list(namespaces)}}]}


def pods(namespaces: Sequence[str] | None = None, operations: Sequence[str] = WRITES) -> dict[str, Any]:
    return match(["Pod"], namespaces, operations)


def validate(message: str, **check: Any) -> dict[str, Any]:
    return {"failureAction": "Enforce", "message": message, **check}


def deny_if(*conditions: tuple[str, str, Any]) -> dict[str, Any]:
    """Refuse when any condition holds."""
    return {"conditions": {"any": [{"key": k, "operator": op, "value": v} for k, op, v in conditions]}}


def count(path: str) -> str:
    """A JMESPath count of the matches of `path`, 0 when the field is absent."""
    return f"{{{{ length({path} || `[]`) }}}}"


def value(path: str) -> str:
    """A JMESPath value, '' when the field is absent."""
    return f"{{{{ {path} || '' }}}}"


def policy(name: str, description: str, rules: list[dict], *, background: bool = True,
           autogen: bool = True) -> dict[str, Any]:
    """A ClusterPolicy that enforces its rules and fails closed."""
    annotations = {
        "policies.kyverno.io/title": name,
        "policies.kyverno.io/category": "Egress tenancy",
        "policies.kyverno.io/description": description,
        **WAIT_FOR_READY,
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


class TenantAdmission(Protocol):
    """What a pattern's egress identity needs of admission control.

    Every pattern tells its tenants apart by something a pod could also claim
    (nodes, a label, the sidecar's traffic capture); its ClusterPolicies give
    each tenant's pods that identity and refuse it everywhere else. The shared
    guardrails (patterns.guardrails) add the rules every pattern needs."""

    def policies(self, tenants: Sequence[Tenant]) -> list[dict[str, Any]]:
        """The pattern's ClusterPolicies for these tenants."""
        ...

    def escapes(self, tenant: Tenant, tenants: Sequence[Tenant]) -> list[dict[str, Any]]:
        """Pod manifests fragments (metadata/spec) by which a pod in `tenant`'s
        namespace would leave with another identity or around the egress path.
        The pattern's policies must refuse every one (tests/test_attacks.py)."""
        ...

    def outside_escapes(self, tenants: Sequence[Tenant]) -> list[dict[str, Any]]:
        """Likewise for a pod outside every tenant namespace."""
        ...


# The two policies through which a pattern that tells tenants apart by a pod
# field (nodes, a label) gives and guards that field; names are stable.
TENANT_DEFAULTS = "egress-tenant-defaults"
TENANT_ISOLATION = "egress-tenant-isolation"


def identity_policies(defaults: list[dict], isolation: list[dict]) -> list[dict[str, Any]]:
    return [
        policy(TENANT_DEFAULTS, "Gives each tenant's pods their tenant's placement or label.", defaults,
               autogen=False),
        policy(TENANT_ISOLATION, "Refuses pods that claim another tenant's egress identity.", isolation),
    ]
