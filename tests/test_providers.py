"""Every Kubernetes object goes to the stack's own cluster: components pass the
cluster's provider to their children, and default Kubernetes providers are off."""

from __future__ import annotations

import json

import pytest
from pulumi.runtime.proto import resource_pb2

from conftest import assert_problem, config_with, planned, problems
from patterns import offline, program
from patterns.settings import DISABLE_DEFAULT_PROVIDERS

STACKS = offline.shipped_stacks()
K8S_PROVIDER = "pulumi:providers:kubernetes"


@pytest.mark.parametrize("stack", STACKS)
def test_every_kubernetes_object_uses_the_cluster_provider(stack):
    graph = planned(stack)
    (provider,) = graph.by_type(K8S_PROVIDER)
    (cluster,) = graph.by_type("eks:index:Cluster")
    # The provider talks to this stack's cluster: its kubeconfig is the cluster's.
    assert provider.parent == cluster.parent
    assert json.loads(provider.inputs["kubeconfig"])["clusters"][0]["cluster"]["server"].endswith(".eks.amazonaws.com")
    objects = [r for r in graph.resources if r.type.startswith("kubernetes:")]
    assert objects
    assert {r.urn: r.provider for r in objects} == {r.urn: provider.urn for r in objects}


def test_no_kubernetes_object_names_its_provider_itself():
    """The provider reaches each object through its parent's `providers`, so a
    new component only has to be given the option once."""
    graph = planned("istio")
    components = [r for r in graph.resources if not r.custom and r.type.startswith("egress:")]
    assert all(r.provider == "" for r in components)  # components carry no provider of their own
    on_cluster = {"egress:tenancy:TenantNamespaces", "egress:guardrails:Guardrails", "egress:patterns:Istio",
                  "egress:base:VpcCni", "egress:base:SystemNodes"}
    assert on_cluster <= {r.type for r in components}


def test_every_stack_gets_kubernetes_default_providers_disabled():
    for stack in STACKS:
        config = offline.engine_config(offline.read_stack_file(offline.stack_path(stack)))
        assert "kubernetes" in offline.disabled_default_providers(config), stack


def test_the_engine_refuses_a_kubernetes_object_without_an_explicit_provider(monkeypatch):
    # A component given no `providers`: its Kubernetes objects would fall back
    # to a default provider, which `pulumi up` refuses as the offline engine does.
    tenant_namespaces = program.TenantNamespaces
    monkeypatch.setattr(program, "TenantNamespaces", lambda name, plan, opts=None: tenant_namespaces(name, plan))
    with pytest.raises(Exception, match="Default provider for 'kubernetes' disabled"):
        offline.run_stack("subnet-cidr")


def test_default_provider_denial_follows_the_config():
    namespace = resource_pb2.RegisterResourceRequest(type="kubernetes:core/v1:Namespace", name="n", custom=True)
    offline.RecordingMonitor("eu-west-1").deny_default_provider(namespace)  # not disabled: allowed
    for disabled in ({"kubernetes"}, {"*"}):
        with pytest.raises(ValueError, match="must use an explicit provider"):
            offline.RecordingMonitor("eu-west-1", frozenset(disabled)).deny_default_provider(namespace)
    vpc = resource_pb2.RegisterResourceRequest(type="aws:ec2/vpc:Vpc", name="v", custom=True)
    offline.RecordingMonitor("eu-west-1", frozenset({"kubernetes"})).deny_default_provider(vpc)


@pytest.mark.parametrize("value", [["aws"], [], "kubernetes", "not json"])
def test_a_stack_file_may_not_enable_the_default_kubernetes_provider(value):
    assert_problem(config_with(**{DISABLE_DEFAULT_PROVIDERS: value}), DISABLE_DEFAULT_PROVIDERS, "must list kubernetes")


@pytest.mark.parametrize("value", [["kubernetes"], ["aws", "kubernetes"], ["*"]])
def test_a_stack_file_may_widen_the_disabled_providers(value):
    assert problems(config_with(**{DISABLE_DEFAULT_PROVIDERS: value})) == []
