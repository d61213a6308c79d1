"""Every refusal reads as advice: it names a key that exists, says what to do,
and never passes pydantic's own wording through. One mistake, one problem."""

from __future__ import annotations

import re
from typing import Any, get_args, get_origin

import pytest
from pydantic import BaseModel

from conftest import config_with, problems, stack_config
from patterns.settings import Settings

PYDANTIC_WORDING = (
    "Input should", "input_value", "input_type", "pydantic", "Field required", "Extra inputs",
    "String should", "List should", "Value error", "For further information", "type=",
)


def _model_of(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return next(filter(None, map(_model_of, get_args(annotation))), None)


def is_real_key(key: str) -> bool:
    """Whether a key like egress:tenants[0].nodes.min exists in the stack file's schema."""
    if key == "aws:region":
        return True
    namespace, _, path = key.partition(":")
    if namespace != "egress" or not path:
        return False
    model: Any = Settings
    expect_dict_key = False
    for part in re.findall(r"[^.\[\]]+", path):
        if part.isdigit() or expect_dict_key:
            expect_dict_key = False
            continue
        if model is None:
            return False
        fields = {f.alias or n: f for n, f in model.model_fields.items() if n != "region"}
        if part not in fields:
            return False
        annotation = fields[part].annotation
        expect_dict_key = get_origin(annotation) is dict or any(get_origin(a) is dict for a in get_args(annotation))
        model = _model_of(annotation)
    return True


def _tenant(**fields) -> dict:
    base = {"name": "payments", "upstreams": [{"name": "db", "cidr": "10.100.10.0/24", "ports": [443]}]}
    return {**base, **fields}


def _upstream(**fields) -> list[dict]:
    return [{"name": "db", "cidr": "10.100.10.0/24", "ports": [443], **fields}]


# (what a user might write) -> the key the one problem must name
MISTAKES = [
    ({"vpcCidr": "10.20.0.0/15"}, "egress:vpcCidr"),
    ({"vpcCidr": "10.20.0.0"}, "egress:vpcCidr"),
    ({"vpcCidr": "10.20.0.0/16 "}, None),  # trailing space is fine
    ({"vpcCidr": "10.20.0.0/24"}, "egress:vpcCidr"),  # too small: names real keys only
    ({"vpcCidr": "10.20.0.0/20", "tenantSubnetPrefix": 23}, "egress:tenants[1]"),
    ({"onPremCidrs": "10.100.0.0/14"}, "egress:onPremCidrs"),
    ({"onPremCidrs": ["10.100.0.0/14", "10.100.0.0/14"]}, "egress:onPremCidrs[1]"),
    ({"onPremCidrs": []}, "egress:onPremCidrs"),
    ({"availabilityZones": "eu-west-1a, eu-west-1b"}, "egress:availabilityZones"),
    ({"pattern": "subnet_cidr"}, "egress:pattern"),
    ({"pattren": "subnet-cidr", "pattern": None}, "egress:pattren"),
    ({"vpc_cidr": "10.20.0.0/16", "vpcCidr": None}, "egress:vpc_cidr"),
    ({"deletionProtection": "maybe"}, "egress:deletionProtection"),
    ({"tenantSubnetPrefix": 30}, "egress:tenantSubnetPrefix"),
    ({"clusterSubnetPrefix": "twenty"}, "egress:clusterSubnetPrefix"),
    ({"gatewayInstanceType": "c6in"}, "egress:gatewayInstanceType"),
    ({"systemNodes": {"instanceType": "m7i-large"}}, "egress:systemNodes.instanceType"),
    ({"systemNodes": {"max": 200}}, "egress:systemNodes.max"),
    ({"systemNodes": "m7i.large"}, "egress:systemNodes"),
    ({"clusterAdminRoleArns": ["arn:aws:iam::1234:role/admin"]}, "egress:clusterAdminRoleArns[0]"),
    ({"clusterAdminRoleArns": ["arn:aws:iam::111122223333:role/a"] * 2}, "egress:clusterAdminRoleArns[1]"),
    ({"transitGatewayId": "tgw-123"}, "egress:transitGatewayId"),
    ({"internetEgress": "natgw"}, "egress:internetEgress"),
    ({"endpointPublicAccessCidrs": ["0.0.0.0/0"]}, "egress:endpointPublicAccessCidrs[0]"),
    ({"aws:region": "eu-west"}, "aws:region"),
    ({"tenants": "payments"}, "egress:tenants"),
    ({"tenants": []}, "egress:tenants"),
    ({"tenants": ["payments"]}, "egress:tenants[0]"),
    ({"tenants": [_tenant(name="Payments_Team")]}, "egress:tenants[0].name"),
    ({"tenants": [_tenant(name="p" * 41)]}, "egress:tenants[0].name"),
    ({"tenants": [_tenant(namespce="pay")]}, "egress:tenants[0].namespce"),
    ({"tenants": [_tenant(slot=-1)]}, "egress:tenants[0].slot"),
    ({"tenants": [_tenant(slot="first")]}, "egress:tenants[0].slot"),
    ({"tenants": [_tenant(nodes={"max": "four"})]}, "egress:tenants[0].nodes.max"),
    ({"tenants": [_tenant(nodes={"min": 0})]}, "egress:tenants[0].nodes.min"),
    ({"tenants": [_tenant(nodes={"min": 5, "max": 3})]}, "egress:tenants[0].nodes.min"),
    ({"tenants": [_tenant(nodes={"instanceType": "m7i-large"})]}, "egress:tenants[0].nodes.instanceType"),
    ({"tenants": [_tenant(nodes="m7i.large")]}, "egress:tenants[0].nodes"),
    ({"tenants": [_tenant(upstreams=[])]}, "egress:tenants[0].upstreams"),
    ({"tenants": [_tenant(upstreams={"name": "db"})]}, "egress:tenants[0].upstreams"),
    ({"tenants": [_tenant(upstreams=_upstream(ports=["https"]))]}, "egress:tenants[0].upstreams[0].ports[0]"),
    ({"tenants": [_tenant(upstreams=_upstream(ports=443))]}, "egress:tenants[0].upstreams[0].ports"),
    ({"tenants": [_tenant(upstreams=_upstream(protocol="HTTPS"))]}, "egress:tenants[0].upstreams[0].protocol"),
    ({"tenants": [_tenant(upstreams=_upstream(cidr="10.100.10.0/33"))]}, "egress:tenants[0].upstreams[0].cidr"),
    ({"tenants": [_tenant(upstreams=_upstream(cidr="10.100.10.5/24"))]}, "egress:tenants[0].upstreams[0].cidr"),
    ({"tenants": [_tenant(upstreams=_upstream(host="https://db.corp.example"))]},
     "egress:tenants[0].upstreams[0].host"),
    ({"tenants": [_tenant(iamRoleArn="payments-team")]}, "egress:tenants[0].iamRoleArn"),
]


@pytest.mark.parametrize("overrides, key", MISTAKES, ids=[str(m[0])[:60] for m in MISTAKES])
def test_one_mistake_one_human_problem_naming_a_real_key(overrides, key):
    found = problems(config_with(**overrides))
    if key is None:
        assert found == []
        return
    assert len(found) == 1, found
    problem_key, message = found[0].split(": ", 1)
    assert problem_key == key
    for wording in PYDANTIC_WORDING:
        assert wording not in message, message
    if message.startswith("unknown key"):
        assert not is_real_key(problem_key)
        close = re.search(r"did you mean '([^']+)'", message)
        assert close, message
        parent = problem_key.rsplit(".", 1)[0] + "." if "." in problem_key else "egress:"
        assert is_real_key(parent + close.group(1)), message
    else:
        assert is_real_key(problem_key), problem_key
    for mentioned in re.findall(r"\begress:[A-Za-z][\w.\[\]]*", message):
        assert is_real_key(mentioned.rstrip(".")), (mentioned, message)
    assert len(message) > 20 and (";" in message or ":" in message), message  # a fix follows the finding


def test_the_key_checker_knows_real_from_made_up_keys():
    assert is_real_key("egress:tenants[3].upstreams[0].ports[1]")
    assert is_real_key("egress:privateNat.profiles.warehouse.secondaryIps")
    assert not is_real_key("egress:publicSubnetPrefix")
    assert not is_real_key("egress:tenants[0].nodes.size")


def test_shipped_stacks_have_no_problems():
    for stack in ("subnet-cidr", "private-nat", "cilium", "istio"):
        assert problems(stack_config(stack)) == [], stack


PRIVATE_NAT_MISTAKES = [
    ({"tenantCidr": "100.64.0.0/12"}, "egress:privateNat.tenantCidr"),
    ({"tenantCidr": "172.20.0.0/16"}, "egress:privateNat.tenantCidr"),
    ({"tenantCidr": "10.30.128.0/17"}, "egress:privateNat.tenantCidr"),
    ({"tenantCdir": "100.64.0.0/16"}, "egress:privateNat.tenantCdir"),
    ({"profiles": {"warehouse": {"slot": 8, "secondaryIps": 9}}}, "egress:privateNat.profiles.warehouse.secondaryIps"),
    ({"profiles": {"warehouse": {"slot": -1}}}, "egress:privateNat.profiles.warehouse.slot"),
    ({"profiles": {"Ware_house": {"slot": 8}, "warehouse": {"slot": 9}}}, "egress:privateNat.profiles.Ware_house"),
]


@pytest.mark.parametrize("overrides, key", PRIVATE_NAT_MISTAKES, ids=[str(m[0])[:60] for m in PRIVATE_NAT_MISTAKES])
def test_private_nat_mistakes_read_as_advice_too(overrides, key):
    config = stack_config("private-nat")
    config["egress:privateNat"] = {**config["egress:privateNat"], **overrides}
    found = problems(config)
    assert len(found) == 1, found
    problem_key, message = found[0].split(": ", 1)
    assert problem_key == key
    assert not any(wording in message for wording in PYDANTIC_WORDING), message
    assert is_real_key(problem_key) or message.startswith("unknown key; did you mean"), message
    for mentioned in re.findall(r"\begress:[A-Za-z][\w.\[\]]*", message):
        assert is_real_key(mentioned.rstrip(".")), (mentioned, message)
