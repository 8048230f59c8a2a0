"""One way to check what users give hpctrain: experiment configs, cluster profiles and job
requests are pydantic models built through `parse`, so every bad value is reported the same
way, in one line, before anything is queued or any rank starts:

    <origin>: unknown key(s) epoch; known: experiment, data, model, ...
    <origin>: epochs='three' should be int
    <origin>: epochs must be >= 1, got 0          (a model's own checks, raised as ValueError)

Models are strict (no "3" -> 3, no true -> 1); an int is accepted where a float is expected.
"""

from __future__ import annotations

import types
import typing
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError


class InputError(ValueError):
    """Bad user input (config, profile, job request, data); the message is one line."""


class StagingError(InputError):
    """Bad staging input or a bad staged file; the message is one line naming the problem."""


class Checked(BaseModel):
    """Base of every validated model: unknown keys are errors, types are strict."""

    model_config = ConfigDict(extra="forbid", strict=True, validate_default=False)


M = TypeVar("M", bound=Checked)


def _type_name(model: type[BaseModel], key: str) -> str:
    field = model.model_fields.get(key)
    if field is None:
        return "?"
    ann = field.annotation
    origin, args = typing.get_origin(ann), typing.get_args(ann)
    if origin in (typing.Union, types.UnionType):
        names = [a.__name__ for a in args if a is not type(None)]
        return f"{' | '.join(names)} or null"
    if origin in (list, tuple):
        inner = args[0].__name__ if args else "?"
        return f"list[{inner}]"
    return getattr(ann, "__name__", str(ann))


def _one_line(model: type[BaseModel], error: ValidationError, origin: str,
              values: dict) -> str:
    first = error.errors()[0]
    loc = [str(p) for p in first["loc"]]
    prefix = f"{origin}: " if origin else ""
    if first["type"] == "extra_forbidden":
        unknown = sorted(k for k in values if k not in model.model_fields)
        known = ", ".join(model.model_fields)
        return f"{prefix}unknown key(s) {', '.join(unknown)}; known: {known}"
    if first["type"] == "missing":
        return f"{prefix}missing required key(s) {', '.join(loc)}"
    if first["type"] in ("value_error", "assertion_error"):
        msg = str(first.get("ctx", {}).get("error") or first["msg"])
        return prefix + msg.removeprefix("Value error, ")
    key = loc[0] if loc else "?"
    value = values.get(key)
    want = _type_name(model, key)
    if len(loc) > 1 and want.startswith("list["):  # a bad element
        kind = {"list[int]": "integers", "list[float]": "numbers", "list[str]": "strings"}
        return f"{prefix}{key}={value!r} should be a list of {kind.get(want, want)}"
    return f"{prefix}{key}={value!r} should be {want}"


def parse(model: type[M], values: dict[str, Any], origin: str,
          error: type[InputError] = InputError) -> M:
    """`model(**values)`, or `error` with one line naming the first problem."""
    try:
        return model.model_validate(values)
    except ValidationError as e:
        raise error(" ".join(_one_line(model, e, origin, values).split())) from None


def read_mapping(path: Path, error: type[InputError] = InputError) -> dict[str, Any]:
    """A YAML file whose top level is a mapping (a config or a profile), or `error`."""
    import yaml

    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise error(f"{path}: invalid YAML ({' '.join(str(e).split())})") from None
    if not isinstance(data, dict):
        raise error(f"{path}: the top level must be a mapping of keys")
    return data
