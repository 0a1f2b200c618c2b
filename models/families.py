"""The one list of model families, and the lazy import that registers them.

Mask DINO is built in: :mod:`models.registry` registers its configs and :mod:`models.peft.targets`
holds its :class:`~models.peft.targets.PeftSpec`. Every other family lives in its own package
whose import registers both its model configs (``register_model_config``) and its PEFT spec
(``register_peft_spec``). Lookups that may concern such a family (``build_model``,
``available_models``, LoRA target / adapter placement validation, ``get_peft_spec``) call
:func:`load_families` first, so no caller has to import a family package by hand.

This module imports nothing heavy (no torch): ``import models.errors`` and ``peftsweep --help``
stay as fast as before; the family packages are imported on the first lookup only.
"""

from __future__ import annotations

import importlib

__all__ = ["FAMILY_PACKAGES", "load_families"]

# family name -> package whose import registers it (Mask DINO is built in, see the docstring)
FAMILY_PACKAGES: dict[str, str] = {"seem": "models.seem"}

_loaded = False


def load_families() -> None:
    """Import every family package once (idempotent; safe to call from inside a family import).

    A package missing from this checkout is skipped; any other import error propagates, because
    it is a bug in that family, not an absent optional one.
    """
    global _loaded
    if _loaded:
        return
    # set before importing: a family package's own imports may call back into the registries
    _loaded = True
    for package in FAMILY_PACKAGES.values():
        try:
            importlib.import_module(package)
        except ModuleNotFoundError as exc:
            if exc.name != package:
                raise
