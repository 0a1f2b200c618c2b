"""The base of every PEFT method config: a frozen dataclass whose fields carry help text.

Each method (``models/peft/<method>/config.py``) subclasses :class:`MethodConfig`, sets the class
variable ``method`` and implements :meth:`MethodConfig.validate`. :func:`make_config` builds one
from loose values (CLI strings, YAML lists) and turns every problem into a
:class:`models.errors.UserError` whose message names the field, e.g.
``adapter.repetitions must be 1..4, got 5``.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar, TypeVar

from models.errors import UserError

__all__ = [
    "MethodConfig",
    "make_config",
    "config_fields_help",
    "check_choice",
    "check_patterns",
    "check_range",
]

C = TypeVar("C", bound="MethodConfig")


@dataclasses.dataclass(frozen=True)
class MethodConfig:
    """Fields shared by every method.

    ``extra_trainable``: regular expressions; a parameter becomes trainable when a pattern
    full-matches its name or the name of a module above it (see :mod:`models.peft.trainable`).
    """

    method: ClassVar[str] = ""

    extra_trainable: tuple[str, ...] = dataclasses.field(
        default=(),
        metadata={
            "help": "extra regex patterns of parameter/module names to train on top of the method's set "
            "(full match on a parameter name or on one of its module prefixes)"
        },
    )

    def validate(self) -> None:
        """Raise UserError naming the field when a value is out of range. Subclasses extend."""
        check_patterns(self.method, "extra_trainable", self.extra_trainable)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict including ``method`` (lists for tuples); :func:`make_config` inverts it."""
        out: dict[str, Any] = {"method": self.method}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            out[f.name] = list(value) if isinstance(value, tuple) else value
        return out


def config_fields_help(cls: type[MethodConfig]) -> dict[str, str]:
    """field name -> help text, for CLI/docs."""
    return {f.name: str(f.metadata.get("help", "")) for f in dataclasses.fields(cls)}


def _coerce(method: str, name: str, annotation: Any, value: Any) -> Any:
    """Convert a loose value (string from a CLI, list from YAML) to the field's declared type."""
    origin = typing.get_origin(annotation)
    if annotation is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "false", "0", "no"):
            return value.lower() in ("true", "1", "yes")
        raise UserError(f"{method}.{name} must be a boolean, got {value!r}")
    if annotation is int:
        if isinstance(value, bool):
            raise UserError(f"{method}.{name} must be an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
        raise UserError(f"{method}.{name} must be an integer, got {value!r}")
    if annotation is float:
        if isinstance(value, bool):
            raise UserError(f"{method}.{name} must be a number, got {value!r}")
        if isinstance(value, int | float):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise UserError(f"{method}.{name} must be a number, got {value!r}")
    if annotation is str:
        if isinstance(value, str):
            return value
        raise UserError(f"{method}.{name} must be a string, got {value!r}")
    if origin is tuple:
        if isinstance(value, str):
            items: list[Any] = [v.strip() for v in value.split(",") if v.strip()]
        elif isinstance(value, Iterable):
            items = list(value)
        else:
            raise UserError(f"{method}.{name} must be a list, got {value!r}")
        (item_type, *_rest) = typing.get_args(annotation)
        return tuple(_coerce(method, name, item_type, v) for v in items)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if value is None:
            return None
        return _coerce(method, name, args[0], value)
    return value


def make_config(cls: type[C], params: Mapping[str, Any]) -> C:
    """Build and validate ``cls`` from loose ``params``; unknown or bad fields -> UserError."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for name, value in params.items():
        if name == "method":
            if value != cls.method:
                raise UserError(f"method must be {cls.method!r} for this config, got {value!r}")
            continue
        if name not in fields:
            raise UserError(f"{cls.method}: unknown field {name!r}; allowed: {', '.join(sorted(fields))}")
        kwargs[name] = _coerce(cls.method, name, hints[name], value)
    config = cls(**kwargs)
    config.validate()
    return config


def check_range(method: str, name: str, value: float, lo: float | None, hi: float | None, text: str) -> None:
    """UserError ``<method>.<name> must be <text>, got <value>`` unless lo <= value <= hi."""
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise UserError(f"{method}.{name} must be {text}, got {value!r}")


def check_choice(method: str, name: str, value: str, allowed: Iterable[str]) -> None:
    allowed = list(allowed)
    if value not in allowed:
        raise UserError(f"{method}.{name} must be one of {', '.join(allowed)}; got {value!r}")


def check_patterns(method: str, name: str, patterns: Iterable[str]) -> None:
    for pattern in patterns:
        try:
            re.compile(pattern)
        except re.error as exc:
            raise UserError(f"{method}.{name}: bad regular expression {pattern!r} ({exc})") from None
