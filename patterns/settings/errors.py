"""Problems, and the translation of pydantic's validation errors into them.

A user sees a Problem: the config key and what to do. Messages a field defines
itself (its validators' ValueErrors) pass through unchanged; the generic
structural errors (missing, unknown key, wrong choice) are worded here.
"""

from __future__ import annotations

import difflib
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


def unknown_key_fix(key: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(key, sorted(known), n=1)
    hint = f"did you mean '{close[0]}'?" if close else f"valid keys: {', '.join(sorted(known))}"
    return f"unknown key; {hint}"


def config_key(prefix: str, loc: Iterable[Any]) -> str:
    """The stack file key of a value at `loc` below `prefix` (e.g. tenants[0])."""
    path = prefix
    for part in loc:
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
        message = f"{error['msg'].rstrip('.')} (got {error.get('input')!r})"
    return Problem(key, message)


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
