"""Problems, and the translation of pydantic's validation errors into them.

A user sees a Problem: the config key and what to do. Messages a field defines
itself (its validators' ValueErrors) pass through unchanged; the generic
structural errors (missing, unknown key, wrong choice) are worded here.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, get_origin

from pydantic import BaseModel

NAMESPACE = "egress"


class ConfigError(Exception):
    """The stack configuration is invalid; `problems` lists every finding."""

    def __init__(self, problems: Iterable[Problem]):
        self.problems = sorted(set(problems), key=lambda p: (p.key, p.message))
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(
            f"invalid stack configuration ({len(self.problems)} problem"
            f"{'s' if len(self.problems) != 1 else ''}):\n{lines}"
        )


@dataclass(frozen=True)
class Problem:
    key: str  # the config key, e.g. egress:tenants[0].upstreams[1].cidr
    message: str  # what is wrong and how to fix it

    def __str__(self) -> str:
        return f"{self.key}: {self.message}"


REQUIRED = "is required; set it in the stack file (see README, 'Configuration')"


_DID_YOU_MEAN = re.compile(r"did you mean '([^']+)'\?")


def unknown_key_fix(key: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(key, sorted(known), n=1)
    hint = f"did you mean '{close[0]}'?" if close else f"valid keys: {', '.join(sorted(known))}"
    return f"unknown key; {hint}"


def suggestion(message: str) -> str | None:
    """The key an unknown-key message suggests, if any."""
    match = _DID_YOU_MEAN.search(message)
    return match.group(1) if match else None


def config_key(prefix: str, loc: Iterable[Any]) -> str:
    """The stack file key of a value at `loc` below `prefix` (e.g. tenants[0])."""
    path = prefix
    for part in loc:
        if part == "[key]":  # pydantic's marker for an error in a mapping's key, not its value
            continue
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    if path == "region":
        return "aws:region"
    return f"{NAMESPACE}:{path}"


def describe(model: type[BaseModel], error: Any, prefix: str) -> Problem:
    """One pydantic error (an item of ValidationError.errors()) as a Problem."""
    loc = tuple(error["loc"])
    kind = error["type"]
    key = config_key(prefix, loc)
    if kind == "value_error":
        message = str(error["ctx"]["error"])
    elif kind == "missing":
        message = REQUIRED
    elif kind == "extra_forbidden":
        owner = _model_at(model, loc[:-1])
        known = {f.alias or n for n, f in owner.model_fields.items()} if owner else set()
        message = unknown_key_fix(str(loc[-1]), known)
    elif kind == "literal_error":
        message = f"{error['input']!r} is not allowed; use one of {error['ctx']['expected']}"
    else:
        message = _TYPE_MESSAGES.get(kind, "has a value of the wrong kind; see README, 'Configuration'")
        message = message.format(got=_shown(error.get("input")))
    return Problem(key, message)


# What the user wrote instead of the expected kind of value, by pydantic error type
# (https://docs.pydantic.dev/latest/errors/validation_errors/). Field rules raise
# their own messages; only the kind of value is worded here.
_TYPE_MESSAGES = {
    "int_parsing": "{got} is not a whole number; write a number such as 2",
    "int_type": "{got} is not a whole number; write a number such as 2",
    "int_from_float": "{got} is not a whole number; write a number such as 2",
    "bool_parsing": "{got} is not a yes/no value; write true or false",
    "bool_type": "{got} is not a yes/no value; write true or false",
    "string_type": "{got} is not text; quote it in the stack file",
    "list_type": "{got} is not a list; write one item per line ('- item') or [a, b]",
    "dict_type": "{got} is not a mapping; write key: value lines",
    "model_type": "{got} is not a mapping; write key: value lines",
    "model_attributes_type": "{got} is not a mapping; write key: value lines",
}


def _shown(value: Any) -> str:
    if isinstance(value, (dict, list)):
        return "a mapping" if isinstance(value, dict) else "a list"
    return repr(value)


def _model_at(model: type[BaseModel], loc: tuple[Any, ...]) -> type[BaseModel] | None:
    current: Any = model
    dict_key = False  # the next part is a key of a dict field, not a field name
    for part in loc:
        if isinstance(part, int) or dict_key:
            dict_key = False
            continue
        field = current.model_fields.get(part) or next(
            (f for f in current.model_fields.values() if f.alias == part), None
        )
        if field is None:
            return None
        annotation = field.annotation
        dict_key = get_origin(annotation) is dict
        args = getattr(annotation, "__args__", ())
        current = next((a for a in (annotation, *args) if isinstance(a, type) and issubclass(a, BaseModel)), None)
        if current is None:
            return None
    return current
