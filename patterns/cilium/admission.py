"""Admission for the cilium pattern: a tenant is the pod label egress/tenant in
its namespace (the CiliumEgressGatewayPolicy selects on it), so the label is
given, kept, and refused to every pod outside that namespace."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .. import admission as rules
from ..settings import Tenant
from ..tenancy import TENANT_KEY

_LABEL = f'request.object.metadata.labels."{TENANT_KEY}"'


@dataclass(frozen=True)
class TenantLabelAdmission:
    """Tenants told apart by the pod label egress/tenant: a tenant's pods get
    its value, keep it, and no pod outside the tenant namespaces carries one."""

    def policies(self, tenants: Sequence[Tenant]) -> list[dict[str, Any]]:
        defaults, isolation = [], []
        for tenant in tenants:
            ns = tenant.k8s_namespace
            defaults += [
                {
                    "name": f"{tenant.name}-add-label",
                    "match": rules.pods([ns], ["CREATE"]),
                    "mutate": {"patchStrategicMerge": {"metadata": {"labels": {f"+({TENANT_KEY})": tenant.name}}}},
                },
                {
                    "name": f"{tenant.name}-require-label",
                    "match": rules.pods([ns]),
                    "validate": rules.validate(
                        f"Pods in namespace {ns} carry the label {TENANT_KEY}: {tenant.name}, which routes them "
                        f"through the egress IP of tenant {tenant.name}: set it to {tenant.name} (or leave it out; "
                        "it is added on creation).",
                        pattern={"metadata": {"labels": {TENANT_KEY: tenant.name}}},
                    ),
                },
            ]
            isolation.append({
                "name": f"{tenant.name}-own-label",
                "match": rules.pods([ns]),
                "validate": rules.validate(
                    f"Pods in namespace {ns} may only carry the label {TENANT_KEY}: {tenant.name}; "
                    "change the label's value or remove it.",
                    deny=rules.deny_if((rules.value(_LABEL), "AnyNotIn", ["", tenant.name])),
                ),
            })
        namespaces = [t.k8s_namespace for t in tenants]
        isolation.append({
            "name": "tenant-label-only-in-tenant-namespaces",
            "match": rules.pods(),
            "exclude": rules.excluding(namespaces),
            "validate": rules.validate(
                f"Only pods in tenant namespaces ({', '.join(namespaces)}) may carry the label {TENANT_KEY}; "
                "remove it, or deploy the pod into its tenant's namespace.",
                deny=rules.deny_if((rules.value(_LABEL), "NotEquals", "")),
            ),
        })
        return rules.identity_policies(defaults, isolation)

    def escapes(self, tenant: Tenant, tenants: Sequence[Tenant]) -> list[dict[str, Any]]:
        return [{"metadata": {"labels": {TENANT_KEY: t.name}}} for t in tenants if t.name != tenant.name]

    def outside_escapes(self, tenants: Sequence[Tenant]) -> list[dict[str, Any]]:
        return [{"metadata": {"labels": {TENANT_KEY: t.name}}} for t in tenants]
