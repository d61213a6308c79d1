"""Stack configuration -> validated, typed settings.

The stack file is the public contract. Every problem in it is reported at once,
each naming its config key and the fix, before any resource is registered.

- models.py: the typed shape of every key, each field with its own messages;
- errors.py: Problem, ConfigError, and pydantic's errors worded as Problems;
- checks.py: checks that relate several values;
- aws_rules.py: rules AWS enforces (secondary range associations, partitions), as data;
- sizing.py: default subnet sizes, from the size of the range they are carved from;
- load.py: a Pulumi config map -> Settings, running models, errors and checks in turn.

Scalar defaults live in Pulumi.yaml (the CLI applies them; so does the offline
engine); defaults of object-valued keys live in models.py.
"""

from .errors import NAMESPACE, ConfigError, Problem
from .load import DISABLE_DEFAULT_PROVIDERS, _field_adapter, load_settings
from .models import (
    MAX_AZS,
    NAT_GATEWAY_MAX_IPS,
    PATTERN_NAMES,
    PRIVATE_RANGES,
    RFC1918,
    NatProfile,
    NodeGroupSize,
    OnPremDns,
    PatternName,
    PrivateNatOptions,
    Settings,
    Tenant,
    TenantQuota,
    Upstream,
)

__all__ = [
    "DISABLE_DEFAULT_PROVIDERS", "MAX_AZS", "NAMESPACE", "NAT_GATEWAY_MAX_IPS", "PATTERN_NAMES", "PRIVATE_RANGES", "RFC1918",
    "ConfigError", "NatProfile", "NodeGroupSize", "OnPremDns", "PatternName", "PrivateNatOptions", "Problem",
    "Settings", "Tenant", "TenantQuota", "Upstream", "_field_adapter", "load_settings",
]
