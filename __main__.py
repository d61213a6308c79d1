"""Entry point for `pulumi up -s <stack>`: read the stack config, deploy the
selected egress pattern, export the per-tenant allow-list."""

import pulumi
from pulumi.runtime.config import CONFIG, get_config_env

from patterns.program import deploy, plan_from_config
from patterns.settings import ConfigError

try:
    plan = plan_from_config(pulumi.get_stack(), {**get_config_env(), **CONFIG.get()})
except ConfigError as error:
    # A user mistake: show the list of problems, not a Python traceback.
    raise pulumi.RunError(str(error)) from None

for warning in plan.warnings:
    pulumi.log.warn(warning)
for key, value in deploy(plan).items():
    pulumi.export(key, value)
