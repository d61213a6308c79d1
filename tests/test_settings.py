"""Bad input: every problem named by its config key, with the fix, all at once,
before any resource is registered."""

from __future__ import annotations

import json
import runpy
import subprocess
import sys
from pathlib import Path

import pulumi
import yaml
import pytest
from pulumi.runtime.config import set_all_config

from conftest import assert_problem, config_with, problems, stack_config
from patterns import offline
from patterns.settings import ConfigError

ROOT = Path(__file__).resolve().parent.parent


def tenant(name="payments", **fields):
    base = {"name": name, "upstreams": [{"name": "db", "cidr": "10.100.10.0/24", "ports": [443]}]}
    return {**base, **fields}


def upstream(**fields):
    return {"name": "db", "cidr": "10.100.10.0/24", "ports": [443], **fields}


def test_shipped_stack_is_valid():
    assert problems(stack_config("subnet-cidr")) == []


@pytest.mark.parametrize(
    "key, value, reported_key, fragments",
    [
        ("vpcCidr", "10.20.0.300/16", "egress:vpcCidr", ("is not an IPv4 CIDR", "e.g. 10.30.0.0/16")),
        ("vpcCidr", "10.20.1.0/16", "egress:vpcCidr", ("host bits set", "use 10.20.0.0/16")),
        ("vpcCidr", "8.8.0.0/16", "egress:vpcCidr", ("not a private range", "10.0.0.0/8")),
        ("onPremCidrs", ["192.0.2.0/24"], "egress:onPremCidrs[0]", ("not a private range",)),
        ("onPremCidrs", ["10.20.128.0/17"], "egress:onPremCidrs[0]", ("overlaps egress:vpcCidr",)),
        ("onPremCidrs", [], "egress:onPremCidrs", ("is empty", "e.g. [10.100.0.0/14]")),
        ("availabilityZones", ["eu-west-1a"], "egress:availabilityZones", ("at least two distinct AZs",)),
        ("availabilityZones", ["eu-west-1a", "eu-west-1a"], "egress:availabilityZones", ("listed twice",)),
        ("availabilityZones", ["eu-west-1a", "us-east-1b"], "egress:availabilityZones",
         ("'us-east-1b' is not an AZ of region eu-west-1", "eu-west-1a")),
        ("availabilityZones", ["eu-west-1a", "eu-west-1b", "eu-west-1c", "eu-west-1d", "eu-west-1e"],
         "egress:availabilityZones", ("at most 4",)),
        ("availabilityZones", "eu-west-1a", "egress:availabilityZones", ("is not a list",)),
        ("pattern", "nat-gateway", "egress:pattern", ("'subnet-cidr'", "'private-nat'", "'cilium'", "'istio'")),
        ("kubernetesVersion", "latest", "egress:kubernetesVersion", ("e.g. '1.35'",)),
        ("kubernetesVersion", "1.29", "egress:kubernetesVersion", ("1.32, 1.33, 1.34, 1.35, 1.36",)),
        ("kubernetesVersion", "1.31", "egress:kubernetesVersion", ("not a Kubernetes minor EKS supports",)),
        ("kubernetesVersion", "1.37", "egress:kubernetesVersion", ("use one of 1.32",)),
        # An unquoted 1.30-style version: YAML hands over the number 1.3 (float from
        # the stack file, the string "1.3" from the engine).
        ("kubernetesVersion", 1.3, "egress:kubernetesVersion", ("unquoted 1.30", "quote it: '1.30'", "use one of 1.32")),
        ("kubernetesVersion", "1.3", "egress:kubernetesVersion", ("quote it: '1.30'",)),
        ("transitGatewayId", "tgw-xyz", "egress:transitGatewayId", ("tgw-0123456789abcdef0",)),
        ("clusterAdminRoleArns", ["admin"], "egress:clusterAdminRoleArns[0]", ("arn:aws:iam::<account>:role/<name>",)),
        ("clusterAdminRoleArns", "arn:aws:iam::111122223333:role/a", "egress:clusterAdminRoleArns", ("is not a list",)),
        ("endpointPublicAccessCidrs", ["0.0.0.0/0"], "egress:endpointPublicAccessCidrs[0]", ("never 0.0.0.0/0",)),
        ("internetEgress", "none", "egress:internetEgress", ("'nat'", "'transit-gateway'")),
        ("tenantSubnetPrefix", 30, "egress:tenantSubnetPrefix", ("out of range", "16-28")),
        ("tenants", [], "egress:tenants", ("list at least one tenant",)),
        ("tenants", "payments", "egress:tenants", ("is not a list", "- name:")),
        ("vpcCidr", "10.20.0.0/15", "egress:vpcCidr", ("AWS accepts /16 to /28", "e.g. 10.20.0.0/16")),
        ("vpcCidr", "10.20.0.0/29", "egress:vpcCidr", ("AWS accepts /16 to /28",)),
        ("onPremCidrs", ["10.100.0.0/14", "10.200.0.0/16", "10.100.0.0/14"], "egress:onPremCidrs[2]",
         ("already listed as onPremCidrs[0]", "list it once", "RouteAlreadyExists")),
        ("clusterAdminRoleArns", ["arn:aws:iam::111122223333:role/a", "arn:aws:iam::111122223333:role/a"],
         "egress:clusterAdminRoleArns[1]", ("already listed as clusterAdminRoleArns[0]", "one access entry")),
        ("gatewayInstanceType", "c6in-large", "egress:gatewayInstanceType", ("not an EC2 instance type", "c6in.large")),
        ("systemNodes", {"instanceType": "m7i-large"}, "egress:systemNodes.instanceType",
         ("not an EC2 instance type", "m7i.large")),
        ("pattren", "subnet-cidr", "egress:pattren", ("did you mean 'pattern'",)),
        ("vpcCidrs", "10.0.0.0/16", "egress:vpcCidrs", ("did you mean 'vpcCidr'",)),
    ],
)
def test_top_level_problems(key, value, reported_key, fragments):
    assert_problem(config_with(**{key: value}), reported_key, *fragments)


def test_a_misspelt_key_is_reported_once_not_also_as_missing():
    found = problems(config_with(pattren="subnet-cidr", pattern=None))
    assert found == ["egress:pattren: unknown key; did you mean 'pattern'?"]


def test_tenants_that_are_not_a_list_are_not_also_called_empty():
    assert [p for p in problems(config_with(tenants="payments")) if p.startswith("egress:tenants:")] == [
        "egress:tenants: is not a list; write one tenant per '- name: ...' entry"
    ]


def test_internet_egress_through_a_missing_transit_gateway():
    config = config_with(internetEgress="transit-gateway", transitGatewayId=None)
    assert_problem(config, "egress:internetEgress", "needs egress:transitGatewayId")


def test_region_must_exist_in_config():
    assert_problem(config_with(**{"aws:region": None}), "aws:region", "is required")
    assert_problem(config_with(**{"aws:region": "europe"}), "aws:region", "not an AWS region name")


@pytest.mark.parametrize(
    "tenants, reported_key, fragments",
    [
        ([tenant(), tenant()], "egress:tenants[1].name", ("'payments' is already used by tenants[0]",)),
        ([tenant("a", namespace="shared"), tenant("b", namespace="shared")], "egress:tenants[1].namespace",
         ("already used by tenants[0]",)),
        ([tenant("Payments")], "egress:tenants[0].name", ("not a DNS-1123 label",)),
        ([tenant(namespace="pay_ments")], "egress:tenants[0].namespace", ("not a DNS-1123 label",)),
        ([tenant(namespace="kube-system")], "egress:tenants[0].namespace", ("is reserved",)),
        ([tenant(upstreams=[upstream(cidr="10.99.0.0/24")])], "egress:tenants[0].upstreams[0].cidr",
         ("outside egress:onPremCidrs", "10.100.0.0/14")),
        ([tenant(upstreams=[upstream(cidr="not-a-cidr")])], "egress:tenants[0].upstreams[0].cidr",
         ("not an IPv4 CIDR",)),
        ([tenant(upstreams=[upstream(cidr="203.0.113.0/24")])], "egress:tenants[0].upstreams[0].cidr",
         ("not a private range",)),
        ([tenant(upstreams=[upstream(ports=[])])], "egress:tenants[0].upstreams[0].ports",
         ("is empty", "e.g. [443]")),
        ([tenant(upstreams=[upstream(ports=[0, 70000])])], "egress:tenants[0].upstreams[0].ports[0]",
         ("out of range", "1-65535")),
        ([tenant(upstreams=[upstream(ports=[70000])])], "egress:tenants[0].upstreams[0].ports[0]",
         ("out of range",)),
        ([tenant(upstreams=[upstream(ports="443")])], "egress:tenants[0].upstreams[0].ports",
         ("is not a list",)),
        ([tenant(upstreams=[upstream(host="not a host")])], "egress:tenants[0].upstreams[0].host",
         ("not a host name",)),
        ([tenant(upstreams=[upstream(), upstream()])], "egress:tenants[0].upstreams", ("used twice",)),
        ([tenant(upstreams=[])], "egress:tenants[0].upstreams", ("is empty", "at least one upstream")),
        ([tenant(nodes={"min": 1})], "egress:tenants[0].nodes.min", ("out of range", "2 or more")),
        ([tenant(nodes={"min": 5, "max": 3})], "egress:tenants[0].nodes.min", ("larger than nodes.max",)),
        ([tenant(upstream=[])], "egress:tenants[0].upstream", ("did you mean 'upstreams'",)),
        ([tenant(upstreams=[upstream(port=[443])])], "egress:tenants[0].upstreams[0].port",
         ("did you mean 'ports'",)),
        ([tenant(nodes={"instanceType": "m7i-large"})], "egress:tenants[0].nodes.instanceType",
         ("not an EC2 instance type", "e.g. 'm7i.large'")),
        ([tenant(nodes={"instanceType": "large"})], "egress:tenants[0].nodes.instanceType",
         ("not an EC2 instance type",)),
        ([tenant(nodes={"instancetype": "m7i.large"})], "egress:tenants[0].nodes.instancetype",
         ("did you mean 'instanceType'",)),
        ([tenant("a", slot=1), tenant("b")], "egress:tenants[1].slot", ("slot 1 is already taken by tenants[0]",)),
    ],
)
def test_tenant_problems(tenants, reported_key, fragments):
    assert_problem(config_with(tenants=tenants), reported_key, *fragments)


def test_tenants_that_do_not_fit_in_the_vpc():
    # A /20 VPC holds the shared blocks and one /23 tenant slot of 4 AZ subnets.
    config = config_with(vpcCidr="10.20.0.0/20", tenantSubnetPrefix=23, tenants=[tenant("a"), tenant("b")])
    found = problems(config)
    assert any(p.startswith("egress:tenants[1]:") and "does not fit" in p and "tenantSubnetPrefix" in p
               and "use a /19 or larger egress:vpcCidr" in p for p in found), found


def test_every_problem_is_listed_at_once():
    config = config_with(
        vpcCidr="8.8.0.0/16",
        availabilityZones=["eu-west-1a"],
        pattren="x",
        tenants=[
            tenant("Bad_Name"),
            tenant("ok", upstreams=[upstream(cidr="10.99.0.0/24", ports=[])]),
            tenant("ok"),
        ],
    )
    found = problems(config)
    for key in (
        "egress:vpcCidr:",
        "egress:availabilityZones:",
        "egress:pattren:",
        "egress:tenants[0].name:",
        "egress:tenants[1].upstreams[0].ports:",
        "egress:tenants[2].name:",
    ):
        assert any(p.startswith(key) for p in found), (key, found)


def test_malformed_stack_file(tmp_path):
    bad = tmp_path / "Pulumi.bad.yaml"
    bad.write_text("config:\n  egress:pattern: [subnet-cidr\n")
    with pytest.raises(ConfigError) as error:
        offline.run_stack(config_file=bad)
    assert "is not valid YAML at line" in str(error.value)
    bad.write_text("egress:pattern: subnet-cidr\n")
    with pytest.raises(ConfigError, match="needs a top-level 'config:' mapping"):
        offline.run_stack(config_file=bad)


def test_a_key_given_twice_in_a_stack_file_is_refused_not_silently_overwritten(tmp_path):
    bad = tmp_path / "Pulumi.bad.yaml"
    bad.write_text(
        "config:\n  aws:region: eu-west-1\n  egress:vpcCidr: 10.20.0.0/16\n  egress:vpcCidr: 10.21.0.0/16\n"
        "  egress:tenants:\n    - name: a\n      name: b\n"
    )
    with pytest.raises(ConfigError) as error:
        offline.read_stack_file(bad)
    found = [str(p) for p in error.value.problems]
    assert "egress:vpcCidr: 'egress:vpcCidr' is given twice in Pulumi.bad.yaml (lines 3 and 4); " \
           "YAML would silently keep only the last: delete one" in found
    assert any(p.startswith(f"{bad}: 'name' is given twice") and "(lines 6 and 7)" in p for p in found), found


@pytest.mark.parametrize(
    "key, fragments",
    [
        ("egres:deletionProtection", ("unknown config namespace 'egres'", "did you mean 'egress:deletionProtection'")),
        ("kubernets:enableServerSideApply", ("did you mean 'kubernetes:enableServerSideApply'",)),
        ("gcp:project", ("Pulumi would ignore this key", "egress:")),
    ],
)
def test_keys_under_a_namespace_no_one_reads_are_refused(key, fragments):
    assert_problem(config_with(**{key: "x"}), key, *fragments)


def test_provider_and_engine_namespaces_are_legitimate():
    config = config_with(**{"aws:defaultTags": {"tags": {"team": "platform"}}, "kubernetes:enableServerSideApply": "true",
                            "pulumi:tags": {"owner": "platform"}})
    assert problems(config) == []


def test_config_errors_come_before_any_resource(monkeypatch):
    registered = []
    monkeypatch.setattr(offline.RecordingMonitor, "RegisterResource", lambda self, r: registered.append(r))
    with pytest.raises(ConfigError):
        offline.run("test", config_with(vpcCidr="nonsense"))
    assert registered == []


def test_plan_command_exits_2_with_messages_and_no_traceback(tmp_path):
    bad = tmp_path / "Pulumi.bad.yaml"
    bad.write_text("config:\n  aws:region: eu-west-1\n  egress:pattern: subnet-cidr\n  egress:vpcCidr: 10.0.0.0/33\n")
    result = subprocess.run(
        [sys.executable, "-m", "patterns", "plan", "--config-file", str(bad)],
        cwd=ROOT, capture_output=True, text=True,
    )
    assert result.returncode == 2
    assert "egress:vpcCidr: '10.0.0.0/33' is not an IPv4 CIDR" in result.stderr
    assert "egress:tenants: is empty" in result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""


def _plan_command(path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "patterns", "plan", "--config-file", str(path)],
                          cwd=ROOT, capture_output=True, text=True)


def test_plan_command_refuses_what_aws_would_refuse_with_exit_2(tmp_path):
    config = config_with(
        vpcCidr="10.20.0.0/15", onPremCidrs=["10.100.0.0/14", "10.100.0.0/14"],
        clusterAdminRoleArns=["arn:aws:iam::111122223333:role/a", "arn:aws:iam::111122223333:role/a"],
        gatewayInstanceType="c6in-large", **{"egres:deletionProtection": False},
    )
    config["egress:tenants"][0]["nodes"] = {"instanceType": "m7i-large"}
    config["egress:tenants"][1]["iamRoleArn"] = "arn:aws-us-gov:iam::111122223333:role/reporting"
    bad = tmp_path / "Pulumi.bad.yaml"
    bad.write_text(yaml.safe_dump({"config": config}))
    result = _plan_command(bad)
    assert result.returncode == 2 and result.stdout == "" and "Traceback" not in result.stderr
    for line in (
        "egress:vpcCidr: 10.20.0.0/15 cannot be a VPC range; AWS accepts /16 to /28, e.g. 10.20.0.0/16",
        "egress:onPremCidrs[1]: 10.100.0.0/14 is already listed as onPremCidrs[0]; list it once",
        "egress:clusterAdminRoleArns[1]: arn:aws:iam::111122223333:role/a is already listed",
        "egress:gatewayInstanceType: 'c6in-large' is not an EC2 instance type; use e.g. 'c6in.large'",
        "egress:tenants[0].nodes.instanceType: 'm7i-large' is not an EC2 instance type; use e.g. 'm7i.large'",
        "egress:tenants[1].iamRoleArn: arn:aws-us-gov:iam::111122223333:role/reporting is in partition "
        "'aws-us-gov' but aws:region eu-west-1 is in 'aws'",
        "egres:deletionProtection: unknown config namespace 'egres'",
    ):
        assert line in result.stderr, (line, result.stderr)


def test_plan_command_refuses_a_key_given_twice_with_exit_2(tmp_path):
    bad = tmp_path / "Pulumi.bad.yaml"
    bad.write_text((ROOT / "stacks" / "Pulumi.subnet-cidr.yaml").read_text()
                   .replace("config:\n", "config:\n  egress:deletionProtection: false\n", 1)
                   + "  egress:deletionProtection: true\n")
    result = _plan_command(bad)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "egress:deletionProtection: 'egress:deletionProtection' is given twice in Pulumi.bad.yaml" in result.stderr


def test_pulumi_entry_point_reports_a_run_error_without_traceback(monkeypatch):
    """`pulumi up` shows a RunError as its message only."""
    config = offline.engine_config(config_with(vpcCidr="8.8.0.0/16"))
    monkeypatch.setenv("PULUMI_CONFIG", json.dumps(config))
    # A fresh engine of its own (the entry point reads the stack's outputs
    # first), so the test does not lean on one an earlier test left behind.
    monitor = offline.RecordingMonitor("eu-west-1")
    pulumi.runtime.set_mocks(monitor.mocks, project="egress", stack="test", preview=False, monitor=monitor)
    set_all_config({})  # as in a real run, the config comes from the engine's environment
    with pytest.raises(pulumi.RunError) as error:
        runpy.run_path(str(ROOT / "__main__.py"))
    assert "egress:vpcCidr: 8.8.0.0/16 is not a private range" in str(error.value)
