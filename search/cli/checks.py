"""Checks the commands run on their inputs before any work starts, so bad input ends as one line
naming the field or file (:class:`models.errors.UserError`) and nothing is half-written.

- :func:`writable_dir`: an output folder that can be created or written (optionally empty).
- :func:`preflight_sweep`: a sweep config's files -- the base checkpoint fits the model (checked on
  the meta device, no weights built), COCO domains' files exist and parse -- and its output folder.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from models.errors import UserError

__all__ = ["writable_dir", "preflight_sweep", "preflight_select"]


def writable_dir(path: str | os.PathLike[str], field: str, *, must_be_empty: bool = False) -> Path:
    """``path`` as a folder this process can create or write into; creates nothing.

    UserError ``<field>: <path>: ...`` when it is a file, lies under a file, is not writable or
    (``must_be_empty``) already holds something.
    """
    p = Path(path).expanduser()
    if p.exists():
        if not p.is_dir():
            raise UserError(f"{field}: {p}: exists and is not a folder")
        if must_be_empty and any(p.iterdir()):
            raise UserError(f"{field}: {p}: exists and is not empty (choose a new folder)")
        if not os.access(p, os.W_OK | os.X_OK):
            raise UserError(f"{field}: {p}: cannot write there (permission denied)")
        return p
    parent = p.absolute().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise UserError(f"{field}: {p}: cannot be created ({parent} is a file)")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UserError(f"{field}: {p}: cannot be created (no write permission in {parent})")
    return p


def _is_local(path: str | None) -> bool:
    return bool(path) and "://" not in str(path)


def preflight_sweep(config: Any, *, new: bool = True) -> None:
    """What a sweep can check before Ray starts (see module docstring); UserError on the first
    problem, naming the config field and the file. ``new``: a fresh sweep (``run``), whose output
    folder must not hold another sweep."""
    from models.registry import available_models

    # one model, or (multi-model sweeps) a list of them: each is checked under its own field path
    listed = getattr(config, "models", None)
    models = [(f"models[{i}]", m) for i, m in enumerate(listed)] if listed else [("model", config.model)]
    for field, model in models:
        if model.name not in available_models():
            raise UserError(
                f"{field}.name: unknown model {model.name!r}; allowed: {', '.join(available_models())}"
            )
    if "://" not in config.output_dir:
        out = writable_dir(config.output_dir, "output_dir")
        if new and (out / "sweep.json").exists():
            raise UserError(
                f"output_dir: {out}: already holds a sweep; use 'peftsweep resume {out}' or another folder"
            )
    for i, dom in enumerate(config.domains):
        if dom.synthetic:
            continue
        for key, is_dir in (
            ("train_json", False),
            ("train_images", True),
            ("eval_json", False),
            ("eval_images", True),
        ):
            value = getattr(dom, key)
            if not _is_local(value):
                continue
            ok = Path(value).is_dir() if is_dir else Path(value).is_file()
            if not ok:
                kind = "folder" if is_dir else "file"
                raise UserError(f"domains[{i}].{key}: {value}: no such {kind}")
        from models.data.check import check_coco_dataset

        for js, images in ((dom.train_json, dom.train_images), (dom.eval_json, dom.eval_images)):
            if _is_local(js) and _is_local(images):
                check_coco_dataset(js, images, read_images=False)
    for field, model in models:
        base = model.base_checkpoint
        if _is_local(base):
            from models.checkpoint import check_base_checkpoint

            if not Path(base).is_file():
                raise UserError(f"{field}.base_checkpoint: {base}: no such file")
            check_base_checkpoint(model.name, base)


def preflight_select(args: Any) -> None:
    """``peftsweep select``'s inputs before any pilot runs: the dataset files exist (their content
    is checked by the selection itself), the base checkpoint fits ``--model``, the output folder
    can be written."""
    for flag, js, img_flag, images in (
        ("--data", args.data, "--images", args.images),
        ("--eval-data", args.eval_data, "--eval-images", args.eval_images),
    ):
        if js is None:
            continue
        if not Path(js).is_file():
            raise UserError(f"{flag}: not found: {js}")
        if not Path(images).is_dir():
            raise UserError(f"{img_flag}: {images}: no such folder")
    if args.base and _is_local(args.base):
        from models.checkpoint import check_base_checkpoint

        if not Path(args.base).is_file():
            raise UserError(f"--base: not found: {args.base}")
        check_base_checkpoint(args.model, args.base)
    if args.out:
        writable_dir(args.out, "--out")
