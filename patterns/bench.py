"""Program evaluation cost under the mock engine as the tenant count grows.

Not a timed test: the numbers depend on the machine. Target here: linear
growth (about constant ms per resource) and under 3 ms per resource."""

from __future__ import annotations

import copy
import time

import pulumi
import pulumi_aws as aws
from pulumi.runtime import mocks as pulumi_mocks
from pulumi.runtime.settings import reset_options
from pulumi.runtime.stack import run_pulumi_func
from pulumi.runtime.sync_await import _sync_await

from . import offline


def synthetic_config(pattern: str, tenants: int) -> dict:
    config = copy.deepcopy(offline.read_stack_file(offline.stack_path(pattern)))
    template = config["egress:tenants"][0]
    config["egress:vpcCidr"] = "10.0.0.0/12"  # room for 100+ tenant slots
    config["egress:egressSubnetPrefix"] = 21  # room for 100+ NAT profiles or egress IPs
    config["egress:tenantSubnetPrefix"] = 25  # 128 tenant slots in a /16 secondary range
    config["egress:onPremCidrs"] = ["10.100.0.0/14"]
    config["egress:tenants"] = [
        {
            **{k: v for k, v in template.items()
               if k not in ("name", "namespace", "slot", "upstreams", "iamRoleArn", "egressProfile")},
            "name": f"app{i:03d}",
            "upstreams": [
                {**u, "cidr": "10.100.0.0/24"} for u in template["upstreams"]
            ],
        }
        for i in range(tenants)
    ]
    return config


class _EchoMocks(pulumi_mocks.Mocks):
    def new_resource(self, args):
        return f"{args.name}-id", dict(args.inputs)

    def call(self, args):
        return {}


def sdk_baseline_ms(resources: int) -> float:
    """What the Pulumi SDK itself costs per typed resource under its stock mocks:
    the floor this program's evaluation is compared against."""
    reset_options(project="baseline", stack="baseline")
    pulumi.runtime.set_mocks(_EchoMocks(), project="baseline", stack="baseline", preview=False)

    def program() -> None:
        vpc = aws.ec2.Vpc("vpc", cidr_block="10.0.0.0/16")
        for i in range(resources):
            aws.ec2.Subnet(f"s{i}", vpc_id=vpc.id, cidr_block=f"10.0.{i % 256}.0/24", tags={"i": str(i)})

    start = time.perf_counter()
    _sync_await(run_pulumi_func(program))
    return 1000 * (time.perf_counter() - start) / (resources + 1)


def run_benchmark(counts: list[int], pattern: str) -> int:
    offline.run("warm-up", synthetic_config(pattern, 2))
    baseline = sdk_baseline_ms(1000)
    print(f"Pulumi SDK alone: {baseline:.2f} ms per typed resource under its stock mocks")
    print(f"pattern {pattern}")
    print(f"{'tenants':>8} {'resources':>10} {'seconds':>8} {'ms/resource':>12}")
    rows = []
    for count in counts:
        config = synthetic_config(pattern, count)
        start = time.perf_counter()
        graph = offline.run(f"bench-{count}", config)
        seconds = time.perf_counter() - start
        rows.append((count, len(graph.resources), seconds))
        print(f"{count:>8} {len(graph.resources):>10} {seconds:>8.2f} {1000 * seconds / len(graph.resources):>12.2f}")
    (_, r0, s0), (_, r1, s1) = rows[0], rows[-1]
    growth = (s1 / r1) / (s0 / r0)
    print(f"cost per resource, largest vs smallest stack: x{growth:.2f} (1.0 = linear)")
    print(f"largest stack vs the SDK alone: x{1000 * s1 / r1 / baseline:.2f} per resource")
    return 0
