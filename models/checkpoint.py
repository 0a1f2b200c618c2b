"""Loading official Mask DINO checkpoints (and our own) with weights-only unpickling.

Formats: ``.pth``/``.pt`` (``torch.load(weights_only=True)``; a detectron2 checkpointer file
``{"model": state_dict, ...}`` or a bare state dict) and ``.pkl`` (detectron2 model-zoo pickles of
numpy arrays, read with a restricted unpickler that only admits numpy array reconstruction).

Class-count change: when the checkpoint's ``class_embed`` (or, for a model whose classes come from
a language encoder, its ``criterion.empty_weight``) has a different number of classes than the
model, the class-dependent tensors (``class_embed.weight/bias``, ``label_enc.weight``) are not
loaded but freshly initialised, and the report says so. Everything else loads key for key.

Verification (nothing silent): by default anything beyond that is an error naming the file and the
first offending keys, and the model is left untouched -- a model key the file does not provide, a
file key the model does not have, a shape that differs. Two kinds of keys are exempt, declared by
the model class: ``derived_state_keys`` (buffers rebuilt from the config, e.g.
``criterion.empty_weight``; loaded when the file has them at the same shape, never an error) and
``ignored_checkpoint_keys`` (official keys a configuration leaves out on purpose, e.g. SEEM's
spatial-prompt parts; reported as ignored). ``strict=False`` only reports (e.g. to start from a
backbone-only ImageNet file).
"""

from __future__ import annotations

import dataclasses
import io
import os
import pickle
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from models.errors import UserError

__all__ = [
    "LoadReport",
    "load_checkpoint",
    "load_state_dict_checked",
    "check_base_checkpoint",
    "save_checkpoint",
    "read_state_dict",
    "CLASS_DEPENDENT_SUFFIXES",
]

# parameters whose first dimension is the class count (re-initialised on a class-count change)
CLASS_DEPENDENT_SUFFIXES = ("class_embed.weight", "class_embed.bias", "label_enc.weight")
_DERIVED_BUFFERS = ("criterion.empty_weight",)  # for models that declare no derived_state_keys
_SHOWN = 5  # offending keys named in an error line


@dataclasses.dataclass
class LoadReport:
    """What happened when loading ``path`` into a model.

    loaded: model keys filled from the checkpoint (aliases of a loaded tensor count as loaded);
    missing: model keys the checkpoint did not provide (derived buffers are not listed);
    unexpected: checkpoint keys the model lacks (``ignored`` ones are not listed);
    reinitialised: class-dependent keys freshly initialised because the class count changed;
    shape_mismatch: other keys skipped because shapes differ, as "key: ckpt (...) vs model (...)";
    ignored: checkpoint keys the model's configuration leaves out on purpose;
    model_keys: how many keys the model's state dict has.
    """

    path: str
    loaded: list[str]
    missing: list[str]
    unexpected: list[str]
    reinitialised: list[str]
    shape_mismatch: list[str]
    checkpoint_num_classes: int | None
    model_num_classes: int | None
    ignored: list[str] = dataclasses.field(default_factory=list)
    model_keys: int = 0

    @property
    def ok(self) -> bool:
        """Nothing beyond the class-dependent heads failed to load."""
        return not (self.missing or self.unexpected or self.shape_mismatch)

    def error_line(self) -> str:
        """One line naming the file and the first offending keys of each kind ('' when ok)."""
        parts = []
        for name, keys in (
            ("missing", self.missing),
            ("unexpected", self.unexpected),
            ("shape mismatch", self.shape_mismatch),
        ):
            if keys:
                more = f", ... (+{len(keys) - _SHOWN})" if len(keys) > _SHOWN else ""
                parts.append(f"{len(keys)} {name} ({', '.join(keys[:_SHOWN])}{more})")
        if not parts:
            return ""
        total = self.model_keys or len(self.loaded) + len(self.missing) + len(self.reinitialised)
        return (
            f"{self.path}: checkpoint does not fit the model: {len(self.loaded)} of {total} keys "
            f"would load; " + "; ".join(parts)
        )

    def short(self) -> str:
        """One line for a trial's row: counts of every kind."""
        text = (
            f"loaded {len(self.loaded)}/{self.model_keys or len(self.loaded)}, "
            f"reinitialised {len(self.reinitialised)}, missing {len(self.missing)}, "
            f"unexpected {len(self.unexpected)}, shape mismatch {len(self.shape_mismatch)}, "
            f"ignored {len(self.ignored)}"
        )
        if self.reinitialised:
            text += f" (classes {self.checkpoint_num_classes} -> {self.model_num_classes})"
        return text

    def summary(self) -> str:
        lines = [f"loaded {len(self.loaded)} keys from {self.path}"]
        if self.reinitialised:
            lines.append(
                f"class count {self.checkpoint_num_classes} -> {self.model_num_classes}: re-initialised "
                + ", ".join(self.reinitialised)
            )
        for name, keys in (
            ("missing", self.missing),
            ("unexpected", self.unexpected),
            ("shape mismatch", self.shape_mismatch),
            ("ignored", self.ignored),
        ):
            if keys:
                shown = ", ".join(keys[:10]) + (f" ... (+{len(keys) - 10})" if len(keys) > 10 else "")
                lines.append(f"{name} ({len(keys)}): {shown}")
        return "\n".join(lines)


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Admits only what a pickle of numpy arrays / plain containers needs."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("collections", "OrderedDict"),
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self._ALLOWED or (module == "numpy.dtypes" and name.endswith("DType")):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a weights file")


def _to_tensor(v: Any) -> torch.Tensor | None:
    if isinstance(v, torch.Tensor):
        return v
    if isinstance(v, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(v))
    return None


def read_state_dict(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """The model state dict stored in ``path`` (tensors on CPU); UserError naming the file if it
    is missing, of an unknown type, or not a plain weights file."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"{p}: checkpoint file not found")
    suffix = p.suffix.lower()
    if suffix not in (".pth", ".pt", ".pkl"):
        raise UserError(f"{p}: unsupported checkpoint type {suffix!r} (want .pth, .pt or .pkl)")
    try:
        if suffix == ".pkl":
            with open(p, "rb") as f:
                obj = _NumpyOnlyUnpickler(io.BytesIO(f.read()), encoding="latin1").load()
        else:
            obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # unpickling refused, truncated or not a weights file at all
        raise UserError(f"{p}: cannot read weights ({_read_error(e)})") from None
    if isinstance(obj, dict) and isinstance(obj.get("model"), dict):
        obj = obj["model"]
    if not isinstance(obj, dict):
        raise UserError(f"{p}: does not hold a state dict")
    out: dict[str, torch.Tensor] = {}
    for k, v in obj.items():
        t = _to_tensor(v)
        if isinstance(k, str) and t is not None:
            out[k.removeprefix("module.")] = t
    if not out:
        raise UserError(f"{p}: holds no tensors")
    return out


def _read_error(exc: BaseException) -> str:
    """The reason a weights file could not be read, in a few words (torch's messages run long)."""
    text = str(exc)
    if "Weights only load failed" in text or isinstance(exc, pickle.UnpicklingError):
        blocked = [ln.strip() for ln in text.splitlines() if "GLOBAL" in ln or "global" in ln]
        detail = f": {blocked[0]}" if blocked else ""
        return f"refused by weights-only unpickling, it holds more than tensors{detail}"
    if "central directory" in text or isinstance(exc, EOFError):
        return "truncated or corrupt file"
    first = text.splitlines()[0] if text else ""
    return f"{type(exc).__name__}: {first}" if first else f"not a weights file ({type(exc).__name__})"


def _align_prefix(ckpt: dict[str, torch.Tensor], model_keys: set[str]) -> dict[str, torch.Tensor]:
    """Backbone-only files (ImageNet weights) lack the ``backbone.`` prefix: add it when that makes
    more keys match."""
    direct = sum(k in model_keys for k in ckpt)
    prefixed = sum(f"backbone.{k}" in model_keys for k in ckpt)
    if prefixed > direct:
        return {f"backbone.{k}": v for k, v in ckpt.items()}
    return ckpt


def _num_classes_of(sd: dict[str, torch.Tensor]) -> int | None:
    for k, v in sd.items():
        if k.endswith("class_embed.weight"):
            return int(v.shape[0])
    # a model whose classes come from a language encoder: only the no-object weights count them
    empty = sd.get("criterion.empty_weight")
    return int(empty.shape[0]) - 1 if empty is not None and empty.dim() == 1 else None


def load_checkpoint(
    model: nn.Module, path: str | os.PathLike[str], num_classes: int | None = None, *, strict: bool = True
) -> LoadReport:
    """Load ``path`` into ``model`` (in place) and report what matched.

    ``num_classes`` (optional) is the class count the caller expects the model to have; a model
    with another count is a UserError. A checkpoint with another class count re-initialises the
    class-dependent tensors (see module docstring). With ``strict`` (the default) a file that does
    not fit otherwise is a UserError naming it and the first offending keys, and nothing is loaded.
    """
    model_sd = model.state_dict()
    model_nc = _num_classes_of(model_sd)
    if num_classes is not None and model_nc is not None and num_classes != model_nc:
        raise UserError(f"num_classes: model has {model_nc} classes but {num_classes} were requested")
    ckpt = _align_prefix(read_state_dict(path), set(model_sd))
    return load_state_dict_checked(model, ckpt, str(path), strict=strict)


def load_state_dict_checked(
    model: nn.Module, ckpt: dict[str, torch.Tensor], source: str, *, strict: bool = True
) -> LoadReport:
    """:func:`load_checkpoint` for a state dict already in memory (``source`` names it in messages)."""
    model_sd = model.state_dict(keep_vars=True)
    model_nc = _num_classes_of(model_sd)
    ckpt_nc = _num_classes_of(ckpt)
    class_change = ckpt_nc is not None and model_nc is not None and ckpt_nc != model_nc
    derived = set(getattr(model, "derived_state_keys", _DERIVED_BUFFERS))
    ignorable = set(getattr(model, "ignored_checkpoint_keys", ()))

    to_load: dict[str, torch.Tensor] = {}
    reinit: list[str] = []
    mismatch: list[str] = []
    unexpected: list[str] = []
    ignored: list[str] = []
    for k, v in ckpt.items():
        if k not in model_sd:
            (ignored if k in ignorable else unexpected).append(k)
            continue
        if class_change and k.endswith(CLASS_DEPENDENT_SUFFIXES):
            reinit.append(k)
            continue
        if tuple(v.shape) != tuple(model_sd[k].shape):
            if k not in derived:  # a derived buffer keeps the model's own (config's) value
                mismatch.append(f"{k}: ckpt {tuple(v.shape)} vs model {tuple(model_sd[k].shape)}")
            continue
        to_load[k] = v

    # a key counts as loaded when any key aliasing the same tensor object was loaded
    loaded_ids = {id(model_sd[k]) for k in to_load}
    loaded = [k for k in model_sd if k in to_load or id(model_sd[k]) in loaded_ids]
    missing = [k for k in model_sd if k not in loaded and k not in reinit and k not in derived]
    report = LoadReport(
        source, loaded, missing, unexpected, reinit, mismatch, ckpt_nc, model_nc, ignored, len(model_sd)
    )
    if strict and not report.ok:
        raise UserError(report.error_line())
    model.load_state_dict(to_load, strict=False)
    if class_change:
        for m in model.modules():
            reset = getattr(m, "reset_class_parameters", None)
            if callable(reset):
                reset()
    return report


def check_base_checkpoint(model_name: str, path: str | os.PathLike[str]) -> LoadReport:
    """Verify that ``path`` is a base for the registered model ``model_name`` without building its
    weights (the model is made on the meta device): a sweep calls it before any trial starts, so a
    wrong base fails once, naming the file, instead of in every trial. Returns the report; a file
    that does not fit is a UserError as in :func:`load_checkpoint`."""
    from models.registry import MODEL_CONFIGS, get_model_config

    cfg = get_model_config(model_name)  # the registered class count: a class change is allowed anyway
    with torch.device("meta"):
        model = MODEL_CONFIGS[model_name].builder(cfg)
    ckpt = _align_prefix(read_state_dict(path), set(model.state_dict()))
    report = load_state_dict_checked(model, ckpt, str(path), strict=False)
    if not report.ok:
        raise UserError(report.error_line().replace(" the model:", f" the model {model_name}:", 1))
    return report


def save_checkpoint(
    model: nn.Module, path: str | os.PathLike[str], meta: dict[str, Any] | None = None
) -> None:
    """Write ``{"model": state_dict, "meta": meta}`` atomically (temp file + os.replace).

    ``meta`` must hold only plain values (str, int, float, bool, None, lists/dicts of them) so that
    the file stays loadable with weights-only unpickling.
    """
    meta = dict(meta or {})
    _check_plain(meta, "meta")
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    # one CPU copy per distinct tensor, so aliased keys stay shared in the file
    copies: dict[int, torch.Tensor] = {}
    sd = {}
    for k, v in model.state_dict().items():
        key = v.data_ptr() if v.numel() else id(v)
        if key not in copies:
            copies[key] = v.detach().cpu()
        sd[k] = copies[key]
    fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=f".{p.name}.", suffix=".tmp")
    os.close(fd)
    try:
        torch.save({"model": sd, "meta": meta}, tmp)
        os.replace(tmp, p)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _check_plain(obj: Any, where: str) -> None:
    if obj is None or isinstance(obj, (str, int, float, bool)):
        return
    if isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            _check_plain(v, f"{where}[{i}]")
        return
    if isinstance(obj, dict):
        for k, v in obj.items():
            if not isinstance(k, str):
                raise UserError(f"{where}: keys must be strings, got {k!r}")
            _check_plain(v, f"{where}.{k}")
        return
    raise UserError(f"{where}: unsupported value of type {type(obj).__name__} (plain values only)")
