"""A user's own stack file next to the shipped ones is welcome: the checks that
iterate stack files check the shipped ones by name, and the user's plans like
any other."""

from __future__ import annotations

import shutil

import yaml

import test_base
import test_docs
import test_options
import test_policy_pack
import test_providers
import test_urns
from conftest import stack_config
from patterns import offline


def test_a_users_own_stack_file_breaks_no_stack_check(tmp_path, monkeypatch):
    for path in offline.STACKS_DIR.glob("Pulumi.*.yaml"):
        shutil.copy(path, tmp_path / path.name)
    mine = stack_config("subnet-cidr")
    mine["egress:pattern"] = "private-nat"  # a stack named after no pattern, running another's config
    (tmp_path / "Pulumi.mine.yaml").write_text(yaml.safe_dump({"config": mine}))
    monkeypatch.setattr(offline, "STACKS_DIR", tmp_path)
    assert "mine" in offline.stack_names()

    assert offline.shipped_stacks() == sorted(name for name in offline.stack_names() if name != "mine")
    test_docs.test_every_shipped_stack_names_its_own_pattern()
    test_base.test_every_shipped_stack_plans_cleanly()
    test_urns.test_snapshots_are_sorted_and_cover_every_shipped_stack()
    # Properties any valid stack has hold for the user's too.
    graph = offline.run_stack("mine")
    assert graph.plan.settings.pattern == "private-nat"
    test_policy_pack.test_every_stack_passes_the_pack(graph)
    monkeypatch.setattr(test_providers, "planned", lambda stack: graph)
    monkeypatch.setattr(test_options, "planned", lambda stack: graph)
    test_providers.test_every_kubernetes_object_uses_the_cluster_provider("mine")
    test_options.test_node_groups_leave_the_desired_size_to_the_autoscaler("mine")
