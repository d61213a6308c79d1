"""Resource options the engine acts on, as the offline engine records them from
the RegisterResource request: dropping one must fail a test."""

from __future__ import annotations

import pulumi
import pulumi_aws as aws
import pytest

from conftest import NODE_GROUP, planned
from patterns import offline, program

STACKS = offline.shipped_stacks()


@pytest.mark.parametrize("stack", STACKS)
def test_node_groups_leave_the_desired_size_to_the_autoscaler(stack):
    # The cluster autoscaler moves desiredSize between min and max; without
    # ignoreChanges every `pulumi up` would scale each group back to min.
    node_groups = planned(stack).by_type(NODE_GROUP)
    assert node_groups
    for node_group in node_groups:
        assert node_group.options.ignore_changes == ("scalingConfig.desiredSize",), node_group.name


@pytest.mark.parametrize("stack", STACKS)
def test_no_resource_is_retained_or_deleted_before_replacement_by_accident(stack):
    """Today nothing opts into these; a change that does shows up here first."""
    for resource in planned(stack).resources:
        assert not resource.options.retain_on_delete, resource.urn
        assert not resource.options.delete_before_replace, resource.urn
        assert not resource.options.replace_on_changes, resource.urn


def test_every_option_of_the_request_is_recorded(monkeypatch):
    deploy = program.deploy

    def with_probe(plan):
        outputs = deploy(plan)
        vpc = aws.ec2.Vpc(
            "probe",
            cidr_block="10.9.0.0/16",
            opts=pulumi.ResourceOptions(
                protect=True, retain_on_delete=True, delete_before_replace=True,
                ignore_changes=["tags"], replace_on_changes=["cidrBlock"], aliases=[pulumi.Alias(name="old-probe")],
            ),
        )
        aws.ec2.Subnet("probe-subnet", vpc_id=vpc.id, cidr_block="10.9.0.0/24",
                       opts=pulumi.ResourceOptions(deleted_with=vpc))
        return outputs

    monkeypatch.setattr(program, "deploy", with_probe)
    graph = offline.run_stack("subnet-cidr")
    probe = graph.get("aws:ec2/vpc:Vpc", "probe")
    assert probe.options == offline.Options(
        aliases=("urn:pulumi:subnet-cidr::egress::aws:ec2/vpc:Vpc::old-probe",),
        protect=True, ignore_changes=("tags",), replace_on_changes=("cidrBlock",),
        retain_on_delete=True, delete_before_replace=True,
    )
    assert graph.get("aws:ec2/subnet:Subnet", "probe-subnet").options.deleted_with == probe.urn
    assert probe.to_json()["options"] == {
        "aliases": ["urn:pulumi:subnet-cidr::egress::aws:ec2/vpc:Vpc::old-probe"], "protect": True,
        "ignoreChanges": ["tags"], "replaceOnChanges": ["cidrBlock"], "retainOnDelete": True,
        "deleteBeforeReplace": True,
    }
