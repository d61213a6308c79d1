"""Identities never move: a tenant's addresses, NAT IPs, egress IPs and gateway
ports, an AZ's subnets and an admin's access entry depend on that tenant, AZ or
admin alone, through the assignment each deploy exports and the next reads back."""

from __future__ import annotations

import json

import pytest
import yaml
from hypothesis import given, settings as hsettings, strategies as st

from conftest import EKS, NODE_GROUP, SUBNET, config_with, planned, problems, stack_config
from patterns import offline
from patterns.__main__ import main
from patterns.assignment import Assignment
from patterns.istio import tenant_routes
from patterns.program import plan_from_config
from patterns.settings import PATTERN_NAMES

POOL = [f"team-{c}" for c in "abcdefghij"]
ADMINS = [f"arn:aws:iam::111122223333:role/admin-{c}" for c in "abc"]


def tenant(name: str, **extra) -> dict:
    return {"name": name, "upstreams": [{"name": "u", "cidr": "10.100.0.0/24", "host": "svc.corp.example",
                                         "ports": [443, 8443]}], **extra}


def base_config(pattern: str, names, **overrides) -> dict:
    return config_with(pattern, privateNat=None, tenants=[tenant(n) for n in names], **overrides)


def plan(config: dict, previous=None):
    return plan_from_config("test", offline.engine_config(config), previous)


def outputs(planned_) -> dict:
    """The stack outputs the program exports for the assignment."""
    return {"assignment": planned_.settings.assignment.to_output()}


def identity(p, name: str) -> tuple:
    """Everything the firewall or a client keys a tenant by."""
    (entry,) = [e for e in p.allow_list if e.tenant == name]
    tenant_ = next(t for t in p.settings.tenants if t.name == name)
    subnets = p.addresses.tenants.get(name)
    ports = [r.gateway_ports for r in tenant_routes(p.settings, tenant_)] if p.settings.pattern == "istio" else []
    return sorted(entry.sources), subnets and sorted(str(s.cidr) for s in subnets.subnets), ports


# --- tenants ------------------------------------------------------------------------


@hsettings(max_examples=30, deadline=None)
@given(data=st.data(), pattern=st.sampled_from(PATTERN_NAMES))
def test_a_tenants_identity_survives_any_edit_of_the_other_tenants(data, pattern):
    names = data.draw(st.lists(st.sampled_from(POOL[:6]), min_size=1, max_size=6, unique=True), "names")
    before = plan(base_config(pattern, names))
    # Keep any subset of the tenants, add new ones, and shuffle the lot.
    kept = data.draw(st.lists(st.sampled_from(names), min_size=1, unique=True), "kept")
    added = data.draw(st.lists(st.sampled_from(POOL[6:]), max_size=3, unique=True), "added")
    after_names = data.draw(st.permutations(kept + added), "order")
    after = plan(base_config(pattern, after_names), outputs(before))
    for name in kept:
        assert identity(after, name) == identity(before, name), name
    # New tenants take free slots: never a kept one's, never a removed one's (still reserved).
    assert len(set(after.settings.assignment.tenants.values())) == len(after.settings.assignment.tenants)
    assert set(before.settings.assignment.tenants.items()) <= set(after.settings.assignment.tenants.items())


def test_inserting_a_tenant_at_the_top_moves_nobody():
    before = plan(base_config("subnet-cidr", ["team-a", "team-b"]))
    after = plan(base_config("subnet-cidr", ["team-c", "team-a", "team-b"]), outputs(before))
    assert after.settings.slots == {"team-c": 2, "team-a": 0, "team-b": 1}
    assert identity(after, "team-a") == identity(before, "team-a")
    assert identity(after, "team-b") == identity(before, "team-b")


def test_a_removed_tenants_slot_stays_reserved_until_released():
    before = plan(base_config("cilium", ["team-a", "team-b", "team-c"]))
    removed = plan(base_config("cilium", ["team-a", "team-c", "team-d"]), outputs(before))
    # team-b's egress IPs may still be trusted: team-d does not get slot 1.
    assert removed.settings.slots == {"team-a": 0, "team-c": 2, "team-d": 3}
    assert removed.settings.assignment.tenants["team-b"] == 1
    assert any("tenant 'team-b' was removed; its slot 1 stays reserved" in w for w in removed.warnings)
    # The reservation is persisted, so it survives more runs.
    again = plan(base_config("cilium", ["team-a", "team-c", "team-d"]), outputs(removed))
    assert again.settings.assignment.tenants["team-b"] == 1
    released = plan(base_config("cilium", ["team-a", "team-c", "team-d", "team-e"], releasedTenants=["team-b"]),
                    outputs(again))
    assert released.settings.slots["team-e"] == 1
    assert "team-b" not in released.settings.assignment.tenants


def test_pinning_a_reserved_slot_or_releasing_a_listed_tenant_is_refused():
    before = plan(base_config("subnet-cidr", ["team-a", "team-b"]))
    config = config_with("subnet-cidr", privateNat=None, tenants=[tenant("team-a"), tenant("team-c", slot=1)])
    found = problems(config, outputs(before))
    assert any(p.startswith("egress:tenants[1].slot: slot 1 is reserved for the removed 'team-b'")
               and "egress:releasedTenants" in p for p in found), found
    found = problems(base_config("subnet-cidr", ["team-a", "team-b"], releasedTenants=["team-a"]), outputs(before))
    assert any(p.startswith("egress:releasedTenants: 'team-a' is still listed") for p in found), found
    # A pinned slot another tenant holds from the previous deploy is refused too.
    config = config_with("subnet-cidr", privateNat=None, tenants=[tenant("team-a"), tenant("team-b"),
                                                                  tenant("team-c", slot=0)])
    found = problems(config, outputs(before))
    assert any(p.startswith("egress:tenants[2].slot: slot 0 is already taken by tenants[0]") for p in found), found


def test_an_explicit_slot_still_wins():
    before = plan(base_config("subnet-cidr", ["team-a", "team-b"]))
    config = config_with("subnet-cidr", privateNat=None, tenants=[tenant("team-a"), tenant("team-b", slot=7)])
    assert plan(config, outputs(before)).settings.slots == {"team-a": 0, "team-b": 7}


def test_new_tenants_skip_slots_pinned_for_shared_nat_profiles():
    before = plan(stack_config("private-nat"))  # profile 'warehouse' pinned at slot 8
    names = [t["name"] for t in stack_config("private-nat")["egress:tenants"]]
    grown = stack_config("private-nat")
    grown["egress:tenants"] += [tenant(f"extra-{i}") for i in range(7)]
    after = plan(grown, outputs(before))
    assert 8 not in [after.settings.slots[f"extra-{i}"] for i in range(7)]
    for name in names:
        assert identity(after, name) == identity(before, name)


# --- migration: stacks deployed before the assignment was exported ------------------


LEGACY_OUTPUTS = {"pattern": "subnet-cidr", "vpcId": "vpc-0123", "clusterName": "egress-eksCluster-1",
                  "egressAllowList": [], "warnings": []}


def test_a_stack_deployed_before_the_assignment_gets_exactly_todays_slots():
    config = config_with(
        "subnet-cidr", privateNat=None,
        tenants=[tenant("team-a"), tenant("team-b", slot=5), tenant("team-c")],
        availabilityZones=["eu-west-1b", "eu-west-1a", "eu-west-1c"],
        clusterAdminRoleArns=ADMINS[:2],
    )
    migrated = plan(config, LEGACY_OUTPUTS)
    assignment = migrated.settings.assignment
    # List position, or the explicit slot: what the stack was deployed with.
    assert assignment.tenants == {"team-a": 0, "team-b": 5, "team-c": 2}
    assert assignment.availability_zones == {"eu-west-1b": 0, "eu-west-1a": 1, "eu-west-1c": 2}
    assert assignment.control_plane_azs == ("eu-west-1b", "eu-west-1a", "eu-west-1c")
    assert assignment.admins == {ADMINS[0]: "admin-0", ADMINS[1]: "admin-1"}
    assert [str(s.cidr) for s in migrated.addresses.tenants["team-c"].subnets] == [
        "10.20.88.0/23", "10.20.90.0/23", "10.20.92.0/23"]
    assert any("exported no 'assignment'" in w for w in migrated.warnings)
    assert not any("exported no 'assignment'" in w for w in plan(config).warnings)  # a first deploy


@pytest.mark.parametrize("stack", PATTERN_NAMES)
def test_shipped_stacks_keep_their_addresses_and_feeding_back_changes_nothing(stack):
    first = plan(stack_config(stack))
    legacy = plan(stack_config(stack), {**LEGACY_OUTPUTS, "pattern": stack})
    again = plan(stack_config(stack), outputs(first))
    assert first.allow_list == legacy.allow_list == again.allow_list
    assert first.settings.assignment == again.settings.assignment
    assert Assignment.from_output(json.loads(json.dumps(outputs(first)["assignment"]))) == first.settings.assignment


def test_a_foreign_assignment_output_is_a_clear_error():
    found = problems(stack_config("subnet-cidr"), {"assignment": {"version": 99}})
    assert any(p.startswith("egress:assignment: the stack output 'assignment' is not an assignment") for p in found)


# --- AZs -------------------------------------------------------------------------------


def _subnets_by_az(p) -> dict:
    found = {}
    for role in ("cluster_subnets", "public_subnets", "egress_subnets"):
        for s in getattr(p.addresses, role):
            found[(role, s.az)] = str(s.cidr)
    for name, t in p.addresses.tenants.items():
        for s in t.subnets:
            found[(name, s.az)] = str(s.cidr)
    return found


@hsettings(max_examples=20, deadline=None)
@given(order=st.permutations(["eu-west-1a", "eu-west-1b", "eu-west-1c"]), pattern=st.sampled_from(PATTERN_NAMES))
def test_reordering_azs_moves_no_subnet(order, pattern):
    before = plan(config_with(pattern))
    after = plan(config_with(pattern, availabilityZones=list(order)), outputs(before))
    assert _subnets_by_az(after) == _subnets_by_az(before)
    for entry in before.allow_list:
        assert identity(after, entry.tenant) == identity(before, entry.tenant)


def test_an_appended_az_gives_capacity_only_and_the_plan_names_what_it_replaces():
    before = plan(stack_config("subnet-cidr"))
    azs = ["eu-west-1a", "eu-west-1b", "eu-west-1c", "eu-west-1d"]
    graph = offline.run("subnet-cidr", config_with("subnet-cidr", availabilityZones=azs), outputs(before))
    subnet_id = {r.urn: r.id for r in graph.by_type(SUBNET)}
    by_id = {r.id: r for r in graph.by_type(SUBNET)}

    def azs_of(ids):
        return sorted(by_id[i].inputs["availabilityZone"] for i in ids)

    old = ["eu-west-1a", "eu-west-1b", "eu-west-1c"]
    # The control plane and the system nodes keep their AZs...
    assert azs_of(graph.get(EKS, "egress").inputs["privateSubnetIds"]) == old
    assert azs_of(graph.get(NODE_GROUP, "egress-system").inputs["subnetIds"]) == old
    # ...while the new AZ gets tenant capacity, endpoints and the transit gateway attachment.
    assert azs_of(graph.get(NODE_GROUP, "payments").inputs["subnetIds"]) == azs
    assert azs_of(graph.get("aws:ec2transitgateway/vpcAttachment:VpcAttachment", "egress-tgw").inputs["subnetIds"]) == azs
    assert azs_of(graph.get("aws:ec2/vpcEndpoint:VpcEndpoint", "egress-sts").inputs["subnetIds"]) == azs
    assert subnet_id  # the new AZ's subnets exist
    (warning,) = [w for w in graph.plan.warnings if w.startswith("new AZ(s) eu-west-1d")]
    assert "the control plane stays in eu-west-1a, eu-west-1b, eu-west-1c" in warning
    assert "replaces them (NodeGroup subnet_ids forces replacement): tenant payments, tenant reporting" in warning
    assert graph.outputs["assignment"]["controlPlaneAvailabilityZones"] == old
    assert graph.outputs["assignment"]["availabilityZones"]["eu-west-1d"] == 3


def test_an_appended_az_under_cilium_replaces_no_node_group():
    before = plan(stack_config("cilium"))
    after = plan(config_with("cilium", availabilityZones=["eu-west-1a", "eu-west-1b", "eu-west-1c", "eu-west-1d"]),
                 outputs(before))
    (warning,) = [w for w in after.warnings if w.startswith("new AZ(s) eu-west-1d")]
    assert warning.endswith("no node group is replaced")


def test_replacements_count_against_the_node_group_quota():
    names = POOL[:8] + [f"more-{i}" for i in range(14)]  # 22 tenants + system = 23 groups
    config = base_config("subnet-cidr", names, tenantSubnetPrefix=26)
    before = plan(config)
    assert not any("managed node groups" in w for w in before.warnings)
    grown = {**config, "egress:availabilityZones": ["eu-west-1a", "eu-west-1b", "eu-west-1c", "eu-west-1d"]}
    after = plan(grown, outputs(before))
    assert any(w.startswith("this stack creates 45 managed node groups (23 + 22 replacements") for w in after.warnings)


def test_a_control_plane_az_cannot_be_removed_and_a_removed_az_stays_reserved():
    before = plan(config_with("subnet-cidr", availabilityZones=["eu-west-1a", "eu-west-1b"]))
    grown = plan(config_with("subnet-cidr", availabilityZones=["eu-west-1a", "eu-west-1b", "eu-west-1c"]),
                 outputs(before))
    found = problems(config_with("subnet-cidr", availabilityZones=["eu-west-1a", "eu-west-1c"]), outputs(grown))
    assert any(p.startswith("egress:availabilityZones: 'eu-west-1b' is missing, but the EKS control plane") for p in found)
    shrunk = plan(config_with("subnet-cidr", availabilityZones=["eu-west-1a", "eu-west-1b"]), outputs(grown))
    assert shrunk.settings.assignment.availability_zones["eu-west-1c"] == 2
    swapped = plan(config_with("subnet-cidr", availabilityZones=["eu-west-1a", "eu-west-1b", "eu-west-1d"]),
                   outputs(shrunk))
    assert swapped.settings.assignment.availability_zones["eu-west-1d"] == 3  # not eu-west-1c's 2


# --- cluster admins -------------------------------------------------------------------


def _access_entries(config, previous) -> dict[str, str]:
    graph = offline.run("subnet-cidr", config, previous)
    return {key: entry["principalArn"] for key, entry in graph.get(EKS, "egress").inputs["accessEntries"].items()}


def test_admin_entries_are_keyed_by_principal():
    before = plan(config_with("subnet-cidr", clusterAdminRoleArns=ADMINS))
    assert before.settings.assignment.admins == {a: f"admin-{i}" for i, a in enumerate(ADMINS)}
    # Removing the first admin and reordering the rest keeps every other entry's key;
    # a new admin never takes a key that named another principal.
    edited = [ADMINS[2], "arn:aws:iam::111122223333:role/new-admin", ADMINS[1]]
    entries = _access_entries(config_with("subnet-cidr", clusterAdminRoleArns=edited), outputs(before))
    assert entries == {"admin-2": ADMINS[2], "admin-3": "arn:aws:iam::111122223333:role/new-admin",
                       "admin-1": ADMINS[1]}


def test_a_duplicate_admin_is_refused():
    found = problems(config_with("subnet-cidr", clusterAdminRoleArns=[ADMINS[0], ADMINS[1], ADMINS[0]]))
    assert any(p.startswith("egress:clusterAdminRoleArns[2]: arn:aws:iam::111122223333:role/admin-a is already listed")
               for p in found), found


# --- reading the previous assignment -----------------------------------------------


def test_the_program_reads_its_own_stacks_outputs_before_planning():
    graph = planned("subnet-cidr")
    assert graph.invokes[0] == ("pulumi:pulumi:readStackOutputs", {"name": "organization/egress/subnet-cidr"})
    assert graph.outputs["assignment"] == outputs(graph.plan)["assignment"]


def _saved_plan_and_edited_stack(tmp_path, capsys, saved_name: str):
    """The subnet-cidr plan saved as JSON, and a stack file that inserts tenant
    newcomer at the top and reverses the others."""
    assert main(["plan", "--stack", "subnet-cidr", "--format", "json"]) == 0
    saved = tmp_path / saved_name
    saved.write_text(capsys.readouterr().out)
    config = stack_config("subnet-cidr")
    config["egress:tenants"] = [tenant("newcomer"), *reversed(config["egress:tenants"])]
    stack_file = tmp_path / "Pulumi.subnet-cidr.yaml"
    stack_file.write_text(yaml.safe_dump({"config": config}))
    return saved, stack_file


def test_plan_previous_feeds_a_saved_plan_back(tmp_path, capsys):
    saved, stack_file = _saved_plan_and_edited_stack(tmp_path, capsys, "previous.json")
    assert main(["plan", "--config-file", str(stack_file), "--previous", str(saved), "--format", "json"]) == 0
    after = {e["tenant"]: e["sources"] for e in json.loads(capsys.readouterr().out)["allowList"]}
    before = {e["tenant"]: e["sources"] for e in json.loads(saved.read_text())["allowList"]}
    assert after["payments"] == before["payments"] and after["reporting"] == before["reporting"]
    assert after["newcomer"] not in before.values()
    assert main(["plan", "--stack", "subnet-cidr", "--previous", str(tmp_path / "missing.json")]) == 2
    assert "no such file" in capsys.readouterr().err


def test_diff_plans_the_new_stack_file_after_the_saved_deploy(tmp_path, capsys):
    from patterns.diff import diff_files

    saved, stack_file = _saved_plan_and_edited_stack(tmp_path, capsys, "deployed.json")
    diff = diff_files(saved, stack_file)
    # Inserting a tenant at the top and reordering the rest moves nobody.
    assert [(t.tenant, t.status) for t in diff.allow_list] == [("newcomer", "added")]
    assert not diff.replaced and not diff.deleted


def test_the_readme_says_what_each_routine_change_does():
    readme = (offline.ROOT / "README.md").read_text()
    section = readme.split("## Day-2 operations", 1)[1].split("\n## ", 1)[0]
    rows = [line.split("|")[1].strip() for line in section.splitlines() if line.startswith("| ") and "---" not in line]
    for change in ("Add a tenant", "Reorder tenants", "Remove a tenant", "Add an AZ", "Reorder AZs",
                   "Add, remove or reorder cluster admins", "Upgrade Kubernetes", "Switch pattern"):
        assert any(row.startswith(change) for row in rows), change
    assert "egress:releasedTenants" in section and "30 managed node groups" in section


def test_a_profile_outlives_the_tenant_it_is_named_after():
    config = config_with("private-nat", privateNat=None,
                         tenants=[tenant("team-a"), tenant("team-b", egressProfile="team-a")])
    before = plan(config)
    config["egress:tenants"] = [tenant("team-b", egressProfile="team-a")]
    after = plan(config, outputs(before))
    # team-b keeps leaving through team-a's NAT IPs: team-a's slot stays reserved.
    assert identity(after, "team-b") == identity(before, "team-b")
