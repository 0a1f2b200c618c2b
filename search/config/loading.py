"""Reading a sweep config: YAML -> validated :class:`~search.config.schema.SweepConfig`.

Contract: :func:`load_config` / :func:`parse_config` return a validated config or raise
:class:`models.errors.UserError` naming the file and the field path (``space.lora.rank``) of every
problem at once -- unknown keys, missing fields and wrong types alike -- and, for enumerations, the
allowed values. The first line is ``<file>: <field>: <problem>`` (with "(N problems)" when there
are more); each further problem follows on its own line in the same form.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from models.errors import UserError
from search.config.schema import SweepConfig

__all__ = ["parse_config", "load_config", "absolutize_paths", "dump_config"]


def _loc(loc: tuple[int | str, ...]) -> str:
    parts: list[str] = []
    for item in loc:
        if isinstance(item, int):
            parts.append(f"[{item}]")
        elif item.startswith(("function-", "literal[", "list[", "float", "int", "str")) and parts:
            # pydantic adds validator/type tags to the location; they are not config keys.
            continue
        else:
            parts.append(("." if parts else "") + item)
    return "".join(parts) or "<root>"


def _message(err: dict[str, Any]) -> str:
    msg = str(err.get("msg", "invalid"))
    msg = msg.removeprefix("Value error, ")
    kind = str(err.get("type", ""))
    if kind == "extra_forbidden":
        msg = "unknown key (not allowed)"
    elif kind == "missing":
        msg = "required (missing)"
    elif kind == "literal_error":
        ctx = err.get("ctx") or {}
        msg = f"got {err.get('input')!r}; allowed: {ctx.get('expected', '')}"
    elif kind.endswith(("_type", "_parsing")) and not isinstance(err.get("input"), dict | list):
        msg = f"{msg} (got {err.get('input')!r})"  # wrong types: show what was given
    return msg


def parse_config(data: Any, *, source: str = "config") -> SweepConfig:
    """Validate a mapping; raise UserError naming ``source: field.path: problem``."""
    if not isinstance(data, dict):
        raise UserError(f"{source}: top level must be a mapping")
    try:
        return SweepConfig.model_validate(data)
    except ValidationError as exc:
        problems = [f"{source}: {_loc(tuple(e['loc']))}: {_message(dict(e))}" for e in exc.errors()]
        problems = list(dict.fromkeys(problems))  # pydantic may report one problem per union branch
        if len(problems) > 1:
            problems[0] += f" ({len(problems)} problems)"
        raise UserError("\n".join(problems)) from None


def load_config(path: str | os.PathLike[str]) -> SweepConfig:
    """Read and validate a YAML sweep config."""
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise UserError(f"{p}: cannot read ({exc.strerror})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise UserError(f"{p}: not valid YAML ({str(exc).splitlines()[0]})") from None
    return absolutize_paths(parse_config(data, source=str(p)), p.resolve().parent)


def _absolute(value: str | None, base: Path) -> str | None:
    """``value`` made absolute against ``base``; URIs (``s3://...``) and absolute paths unchanged."""
    if value is None or "://" in value or os.path.isabs(value):
        return value
    return str((base / value).resolve())


def absolutize_paths(config: SweepConfig, base: Path) -> SweepConfig:
    """Relative file paths of a config resolved against ``base`` (the config file's folder).

    Ray workers run in their own working directories, so every path a trial reads must be
    absolute by the time the driver hands the config to Tune.
    """
    model = config.model.model_copy(update={"base_checkpoint": _absolute(config.model.base_checkpoint, base)})
    models = (
        None
        if config.models is None
        else [
            m.model_copy(update={"base_checkpoint": _absolute(m.base_checkpoint, base)})
            for m in config.models
        ]
    )
    keys = ("train_json", "train_images", "eval_json", "eval_images")
    domains = [d.model_copy(update={k: _absolute(getattr(d, k), base) for k in keys}) for d in config.domains]
    return config.model_copy(
        update={
            "model": model,
            "models": models,
            "domains": domains,
            "output_dir": _absolute(config.output_dir, base),
            "results": _absolute(config.results, base),
        }
    )


def dump_config(config: SweepConfig) -> str:
    """YAML text that :func:`parse_config` reads back to an equal config."""
    # With a models list the single `model` is not part of the config (giving both is an error).
    skip = {"model"} if config.models is not None else None
    return yaml.safe_dump(config.model_dump(mode="json", exclude=skip), sort_keys=False)
