"""Save / load the adapted weights of a PEFT model; peft-library methods in peft's own format.

An artifact is a folder:

- ``adapter_config.json`` + ``adapter_model.safetensors`` (LoRA and its variants, LoHa, IA3): peft's
  format, written from ``model.peft_config`` and ``get_peft_model_state_dict``; the safetensors
  metadata carries ``peftsweep_base_fingerprint``, ``peftsweep_base_model`` and
  ``peftsweep_method``. peft itself loads it (``set_peft_model_state_dict`` after our injection, or
  ``PeftModel.from_pretrained`` once the split attentions exist: :func:`peft_model_from_artifact`).
- ``trainable.safetensors``: every other tensor that trains (the head recipe, re-initialised
  modules, ``extra_trainable``; the bottleneck adapters), one key per distinct tensor (aliases of
  a shared module are stored once and restored through any alias, being the same tensor).
- ``peftsweep.json``: ``format``, ``version``, ``method`` (the method config as a dict),
  ``base_model``, ``base_fingerprint``, ``reinitialized``, ``split_attentions`` (MultiheadAttention
  modules whose q/k/v were split so peft could adapt q and v) and the stored keys.

The fingerprint identifies the frozen base: sha256 over the sorted ``(key, shape, dtype, digest)``
of every frozen parameter that is not an adapter tensor (keys without peft's ``.base_layer``),
where ``digest`` is a cheap content hash (:func:`models.peft.library.inject.tensor_digest`).
Trainable parameters are left out (they change in training), so the fingerprint of a base before
and after training is the same; weights an initialisation rewrites (PiSSA, OLoRA) enter with their
digest from before the rewrite. :func:`load_artifact` applies the method to a fresh base, compares
fingerprints and fails with a one-line UserError naming the artifact on a mismatch.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from models.errors import UserError
from models.peft.config import MethodConfig
from models.peft.library import LibraryConfig, peft_layers
from models.peft.library.inject import BASE_DIGESTS_ATTR, tensor_digest
from models.peft.registry import PEFT_INFO_ATTR, PeftModelInfo, apply_method, config_from_dict
from models.peft.split_attention import SplitAttention, split_attention
from models.peft.targets import PeftSpec
from models.peft.trainable import is_peft_param

__all__ = [
    "save_artifact",
    "load_artifact",
    "read_manifest",
    "peft_model_from_artifact",
    "base_fingerprint",
    "ARTIFACT_FORMAT",
    "ADAPTER_CONFIG",
    "ADAPTER_WEIGHTS",
    "TRAINABLE_FILE",
    "MANIFEST_FILE",
]

ARTIFACT_FORMAT = "peftsweep-peft-artifact"
ARTIFACT_VERSION = 2
ADAPTER_CONFIG = "adapter_config.json"  # peft's names (peft.utils.CONFIG_NAME / SAFETENSORS_WEIGHTS_NAME)
ADAPTER_WEIGHTS = "adapter_model.safetensors"
TRAINABLE_FILE = "trainable.safetensors"
MANIFEST_FILE = "peftsweep.json"
FINGERPRINT_KEY = "peftsweep_base_fingerprint"
# PeftModel wraps a model as base_model.model; its saved adapter keys carry that prefix.
PEFT_PREFIX = "base_model.model."


def _base_key(key: str) -> str:
    return ".".join(part for part in key.split(".") if part != "base_layer")


def base_fingerprint(model: nn.Module) -> str:
    """Fingerprint of the frozen, non-adapter parameters of ``model`` (see module docstring)."""
    if any(layer.merged for _, layer in peft_layers(model)):
        raise ValueError("adapters are merged into the base weights; unmerge before fingerprinting")
    before: dict[str, str] = getattr(model, BASE_DIGESTS_ATTR, {})
    entries = []
    for key, param in model.named_parameters(remove_duplicate=False):
        if param.requires_grad or is_peft_param(key):
            continue
        name = _base_key(key)
        digest = before.get(name) or tensor_digest(param)
        entries.append(f"{name}|{tuple(param.shape)}|{param.dtype}|{digest}")
    h = hashlib.sha256()
    for line in sorted(entries):
        h.update(line.encode())
        h.update(b"\n")
    return h.hexdigest()


def _trainable_state(model: nn.Module, library: bool) -> dict[str, torch.Tensor]:
    """Tensors for ``trainable.safetensors``: trainable or (non-library) PEFT ones, one key each."""
    out: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for key, param in model.named_parameters(remove_duplicate=False):
        if id(param) in seen:
            continue
        if library and is_peft_param(key):
            continue  # in adapter_model.safetensors
        if param.requires_grad or is_peft_param(key):
            seen.add(id(param))
            out[key] = param.detach().to("cpu").contiguous()
    return out


def _write_folder(target: Path, fill: Any) -> None:
    """Write a folder atomically: ``fill(tmp)`` into a temp folder, then rename it into place."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        fill(tmp)
        if target.exists():
            # os.replace cannot swap a non-empty folder: move the old one aside first
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old.", dir=target.parent))
            os.replace(target, old / "x")
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def save_artifact(
    model: nn.Module, config: MethodConfig, path: str | os.PathLike[str], base_name: str
) -> Path:
    """Write the artifact folder ``path`` atomically; an existing artifact there is replaced.

    ``model`` must have had ``config`` applied with :func:`models.peft.apply_method`; adapters must
    not be merged (save before :func:`models.peft.merge_for_inference`).
    """
    from peft import get_peft_model_state_dict

    info = getattr(model, PEFT_INFO_ATTR, None)
    if not isinstance(info, PeftModelInfo):
        raise ValueError("save_artifact: apply_method was not run on this model")
    if info.config != config:
        raise ValueError(f"save_artifact: config {config} differs from the applied {info.config}")
    library = isinstance(config, LibraryConfig)
    if library and len(peft_layers(model)) != len(info.injected):
        # merge_for_inference folded the adapters into the base weights: nothing adapted is left
        raise ValueError("save_artifact: adapters were merged for inference; save before merging")
    fingerprint = base_fingerprint(model)
    manifest: dict[str, Any] = {
        "format": ARTIFACT_FORMAT,
        "version": ARTIFACT_VERSION,
        "method": config.to_dict(),
        "base_model": base_name,
        "base_fingerprint": fingerprint,
        "reinitialized": list(info.reinitialized),
        "split_attentions": [n for n, m in model.named_modules() if isinstance(m, SplitAttention)],
    }
    trainable = _trainable_state(model, library)
    manifest["trainable_keys"] = sorted(trainable)
    adapter: dict[str, torch.Tensor] = {}
    if library:
        # keys as PeftModel.save_pretrained writes them (the wrapper's prefix), so from_pretrained finds them
        adapter = {
            f"{PEFT_PREFIX}{k}": v.detach().to("cpu").contiguous()
            for k, v in get_peft_model_state_dict(model).items()
        }
        manifest["adapter_keys"] = sorted(adapter)
    meta = {
        "format": "pt",
        FINGERPRINT_KEY: fingerprint,
        "peftsweep_base_model": base_name,
        "peftsweep_method": json.dumps(config.to_dict(), sort_keys=True),
    }

    def fill(tmp: Path) -> None:
        if library:
            model.peft_config["default"].save_pretrained(str(tmp))  # type: ignore[index, union-attr, operator]
            save_file(adapter, str(tmp / ADAPTER_WEIGHTS), metadata=meta)
        save_file(trainable, str(tmp / TRAINABLE_FILE), metadata=meta)
        (tmp / MANIFEST_FILE).write_text(json.dumps(manifest, indent=1, sort_keys=True))

    target = Path(path)
    _write_folder(target, fill)
    return target


def read_manifest(path: str | os.PathLike[str]) -> dict[str, Any]:
    folder = Path(path)
    file = folder / MANIFEST_FILE
    if not file.is_file() or not (folder / TRAINABLE_FILE).is_file():
        raise UserError(f"{folder}: not a PEFT artifact (needs {MANIFEST_FILE} and {TRAINABLE_FILE})")
    try:
        manifest = json.loads(file.read_text())
    except json.JSONDecodeError as exc:
        raise UserError(f"{file}: invalid JSON ({exc.msg})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != ARTIFACT_FORMAT:
        raise UserError(f"{file}: not a {ARTIFACT_FORMAT} manifest")
    if manifest.get("version") != ARTIFACT_VERSION:
        raise UserError(f"{file}: unsupported version {manifest.get('version')!r}")
    if "adapter_keys" in manifest and not (folder / ADAPTER_WEIGHTS).is_file():
        raise UserError(f"{folder}: {ADAPTER_WEIGHTS} is missing")
    return manifest


@contextlib.contextmanager
def _buffers_kept(model: nn.Module) -> Iterator[None]:
    """Restore every buffer after the block.

    peft loads adapter tensors with ``model.load_state_dict(..., strict=False)``; detectron2's
    FrozenBatchNorm2d treats a state dict without version metadata as an old checkpoint and resets
    its running mean / var to 0 / 1, which would wipe a pretrained backbone's statistics.
    """
    saved = {name: b.detach().clone() for name, b in model.named_buffers(remove_duplicate=False)}
    try:
        yield
    finally:
        with torch.no_grad():
            for name, b in model.named_buffers(remove_duplicate=False):
                if name in saved and b.shape == saved[name].shape:
                    b.copy_(saved[name])


def _copy_into(folder: Path, model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    params = dict(model.named_parameters(remove_duplicate=False))
    with torch.no_grad():
        for key, tensor in state.items():
            if key not in params:
                raise UserError(f"{folder}: tensor {key} has no parameter in this model")
            if tuple(params[key].shape) != tuple(tensor.shape):
                have = tuple(params[key].shape)
                raise UserError(f"{folder}: tensor {key} has shape {tuple(tensor.shape)}, model has {have}")
            params[key].copy_(tensor)


def load_artifact(
    model: nn.Module,
    path: str | os.PathLike[str],
    *,
    base_name: str | None = None,
    spec: PeftSpec | None = None,
) -> PeftModelInfo:
    """Apply the artifact's method to the unadapted base ``model`` and load its weights.

    Raises UserError (naming the artifact) when ``base_name`` is given and differs from the
    manifest's, when the base fingerprint differs, or when a stored tensor has no key / another
    shape in the model; after a fingerprint or key error the model is adapted but not loaded
    (build a fresh one to retry).
    """
    from peft import set_peft_model_state_dict

    folder = Path(path)
    manifest = read_manifest(folder)
    if base_name is not None and manifest.get("base_model") != base_name:
        raise UserError(
            f"{folder}: artifact is for base model {manifest.get('base_model')!r}, not {base_name!r}"
        )
    config = config_from_dict(manifest["method"])
    info = apply_method(model, config, reinitialized=manifest.get("reinitialized", []), spec=spec)
    found = base_fingerprint(model)
    if found != manifest["base_fingerprint"]:
        raise UserError(
            f"{folder}: artifact was trained on base {manifest.get('base_model')!r} with different "
            f"weights (fingerprint {manifest['base_fingerprint'][:12]} != {found[:12]} of this model)"
        )
    if isinstance(config, LibraryConfig):
        file = folder / ADAPTER_WEIGHTS
        with safe_open(str(file), "pt") as f:
            stored = (f.metadata() or {}).get(FINGERPRINT_KEY)
        if stored != found:
            raise UserError(f"{file}: adapter is for another base ({str(stored)[:12]} != {found[:12]})")
        with _buffers_kept(model):
            stored_state = load_file(str(file))
            if not all(k.startswith(PEFT_PREFIX) for k in stored_state):
                raise UserError(f"{file}: keys must start with {PEFT_PREFIX!r} (peft's saved format)")
            unwrapped = {k[len(PEFT_PREFIX) :]: v for k, v in stored_state.items()}
            result: Any = set_peft_model_state_dict(model, unwrapped)
        # peft reports every non-adapter key as missing; only adapter keys matter here
        missing = [k for k in result.missing_keys if is_peft_param(k)]
        if result.unexpected_keys or missing:
            bad = (list(result.unexpected_keys) or missing)[0]
            raise UserError(f"{file}: adapter tensor {bad} does not fit this model")
    _copy_into(folder, model, load_file(str(folder / TRAINABLE_FILE)))
    return info


def peft_model_from_artifact(model: nn.Module, path: str | os.PathLike[str]) -> Any:
    """Load a peft-format artifact with peft's own ``PeftModel.from_pretrained``.

    The base ``model`` gets the artifact's trained non-adapter tensors (heads) and its split
    attentions first (peft cannot name q / v inside a packed ``nn.MultiheadAttention``); returns the
    ``PeftModel``. No fingerprint check: this is the route for tools that speak peft;
    :func:`load_artifact` is the checked one.
    """
    from peft import PeftModel

    folder = Path(path)
    manifest = read_manifest(folder)
    if "adapter_keys" not in manifest:
        raise UserError(f"{folder}: method {manifest['method'].get('method')!r} is not in peft's format")
    for name in manifest.get("split_attentions", []):
        split_attention(model, name)
    _copy_into(folder, model, load_file(str(folder / TRAINABLE_FILE)))
    with _buffers_kept(model):
        return PeftModel.from_pretrained(model, str(folder))
