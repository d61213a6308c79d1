"""Entry point for `pulumi up -s <stack>`: read the stack config and the stack's
own outputs from its last deploy, deploy the selected egress pattern, export
the per-tenant allow-list and the assignment the next run reads back."""

import pulumi
from pulumi.runtime.config import CONFIG, get_config_env

from patterns.program import deploy, plan_from_config
from patterns.settings import ConfigError

# The stack's outputs from its last deploy, read synchronously before anything
# is planned: the plan stays pure and known before any resource exists. This
# is the engine's built-in invoke behind StackReference outputs (the Node.js
# SDK's StackReference.getOutputValue calls it the same way; pulumi/pulumi
# pkg/resource/deploy/builtins.go): it returns {} for a stack with no deploy
# yet, and works in `pulumi preview` too.
READ_STACK_OUTPUTS = "pulumi:pulumi:readStackOutputs"
this_stack = f"{pulumi.get_organization()}/{pulumi.get_project()}/{pulumi.get_stack()}"
previous_outputs = pulumi.runtime.invoke(READ_STACK_OUTPUTS, {"name": this_stack}).value["outputs"]

try:
    plan = plan_from_config(pulumi.get_stack(), {**get_config_env(), **CONFIG.get()}, previous_outputs)
except ConfigError as error:
    # A user mistake: show the list of problems, not a Python traceback.
    raise pulumi.RunError(str(error)) from None

for warning in plan.warnings:
    pulumi.log.warn(warning)
for key, value in deploy(plan).items():
    pulumi.export(key, value)
