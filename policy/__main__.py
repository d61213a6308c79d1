"""The egress guardrails policy pack: `pulumi preview --policy-pack policy`."""

from pulumi_policy import EnforcementLevel, PolicyPack

from egress_guardrails import POLICIES

PolicyPack(
    name="egress-guardrails",
    policies=POLICIES,
    enforcement_level=EnforcementLevel.MANDATORY,
    description="Pre-deploy rules for the EKS egress stacks: private, encrypted control plane, "
    "IMDSv2 nodes, tainted tenant and gateway node groups, multi-AZ egress with a NAT gateway per AZ.",
)
