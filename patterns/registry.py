"""The patterns this program can deploy, by the name `egress:pattern` takes."""

from __future__ import annotations

from . import cilium, istio, private_nat, subnet_cidr
from .plan import PatternSpec

PATTERNS: dict[str, PatternSpec] = {
    spec.name: spec for spec in (subnet_cidr.SPEC, private_nat.SPEC, cilium.SPEC, istio.SPEC)
}
