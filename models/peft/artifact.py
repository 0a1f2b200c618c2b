"""Save / load only the adapted weights of a PEFT model.

An artifact is a folder with two files:

- ``weights.safetensors``: every trainable tensor plus every PEFT tensor (LoRA factors, adapters),
  under its state_dict key (one key per tensor; aliases of shared modules are stored once and
  restored through any alias, because they are the same tensor).
- ``manifest.json``: ``format``, ``version``, ``method`` (the method config as a dict), ``base_model``
  (name), ``base_fingerprint``, ``reinitialized`` (names trained because they were re-initialised),
  ``keys``.

The fingerprint identifies the frozen base: sha256 over the sorted ``(key, shape, dtype, digest)``
of every frozen, non-PEFT parameter, where ``digest`` is a cheap content hash (the float64 sum,
the float64 sum of squares and up to 4096 evenly strided elements). Trainable parameters are left
out (they change in training), so the fingerprint of a base before and after training is the same;
it is computed after the method is applied, because that decides what is frozen.
:func:`load_artifact` applies the manifest's method to a fresh base, compares fingerprints and fails
with a UserError naming the artifact on a mismatch (a different base model or checkpoint).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from models.errors import UserError
from models.peft.config import MethodConfig
from models.peft.lora import lora_modules
from models.peft.registry import PEFT_INFO_ATTR, PeftModelInfo, apply_method, config_from_dict
from models.peft.targets import PeftSpec
from models.peft.trainable import is_peft_param

__all__ = [
    "save_artifact",
    "load_artifact",
    "base_fingerprint",
    "ARTIFACT_FORMAT",
    "WEIGHTS_FILE",
    "MANIFEST_FILE",
]

ARTIFACT_FORMAT = "peftsweep-peft-artifact"
ARTIFACT_VERSION = 1
WEIGHTS_FILE = "weights.safetensors"
MANIFEST_FILE = "manifest.json"
_SAMPLES = 4096


def _digest(t: torch.Tensor) -> str:
    flat = t.detach().reshape(-1).to("cpu", torch.float64)
    n = flat.numel()
    step = max(1, n // _SAMPLES)
    sample = flat[::step][:_SAMPLES]
    h = hashlib.sha256(sample.numpy().tobytes())
    h.update(repr((float(flat.sum()), float((flat * flat).sum()))).encode())
    return h.hexdigest()


def base_fingerprint(model: nn.Module) -> str:
    """Fingerprint of the frozen, non-PEFT parameters of ``model`` (see module docstring)."""
    if any(m.merged for _, m in lora_modules(model)):
        raise ValueError("LoRA is merged into the base weights; unmerge before fingerprinting")
    entries = []
    for key, param in model.named_parameters(remove_duplicate=False):
        if param.requires_grad or is_peft_param(key):
            continue
        entries.append(f"{key}|{tuple(param.shape)}|{param.dtype}|{_digest(param)}")
    h = hashlib.sha256()
    for line in sorted(entries):
        h.update(line.encode())
        h.update(b"\n")
    return h.hexdigest()


def _adapted_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """key -> tensor for trainable and PEFT parameters, one key per distinct tensor."""
    out: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for key, param in model.named_parameters(remove_duplicate=False):
        if not (param.requires_grad or is_peft_param(key)) or id(param) in seen:
            continue
        seen.add(id(param))
        out[key] = param.detach().to("cpu").contiguous()
    return out


def save_artifact(
    model: nn.Module, config: MethodConfig, path: str | os.PathLike[str], base_name: str
) -> Path:
    """Write the artifact folder ``path`` atomically (a temp folder renamed into place).

    ``model`` must have had ``config`` applied with :func:`models.peft.apply_method` and LoRA must
    not be merged. An existing artifact at ``path`` is replaced.
    """
    info = getattr(model, PEFT_INFO_ATTR, None)
    if not isinstance(info, PeftModelInfo):
        raise ValueError("save_artifact: apply_method was not run on this model")
    if info.config != config:
        raise ValueError(f"save_artifact: config {config} differs from the applied {info.config}")
    if info.method == "lora" and len(lora_modules(model)) != len(info.injected):
        # merge_for_inference folded the factors into the base weights: nothing adapted is left
        raise ValueError("save_artifact: LoRA was merged for inference; save the artifact before merging")
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    manifest: dict[str, Any] = {
        "format": ARTIFACT_FORMAT,
        "version": ARTIFACT_VERSION,
        "method": config.to_dict(),
        "base_model": base_name,
        "base_fingerprint": base_fingerprint(model),
        "reinitialized": list(info.reinitialized),
    }
    state = _adapted_state(model)
    manifest["keys"] = sorted(state)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        save_file(
            state, str(tmp / WEIGHTS_FILE), metadata={"format": ARTIFACT_FORMAT, "base_model": base_name}
        )
        (tmp / MANIFEST_FILE).write_text(json.dumps(manifest, indent=1, sort_keys=True))
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
    return target


def read_manifest(path: str | os.PathLike[str]) -> dict[str, Any]:
    folder = Path(path)
    file = folder / MANIFEST_FILE
    if not file.is_file() or not (folder / WEIGHTS_FILE).is_file():
        raise UserError(f"{folder}: not a PEFT artifact (needs {MANIFEST_FILE} and {WEIGHTS_FILE})")
    try:
        manifest = json.loads(file.read_text())
    except json.JSONDecodeError as exc:
        raise UserError(f"{file}: invalid JSON ({exc.msg})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != ARTIFACT_FORMAT:
        raise UserError(f"{file}: not a {ARTIFACT_FORMAT} manifest")
    if manifest.get("version") != ARTIFACT_VERSION:
        raise UserError(f"{file}: unsupported version {manifest.get('version')!r}")
    return manifest


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
    state = load_file(str(folder / WEIGHTS_FILE))
    params = dict(model.named_parameters(remove_duplicate=False))
    with torch.no_grad():
        for key, tensor in state.items():
            if key not in params:
                raise UserError(f"{folder}: tensor {key} has no parameter in this model")
            if tuple(params[key].shape) != tuple(tensor.shape):
                have = tuple(params[key].shape)
                raise UserError(f"{folder}: tensor {key} has shape {tuple(tensor.shape)}, model has {have}")
            params[key].copy_(tensor)
    return info
