"""What the program needs to know about an EC2 instance type, from its name and
from AWS's published limits: its CPU architecture and its network interfaces."""

from __future__ import annotations

import re
from dataclasses import dataclass

# EC2 names a type series + generation + options, then the size: m7gd.xlarge
# (https://docs.aws.amazon.com/ec2/latest/instancetypes/instance-type-names.html).
# The option letter "g" marks AWS Graviton (arm64) processors; a1 is the first Graviton.
_NAME = re.compile(r"(?P<series>[a-z]+)(?P<generation>\d+)(?P<options>[a-z0-9-]*)\.(?P<size>[a-z0-9]+)")


def architecture(instance_type: str) -> str:
    """"arm64" for Graviton types, else "x86_64"."""
    name = _NAME.fullmatch(instance_type)
    if name is None:
        return "x86_64"
    graviton = "g" in name["options"] or (name["series"], name["generation"]) == ("a", "1")
    return "arm64" if graviton else "x86_64"


# EKS AMI types of Amazon Linux 2023 per architecture (EKS API, Nodegroup amiType).
AMI_TYPES = {"x86_64": "AL2023_x86_64_STANDARD", "arm64": "AL2023_ARM_64_STANDARD"}


def ami_type(instance_type: str) -> str:
    return AMI_TYPES[architecture(instance_type)]
