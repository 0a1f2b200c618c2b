"""One command that proves the MSDA kernels on a CUDA machine: correctness at full shapes and speed.

Run on a GPU machine (H100/H200) from the repository root, in under five minutes::

    bash kernels/gpu_check.sh            # = python -m kernels.gpu_check --out kernels/benchmarks/

Sections, each in its own try/except (an error is recorded in the JSON and the next section runs)
and under one time budget (``--budget-s``; a section that no longer fits is recorded as skipped):

- ``environment``: python, torch, triton, CUDA, the GPU.
- ``reference_build``: builds the CUDA reference operator ``torch-ms-deform-attn`` 0.1.1 from the
  sdist in ``kernels/vendor_sdist/`` (``bash kernels/fetch_reference_sdist.sh`` fetches it; the GPU
  machine has no network), for this GPU's architecture only, in the background; a failed build is
  a clear message and the comparisons against it are skipped.
- ``tests``: ``pytest tests/kernels`` with compiled kernels on CUDA (autotuning off there), in the
  background too.
- ``int64``: a bf16 value tensor of more than 2**31 elements, sampled near its end, against
  grid_sample on the crop it reads (forward and value gradient).
- ``correctness``: Mask DINO R50 shapes (batch 2, levels 128^2..16^2 = 21,760 tokens, 8 heads x
  32 channels, 4 levels x 4 points; encoder 21,760 queries, decoder 300 and 900), with uniform
  locations and local ones (a reference point plus a few pixels, as Mask DINO samples): Triton
  fp32 vs the CUDA op vs grid_sample (output and the three gradients: max abs and relative L2),
  the in-kernel softmax vs softmax + grid_sample, and Triton bf16 vs Triton fp32 on the same
  bf16-rounded inputs.
- ``fused_lora``: ``MSDeformAttn`` with LoRA rank 8 (B != 0) on ``sampling_offsets`` and
  ``value_proj``: fused vs unfused Triton vs the torch composition (output, gradients), forward
  and forward+backward time and peak memory.
- ``timing``: ``triton.testing.do_bench`` of forward and forward+backward per path (Triton, the
  CUDA op, grid_sample) and dtype (fp32, bf16), speed-ups over the CUDA op and grid_sample, and
  the configs the autotuner chose.
- ``targets``: the issue's targets read off the last two (met / not met / not measured).

In that order: the build and the tests compile on the CPU while ``int64`` and ``correctness`` use
the GPU; the two timed sections run last, with nothing else on the machine.
Writes ``gpu_check_<device>.json`` after every section (a killed run keeps what it finished).
Without CUDA (``--tiny``, for the tests) the same sections run through the Triton interpreter at
tiny shapes, so every line of this file runs in CI; the figures then mean nothing.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import platform
import re
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["CheckConfig", "add_arguments", "main", "run_check"]

ROOT = Path(__file__).resolve().parents[1]
SDIST_DIR = ROOT / "kernels" / "vendor_sdist"
SDIST_NAME = "torch_ms_deform_attn-0.1.1.tar.gz"
BUILD_TARGET = Path(os.environ.get("PEFTSWEEP_REF_BUILD_DIR", "/tmp/peftsweep_msda_reference"))
FULL_LEVELS = [(128, 128), (64, 64), (32, 32), (16, 16)]  # Mask DINO R50 at 1024x1024: 21,760 tokens
TINY_LEVELS = [(6, 7), (3, 4), (2, 2), (1, 1)]
HEADS, CHANNELS, POINTS = 8, 32, 4
TARGETS = {
    "fwd_bwd_fp32_vs_cuda_op": 1.5,
    "fwd_bwd_bf16_vs_cuda_op": 2.0,
    "fwd_bwd_vs_grid_sample": 5.0,
}


@dataclass
class CheckConfig:
    """What one run checks; the defaults are the full GPU check."""

    out: str | None = field(
        default=None, metadata={"help": "JSON file, or a folder for gpu_check_<device>.json"}
    )
    budget_s: float = field(default=285.0, metadata={"help": "total time budget in seconds"})
    tiny: bool = field(default=False, metadata={"help": "tiny shapes (CPU interpreter; for the tests)"})
    build: bool = field(default=True, metadata={"help": "build the CUDA reference from kernels/vendor_sdist"})
    tests: bool = field(default=True, metadata={"help": "run pytest tests/kernels compiled on CUDA"})
    sections: tuple[str, ...] = field(
        default=("correctness", "int64", "fused_lora", "timing"),
        metadata={"help": "which of correctness,int64,fused_lora,timing to run"},
    )


# ------------------------------------------------------------------------------------------------
# results, time budget


class Report:
    """The JSON document; written atomically after each section."""

    def __init__(self, cfg: CheckConfig, start: float) -> None:
        self.cfg = cfg
        self.start = start
        self.data: dict[str, Any] = {"benchmark": "gpu_check", "started": time.strftime("%Y-%m-%dT%H:%M:%S")}
        self.path: Path | None = None

    def remaining(self) -> float:
        return self.cfg.budget_s - (time.monotonic() - self.start)

    def set_path(self, device_name: str) -> None:
        if self.cfg.out is None:
            return
        out = Path(self.cfg.out)
        if out.suffix != ".json":
            slug = re.sub(r"[^a-z0-9]+", "_", device_name.lower()).strip("_")
            out = out / f"gpu_check_{slug}.json"
        self.path = out

    def write(self) -> None:
        self.data["elapsed_s"] = round(time.monotonic() - self.start, 1)
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.tmp{os.getpid()}")
        tmp.write_text(json.dumps(self.data, indent=2, default=str) + "\n")
        os.replace(tmp, self.path)


class _Timeout(Exception):
    pass


@contextmanager
def _alarm(seconds: float) -> Iterator[None]:
    """Interrupt a section that outlives the budget (between Python bytecodes)."""
    if not hasattr(signal, "SIGALRM") or seconds <= 0:
        yield
        return

    def fire(signum: int, frame: Any) -> None:
        raise _Timeout(f"time budget: interrupted after {seconds:.0f} s")

    old = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def _section(report: Report, name: str, needs_s: float, fn: Callable[[], Any]) -> None:
    """Run one section: its result, or its error, or 'skipped' goes into the report under ``name``."""
    left = report.remaining()
    if left < needs_s:
        report.data[name] = {
            "status": "skipped",
            "reason": f"time budget: {left:.0f} s left, needs ~{needs_s:.0f} s",
        }
        print(f"[{name}] skipped: {left:.0f} s left", flush=True)
        report.write()
        return
    t0 = time.monotonic()
    print(f"[{name}] ...", flush=True)
    try:
        with _alarm(left - 2):
            result = fn()
        entry = {"status": "ok", **(result or {})}
    except Exception as exc:  # noqa: BLE001 - record and go on: the point of the check
        entry = {
            "status": "error",
            "error": f"{type(exc).__name__}: {exc}",
            "traceback": traceback.format_exc(limit=6)[-3000:],
        }
        print(f"[{name}] error: {type(exc).__name__}: {exc}", flush=True)
    entry["seconds"] = round(time.monotonic() - t0, 1)
    report.data[name] = entry
    report.write()
    print(f"[{name}] {entry['status']} in {entry['seconds']} s", flush=True)


# ------------------------------------------------------------------------------------------------
# inputs


def _levels(cfg: CheckConfig) -> list[tuple[int, int]]:
    return TINY_LEVELS if cfg.tiny else FULL_LEVELS


def _geometry(cfg: CheckConfig) -> tuple[int, int, int, int]:
    """(batch, heads, channels per head, points)."""
    return (1, 2, 8, 2) if cfg.tiny else (2, HEADS, CHANNELS, POINTS)


def _cases(cfg: CheckConfig) -> dict[str, int]:
    tokens = sum(h * w for h, w in _levels(cfg))
    if cfg.tiny:
        return {"encoder": tokens, "decoder_300": 7}
    return {"encoder": tokens, "decoder_300": 300, "decoder_900": 900}


def _make_inputs(cfg: CheckConfig, lq: int, kind: str, locations: str, device: Any, seed: int = 0) -> dict:
    """fp32 MSDA inputs; ``locations`` "uniform" (anywhere, 5 % outside the map) or "local"."""
    import torch

    n, m, d, p = _geometry(cfg)
    levels = _levels(cfg)
    gen = torch.Generator().manual_seed(seed)
    spatial = torch.tensor(levels, dtype=torch.long)
    sizes = spatial[:, 0] * spatial[:, 1]
    lsi = torch.cat([sizes.new_zeros(1), sizes.cumsum(0)[:-1]])
    s, num_levels = int(sizes.sum()), len(levels)
    value = torch.randn(n, s, m, d, generator=gen)
    logits = torch.randn(n, lq, m, num_levels, p, generator=gen)
    weights = logits.view(n, lq, m, -1).softmax(-1).view_as(logits)
    if locations == "uniform":
        locs = torch.rand(n, lq, m, num_levels, p, 2, generator=gen) * 1.1 - 0.05
    else:
        # Mask DINO: the encoder's reference points are its tokens' pixel centres (in token order),
        # the decoder's are boxes anywhere; offsets start as (k + 1) pixels along each head's
        # direction (MSDeformAttn's init) and move a few pixels in training
        if kind == "encoder":
            refs = []
            for h, w in levels:
                ys, xs = torch.meshgrid(
                    (torch.arange(h) + 0.5) / h, (torch.arange(w) + 0.5) / w, indexing="ij"
                )
                refs.append(torch.stack([xs.reshape(-1), ys.reshape(-1)], -1))
            ref = torch.cat(refs)[None, :lq, None, None, None, :].expand(n, lq, 1, 1, 1, 2)
        else:
            ref = torch.rand(n, lq, 1, 1, 1, 2, generator=gen)
        theta = torch.arange(m) * (2 * math.pi / m)
        direction = torch.stack([theta.cos(), theta.sin()], -1)
        direction = direction / direction.abs().max(-1, keepdim=True)[0]
        steps = (torch.arange(p) + 1.0).view(1, 1, 1, 1, p, 1)
        pixels = direction.view(1, 1, m, 1, 1, 2) * steps + torch.randn(
            n, lq, m, num_levels, p, 2, generator=gen
        )
        wh = spatial.flip(-1).to(torch.float32).view(1, 1, 1, num_levels, 1, 2)
        locs = ref + pixels / wh
    return {
        "value": value.to(device),
        "spatial_shapes": spatial.to(device),
        "level_start_index": lsi.to(device),
        "sampling_locations": locs.contiguous().to(device),
        "attention_weights": weights.to(device),
        "logits": logits.to(device),
    }


MSDA_KEYS = ("value", "spatial_shapes", "level_start_index", "sampling_locations", "attention_weights")
GRAD_KEYS = ("value", "sampling_locations", "attention_weights")


def _run_path(
    fn: Callable[..., Any], inputs: dict, grad_out: Any, dtype: Any = None, softmax: bool = False
) -> dict:
    """Output and gradients (fp32, as tensors) of ``fn`` on copies of ``inputs`` in ``dtype``."""
    import torch

    x = {k: inputs[k] for k in MSDA_KEYS}
    if softmax:
        x["attention_weights"] = inputs["logits"]
    leaves = {}
    for k in GRAD_KEYS:
        t = x[k].detach().clone()
        t = t.to(dtype) if dtype is not None else t
        leaves[k] = x[k] = t.requires_grad_(True)
    out = fn(**x)
    grads = torch.autograd.grad(out, [leaves[k] for k in GRAD_KEYS], grad_out.to(out.dtype))
    return {"output": out.detach().float(), **{f"grad_{k}": g.float() for k, g in zip(GRAD_KEYS, grads)}}


def _errors(actual: dict, expected: dict) -> dict[str, dict[str, float]]:
    """Per tensor: max abs error, the reference's max abs, and the relative L2 error."""
    out = {}
    for name, ref in expected.items():
        got = actual[name]
        diff = (got.detach() - ref.detach()).float()
        out[name] = {
            "max_abs": float(diff.abs().max()),
            "ref_max_abs": float(ref.abs().max()),
            "rel_l2": float(diff.norm() / (ref.float().norm() + 1e-30)),
        }
    return out


def _paths(device: Any) -> dict[str, Callable[..., Any]]:
    """The MSDA implementations available on ``device``: triton, cuda_op (native) and grid_sample."""
    from kernels import native
    from kernels.reference import ms_deform_attn_torch
    from kernels.triton_ops import ms_deform_attn_triton

    paths: dict[str, Callable[..., Any]] = {
        "triton": ms_deform_attn_triton,
        "grid_sample": ms_deform_attn_torch,
    }
    if native.native_available(device.type):
        paths["cuda_op" if device.type == "cuda" else "native_cpu"] = native.ms_deform_attn_native
    return paths


# ------------------------------------------------------------------------------------------------
# sections


def _environment(device: Any) -> dict:
    import torch
    import triton

    from kernels import native

    info: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "triton": triton.__version__,
        "cuda_runtime": torch.version.cuda,
        "device": str(device),
        "reference_op": native.native_version(),
        "triton_interpret": os.environ.get("TRITON_INTERPRET", ""),
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(
            gpu=props.name,
            capability=f"{props.major}.{props.minor}",
            multiprocessors=props.multi_processor_count,
            memory_gib=round(props.total_memory / 2**30, 1),
        )
        try:
            smi = subprocess.run(
                ["nvidia-smi", "--query-gpu=driver_version,clocks.max.sm", "--format=csv,noheader"],
                capture_output=True,
                text=True,
                timeout=20,
            )
            info["nvidia_smi"] = smi.stdout.strip()
        except (OSError, subprocess.SubprocessError) as exc:
            info["nvidia_smi"] = f"unavailable: {exc}"
    for key, value in info.items():
        print(f"  {key}: {value}", flush=True)
    return info


def _start_build(device: Any) -> subprocess.Popen | str:
    """Start building the reference operator in the background; a string says why it was not."""
    import torch

    from kernels import native

    if native.native_available("cuda"):
        return "already importable with CUDA"
    sdist = SDIST_DIR / SDIST_NAME
    if not sdist.exists():
        fetch = "bash kernels/fetch_reference_sdist.sh"
        return f"no {sdist}: run `{fetch}` where PyPI is reachable, then carry the folder"
    env = dict(os.environ)
    major, minor = torch.cuda.get_device_capability(device)
    # one architecture (this GPU's): a third of the nvcc time of the default list
    env.update(
        TORCH_CUDA_ARCH_LIST=f"{major}.{minor}",
        FORCE_CUDA="1",
        MAX_JOBS=str(os.cpu_count() or 4),
    )
    BUILD_TARGET.mkdir(parents=True, exist_ok=True)
    log = open(BUILD_TARGET.parent / "peftsweep_msda_reference_build.log", "w")  # noqa: SIM115 - outlives this call
    cmd = [
        sys.executable, "-m", "pip", "install", "--no-build-isolation", "--no-deps", "--no-index",
        "--disable-pip-version-check", "-q", "--target", str(BUILD_TARGET), str(sdist),
    ]  # fmt: skip
    return subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=str(ROOT))


def _finish_build(build: subprocess.Popen | str, deadline: float) -> dict:
    from kernels import native

    if isinstance(build, str):
        return {"built": False, "message": build, "available": native.native_available("cuda")}
    t0 = time.monotonic()
    try:
        rc = build.wait(timeout=max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        build.kill()
        return {"built": False, "message": "build did not finish in its share of the time budget"}
    log_path = BUILD_TARGET.parent / "peftsweep_msda_reference_build.log"
    tail = log_path.read_text(errors="replace")[-2000:] if log_path.exists() else ""
    if rc != 0:
        print("  the CUDA reference did not build; comparisons against it are skipped", flush=True)
        return {"built": False, "returncode": rc, "log_tail": tail}
    sys.path.insert(0, str(BUILD_TARGET))
    native._module.cache_clear()
    native.native_available.cache_clear()
    ok = native.native_available("cuda")
    return {
        "built": True,
        "waited_s": round(time.monotonic() - t0, 1),
        "available": ok,
        "version": native.native_version(),
        "log_tail": "" if ok else tail,
    }


TESTS_LOG = BUILD_TARGET.parent / "peftsweep_gpu_check_tests.log"


def _start_tests() -> subprocess.Popen:
    """``pytest tests/kernels`` on CUDA in the background (it compiles on the CPU while the GPU
    sections run); hand-sized launch configs there: autotuning each tiny test shape would cost more
    than it finds, and the sections below exercise the autotuned path at full shapes."""
    env = dict(os.environ, PEFTSWEEP_TRITON_AUTOTUNE="0", PYTHONUNBUFFERED="1")
    # A bare GPU image may lack the model stack (fvcore, detectron2) that one test module imports:
    # that module is counted as an error and the kernels' own tests still run.
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        "tests/kernels",
        "-q",
        "-m",
        "not slow",
        "-p",
        "no:cacheprovider",
        "--continue-on-collection-errors",
    ]
    TESTS_LOG.parent.mkdir(parents=True, exist_ok=True)
    log = open(TESTS_LOG, "w")  # noqa: SIM115 - the subprocess writes it after this call returns
    return subprocess.Popen(cmd, cwd=str(ROOT), env=env, stdout=log, stderr=subprocess.STDOUT)


def _finish_tests(proc: subprocess.Popen, deadline: float) -> dict:
    try:
        rc: int | None = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        rc = None
    out = TESTS_LOG.read_text(errors="replace") if TESTS_LOG.exists() else ""
    lines = [ln for ln in out.splitlines() if ln.strip()]
    summary = lines[-1] if lines and rc is not None else "timed out: stopped at the deadline"
    print(f"  {summary}", flush=True)
    counts = {k: int(v) for v, k in re.findall(r"(\d+) (passed|failed|skipped|errors?|deselected)", summary)}
    return {
        "passed": rc == 0,
        "returncode": rc,
        "summary": summary,
        "counts": counts,
        "tail": "" if rc == 0 else out[-4000:],
    }


def _correctness(cfg: CheckConfig, device: Any) -> dict:
    import torch

    paths = _paths(device)
    rows = []
    for case, lq in _cases(cfg).items():
        for locations in ("uniform", "local"):
            inputs = _make_inputs(cfg, lq, case.split("_")[0], locations, device)
            n, m, d, _ = _geometry(cfg)
            grad_out = torch.randn(n, lq, m * d, generator=torch.Generator().manual_seed(1)).to(device)
            ref = _run_path(paths["grid_sample"], inputs, grad_out)
            row: dict[str, Any] = {"case": case, "queries": lq, "locations": locations}
            row["triton_fp32_vs_grid_sample"] = _errors(_run_path(paths["triton"], inputs, grad_out), ref)
            for name in ("cuda_op", "native_cpu"):
                if name in paths:
                    lib = _run_path(paths[name], inputs, grad_out)
                    row[f"{name}_vs_grid_sample"] = _errors(lib, ref)
                    row[f"triton_fp32_vs_{name}"] = _errors(_run_path(paths["triton"], inputs, grad_out), lib)
            # in-kernel softmax over logits vs softmax then grid_sample (gradient: the logits')
            soft_ref = _softmax_reference(inputs, grad_out)
            soft = _run_path(lambda **x: paths["triton"](**x, softmax=True), inputs, grad_out, softmax=True)
            row["triton_softmax_vs_grid_sample"] = _errors(soft, soft_ref)
            # bf16 vs fp32 on the same bf16-rounded inputs: the kernel's own rounding only
            rounded = {
                k: (v.to(torch.bfloat16).float() if v.is_floating_point() else v) for k, v in inputs.items()
            }
            half = _run_path(paths["triton"], rounded, grad_out, dtype=torch.bfloat16)
            row["triton_bf16_vs_fp32"] = _errors(half, _run_path(paths["triton"], rounded, grad_out))
            rows.append(row)
            print(f"  {case} {locations}: " + _brief(row), flush=True)
            del inputs, ref
    worst = _worst(rows)
    return {"rows": rows, "worst_rel_l2": worst}


def _softmax_reference(inputs: dict, grad_out: Any) -> dict:
    import torch

    from kernels.reference import ms_deform_attn_torch

    x = {k: inputs[k].detach().clone() for k in MSDA_KEYS}
    logits = inputs["logits"].detach().clone().requires_grad_(True)
    value = x["value"].requires_grad_(True)
    locs = x["sampling_locations"].requires_grad_(True)
    shape = logits.shape
    weights = logits.view(*shape[:3], -1).softmax(-1).view(shape)
    out = ms_deform_attn_torch(value, x["spatial_shapes"], x["level_start_index"], locs, weights)
    g = torch.autograd.grad(out, [value, locs, logits], grad_out)
    return {
        "output": out.detach(),
        "grad_value": g[0],
        "grad_sampling_locations": g[1],
        "grad_attention_weights": g[2],
    }


def _brief(row: dict) -> str:
    parts = []
    for key, errs in row.items():
        if isinstance(errs, dict):
            parts.append(f"{key} rel_l2<={max(e['rel_l2'] for e in errs.values()):.1e}")
    return ", ".join(parts)


def _worst(rows: list[dict]) -> dict[str, float]:
    worst: dict[str, float] = {}
    for row in rows:
        for key, errs in row.items():
            if isinstance(errs, dict):
                worst[key] = max(worst.get(key, 0.0), max(e["rel_l2"] for e in errs.values()))
    return worst


def _always(value: Any) -> bool:
    return True


def _int64(cfg: CheckConfig, device: Any) -> dict:
    """Offsets past 2**31: a bf16 value of 2 levels, the second big, sampled near its end."""
    import torch

    import kernels.triton_ops as ops
    from kernels.reference import ms_deform_attn_torch

    m, d, p, lq = (2, 8, 2, 5) if cfg.tiny else (HEADS, CHANNELS, POINTS, 64)
    side = 6 if cfg.tiny else 2900  # 2900^2 * 256 = 2.15e9 elements > 2**31
    levels = [(4, 4), (side, side)]
    spatial = torch.tensor(levels, dtype=torch.long, device=device)
    s = 16 + side * side
    lsi = torch.tensor([0, 16], dtype=torch.long, device=device)
    gen = torch.Generator(device=device).manual_seed(0)
    value = torch.randn(1, s, m, d, device=device, dtype=torch.bfloat16, generator=gen)
    numel = value.numel()
    forced = numel < 2**31
    # sample the big level's last rows only (offsets beyond 2**31 elements); level 0 weighs 0
    rows = 4
    locs = torch.rand(1, lq, m, 2, p, 2, device=device, generator=gen)
    locs[..., 1, :, 0] = 0.02 + 0.96 * locs[..., 1, :, 0]
    locs[..., 1, :, 1] = 1.0 - (rows - 1.5) / side + locs[..., 1, :, 1] * (rows - 2.0) / side
    weights = torch.rand(1, lq, m, 2, p, device=device, generator=gen)
    weights[..., 0, :] = 0
    grad_out = torch.randn(1, lq, m * d, device=device, generator=gen)
    old = ops._needs_int64
    if forced:
        ops._needs_int64 = _always  # tiny run: the int64 code path at a size the CPU can hold
    try:
        v = value.requires_grad_(True)
        out = ops.ms_deform_attn_triton(v, spatial, lsi, locs, weights)
        (gv,) = torch.autograd.grad(out, [v], grad_out.to(out.dtype))
    finally:
        ops._needs_int64 = old
    # reference: grid_sample on the crop of the last rows (a 1-level problem of its own)
    crop = value.detach()[:, s - rows * side :].float().requires_grad_(True)
    c_locs = locs[:, :, :, 1:].clone()
    c_locs[..., 1] = (c_locs[..., 1] * side - (side - rows)) / rows
    c_shapes = torch.tensor([[rows, side]], dtype=torch.long, device=device)
    c_out = ms_deform_attn_torch(crop, c_shapes, c_shapes.new_zeros(1), c_locs, weights[:, :, :, 1:])
    (c_gv,) = torch.autograd.grad(c_out, [crop], grad_out)
    errs = _errors(
        {"output": out.float(), "grad_value_crop": gv[:, s - rows * side :].float()},
        {"output": c_out.detach(), "grad_value_crop": c_gv},
    )
    outside = float(gv[:, : s - rows * side].abs().max())  # in bf16: no 8.6 GB fp32 copy
    result = {
        "value_elements": numel,
        "over_2_31": numel >= 2**31,
        "int64_forced_for_tiny": forced,
        "errors_vs_grid_sample_on_crop": errs,
        "grad_value_outside_crop_max_abs": outside,
    }
    del value, v, gv, out
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return result


def _timer(device: Any) -> Callable[[Callable[[], Any]], float]:
    """ms per call: triton.testing.do_bench on CUDA (median of its repetitions), one call on the CPU."""
    if device.type == "cuda":
        import triton.testing

        return lambda fn: float(triton.testing.do_bench(fn, warmup=10, rep=40))

    def cpu(fn: Callable[[], Any]) -> float:
        # only the --tiny interpreter run times on the CPU: its figures mean nothing, so one call
        t0 = time.perf_counter()
        fn()
        return (time.perf_counter() - t0) * 1e3

    return cpu


def _peak_mib(device: Any, fn: Callable[[], Any]) -> float | None:
    """Peak memory one call allocates above what was allocated before it (MiB), CUDA only."""
    import torch

    if device.type != "cuda":
        return None
    torch.cuda.synchronize(device)
    torch.cuda.empty_cache()
    base = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    fn()
    torch.cuda.synchronize(device)
    return (torch.cuda.max_memory_allocated(device) - base) / 2**20


def _fwd_and_fwd_bwd(
    fn: Callable[[], Any], leaves: list, grad_out: Any
) -> tuple[Callable[[], Any], Callable[[], Any]]:
    """The forward under no_grad, and the forward + backward to ``leaves``, of ``fn``."""
    import torch

    def fwd() -> Any:
        with torch.no_grad():
            return fn()

    def fwd_bwd() -> Any:
        out = fn()
        return torch.autograd.grad(out, leaves, grad_out.to(out.dtype))

    return fwd, fwd_bwd


def _lora_module(cfg: CheckConfig, device: Any) -> Any:
    """MSDeformAttn with LoRA rank 8 (B != 0) on sampling_offsets and value_proj; base frozen."""
    import torch

    from kernels.lora import LoRALinear
    from kernels.msda import MSDeformAttn

    _, m, d, p = _geometry(cfg)
    torch.manual_seed(0)
    mod = MSDeformAttn(d_model=m * d, n_levels=len(_levels(cfg)), n_heads=m, n_points=p).to(device)
    with torch.no_grad():
        mod.sampling_offsets.weight.normal_(0, 0.02)  # upstream init zeroes it: offsets would not vary
        mod.attention_weights.weight.normal_(0, 0.05)
    mod.sampling_offsets = LoRALinear.wrap(mod.sampling_offsets, rank=8, alpha=8.0)
    mod.value_proj = LoRALinear.wrap(mod.value_proj, rank=8, alpha=8.0)
    for name, prm in mod.named_parameters():
        prm.requires_grad_("lora_" in name)  # the PEFT setting: frozen base, trained LoRA factors
    for sub in (mod.sampling_offsets, mod.value_proj):
        torch.nn.init.normal_(sub.lora_B, std=0.02)  # B != 0: the LoRA term is really there
    return mod


def _lora_case(cfg: CheckConfig, device: Any, mod: Any, case: str, lq: int) -> dict:
    """One query count: fused vs unfused vs the torch composition; times and peak memory."""
    import torch

    from kernels.reference import ms_deform_attn_torch, sampling_locations_torch
    from kernels.triton_ops import ms_deform_attn_triton

    n, m, d, p = _geometry(cfg)
    levels = _levels(cfg)
    spatial = torch.tensor(levels, dtype=torch.long, device=device)
    sizes = spatial[:, 0] * spatial[:, 1]
    lsi = torch.cat([sizes.new_zeros(1), sizes.cumsum(0)[:-1]])
    s, c, lv = int(sizes.sum()), m * d, len(levels)
    gen = torch.Generator().manual_seed(1)
    query = torch.randn(n, lq, c, generator=gen).to(device).requires_grad_(True)
    src = torch.randn(n, s, c, generator=gen).to(device).requires_grad_(True)
    ref = torch.rand(n, lq, lv, 4 if case.startswith("decoder") else 2, generator=gen).to(device)
    if ref.shape[-1] == 4:
        ref[..., 2:] = ref[..., 2:] * 0.3 + 0.05  # boxes, as the decoder's
    grad_out = torch.randn(n, lq, c, generator=gen).to(device)
    leaves = [query, src] + [prm for prm in mod.parameters() if prm.requires_grad]
    names = ["query", "src"] + [k for k, prm in mod.named_parameters() if prm.requires_grad]

    def fused() -> Any:
        mod.backend = "triton"
        return mod(query, ref, src, spatial, lsi)

    def materialised(sample: Callable[..., Any]) -> Callable[[], Any]:
        # the same module without the fusion: offsets, locations and weights written out
        def run() -> Any:
            value = mod.value_proj(src).view(n, s, m, d)
            offsets = mod.sampling_offsets(query).view(n, lq, m, lv, p, 2)
            weights = mod.attention_weights(query).view(n, lq, m, -1).softmax(-1).view(n, lq, m, lv, p)
            locs = sampling_locations_torch(ref, offsets, spatial, p)
            return mod.output_proj(sample(value, spatial, lsi, locs, weights))

        return run

    unfused, composed = materialised(ms_deform_attn_triton), materialised(ms_deform_attn_torch)

    def results(fn: Callable[[], Any]) -> dict:
        out = fn()
        grads = torch.autograd.grad(out, leaves, grad_out)
        return {"output": out.detach(), **{f"grad_{k}": g for k, g in zip(names, grads)}}

    expected = results(composed)
    row: dict[str, Any] = {
        "case": case,
        "queries": lq,
        "fused_vs_torch": _errors(results(fused), expected),
        "unfused_vs_torch": _errors(results(unfused), expected),
    }
    timer = _timer(device)
    for name, fn in (("fused", fused), ("unfused", unfused)):
        fwd, fwd_bwd = _fwd_and_fwd_bwd(fn, leaves, grad_out)
        row[f"{name}_fwd_ms"] = timer(fwd)
        row[f"{name}_fwd_bwd_ms"] = timer(fwd_bwd)
        row[f"{name}_fwd_bwd_peak_mib"] = _peak_mib(device, fwd_bwd)
    row["fused_speedup_fwd_bwd"] = row["unfused_fwd_bwd_ms"] / row["fused_fwd_bwd_ms"]
    print(
        f"  {case}: fused {row['fused_fwd_bwd_ms']:.3f} ms vs unfused {row['unfused_fwd_bwd_ms']:.3f} ms "
        f"(fwd+bwd), peak {row['fused_fwd_bwd_peak_mib']} vs {row['unfused_fwd_bwd_peak_mib']} MiB",
        flush=True,
    )
    return row


def _fused_lora(cfg: CheckConfig, device: Any) -> dict:
    mod = _lora_module(cfg, device)
    rows = [_lora_case(cfg, device, mod, case, lq) for case, lq in _cases(cfg).items()]
    return {"rank": 8, "rows": rows, "worst_rel_l2": _worst(rows)}


def _timing(cfg: CheckConfig, device: Any) -> dict:
    import torch

    from kernels.triton_ops import tuned_configs

    paths = _paths(device)
    timer = _timer(device)
    rows = []
    for case, lq in _cases(cfg).items():
        base = _make_inputs(cfg, lq, case.split("_")[0], "local", device)
        n, _, m, d = base["value"].shape
        grad_out = torch.randn(n, lq, m * d).to(device)
        for dtype_name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
            x = {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in base.items() if k in MSDA_KEYS}
            leaves = [x[k].requires_grad_(True) for k in GRAD_KEYS]
            for path, fn in paths.items():
                fwd, fwd_bwd = _fwd_and_fwd_bwd(functools.partial(fn, **x), leaves, grad_out)
                row = {"case": case, "queries": lq, "dtype": dtype_name, "path": path}
                row["fwd_ms"] = timer(fwd)
                row["fwd_bwd_ms"] = timer(fwd_bwd)
                rows.append(row)
                ms = f"fwd {row['fwd_ms']:.3f}, fwd+bwd {row['fwd_bwd_ms']:.3f} ms"
                print(f"  {case} {dtype_name} {path}: {ms}", flush=True)
        del base
    return {"rows": rows, "speedups": _speedups(rows), "autotuned": tuned_configs()}


def _speedups(rows: list[dict]) -> list[dict]:
    """Triton over every other path of the same case and dtype (bf16 also over the fp32 baselines)."""
    by = {(r["case"], r["dtype"], r["path"]): r for r in rows}
    out = []
    for r in rows:
        if r["path"] != "triton":
            continue
        for (case, dtype, path), other in by.items():
            if case != r["case"] or path == "triton" or dtype != r["dtype"]:
                continue
            out.append(
                {
                    "case": case,
                    "dtype": r["dtype"],
                    "vs": path,
                    "fwd": other["fwd_ms"] / r["fwd_ms"],
                    "fwd_bwd": other["fwd_bwd_ms"] / r["fwd_bwd_ms"],
                }
            )
    return out


def _targets(report: Report) -> dict:
    """The issue's targets, read off the timing and fused-LoRA sections."""
    timing = report.data.get("timing", {})
    speed = timing.get("speedups", []) if timing.get("status") == "ok" else []
    verdicts: dict[str, Any] = {}

    def judge(name: str, values: list[float], target: float) -> None:
        if not values:
            verdicts[name] = {"target": target, "status": "not measured"}
        else:
            worst = min(values)
            verdicts[name] = {"target": target, "worst": worst, "met": worst >= target}

    judge(
        "fwd_bwd_fp32_vs_cuda_op",
        [s["fwd_bwd"] for s in speed if s["dtype"] == "fp32" and s["vs"] == "cuda_op"],
        TARGETS["fwd_bwd_fp32_vs_cuda_op"],
    )
    judge(
        "fwd_bwd_bf16_vs_cuda_op",
        [s["fwd_bwd"] for s in speed if s["dtype"] == "bf16" and s["vs"] == "cuda_op"],
        TARGETS["fwd_bwd_bf16_vs_cuda_op"],
    )
    judge(
        "fwd_bwd_vs_grid_sample",
        [s["fwd_bwd"] for s in speed if s["vs"] == "grid_sample"],
        TARGETS["fwd_bwd_vs_grid_sample"],
    )
    lora = report.data.get("fused_lora", {})
    rows = lora.get("rows", []) if lora.get("status") == "ok" else []
    if rows:
        verdicts["fused_lora_no_slower"] = {
            "worst_speedup": min(r["fused_speedup_fwd_bwd"] for r in rows),
            "met": all(r["fused_speedup_fwd_bwd"] >= 1.0 for r in rows),
        }
        peaks = [(r["fused_fwd_bwd_peak_mib"], r["unfused_fwd_bwd_peak_mib"]) for r in rows]
        measured = [pk for pk in peaks if pk[0] is not None and pk[1] is not None]
        verdicts["fused_lora_lower_peak_memory"] = (
            {"met": all(f < u for f, u in measured), "fused_vs_unfused_mib": measured}
            if measured
            else {"status": "not measured"}
        )
    else:
        verdicts["fused_lora_no_slower"] = {"status": "not measured"}
        verdicts["fused_lora_lower_peak_memory"] = {"status": "not measured"}
    for name, verdict in verdicts.items():
        print(f"  {name}: {verdict}", flush=True)
    return verdicts


# ------------------------------------------------------------------------------------------------
# entry points


def run_check(cfg: CheckConfig) -> dict:
    """Run the check; returns the report's data (also written to ``cfg.out``)."""
    start = time.monotonic()
    import torch

    report = Report(cfg, start)
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    if not cuda and not cfg.tiny:
        raise RuntimeError("the GPU check needs a CUDA device (use --tiny for the CPU interpreter run)")
    name = torch.cuda.get_device_name(device) if cuda else f"cpu {platform.machine()} tiny"
    report.set_path(name)
    report.data["config"] = {"tiny": cfg.tiny, "budget_s": cfg.budget_s, "sections": list(cfg.sections)}
    _section(report, "environment", 0, lambda: _environment(device))

    # Order: the reference build and the tests compile on the CPU in the background while the int64
    # and correctness sections use the GPU; the timed sections run last, on a quiet machine.
    build: subprocess.Popen | str | None = None
    if cfg.build and cuda:
        try:
            build = _start_build(device)
        except Exception as exc:  # noqa: BLE001
            build = f"could not start the build: {type(exc).__name__}: {exc}"
    tests: subprocess.Popen | None = None
    if cfg.tests and cuda:
        try:
            tests = _start_tests()
        except Exception as exc:  # noqa: BLE001
            report.data["tests"] = {
                "status": "error",
                "error": f"could not start: {type(exc).__name__}: {exc}",
            }
    needs = {"correctness": 20, "int64": 15, "fused_lora": 20, "timing": 40}
    work = {"correctness": _correctness, "int64": _int64, "fused_lora": _fused_lora, "timing": _timing}

    def run(section: str) -> None:
        if section in cfg.sections:
            need = 0 if cfg.tiny else needs[section]
            _section(report, section, need, functools.partial(work[section], cfg, device))

    run("int64")  # needs no reference operator
    if build is not None:
        build_deadline = time.monotonic() + max(10.0, report.remaining() - 150)
        _section(report, "reference_build", 0, lambda: _finish_build(build, build_deadline))
    run("correctness")
    if tests is not None:
        # what follows needs ~100 s of a quiet GPU
        tests_deadline = time.monotonic() + max(5.0, report.remaining() - 100)
        _section(report, "tests", 0, lambda: _finish_tests(tests, tests_deadline))
    run("fused_lora")
    run("timing")
    _section(report, "targets", 0, lambda: _targets(report))
    return report.data


def add_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = CheckConfig()
    parser.add_argument("--out", default=None, help=CheckConfig.__dataclass_fields__["out"].metadata["help"])
    parser.add_argument(
        "--budget-s", type=float, default=defaults.budget_s, help="total time budget in seconds"
    )
    parser.add_argument("--tiny", action="store_true", help="tiny shapes through the CPU interpreter (tests)")
    parser.add_argument("--no-build", action="store_true", help="do not build the CUDA reference operator")
    parser.add_argument("--no-tests", action="store_true", help="do not run pytest tests/kernels")
    parser.add_argument(
        "--sections",
        default=",".join(defaults.sections),
        help="comma list of correctness,int64,fused_lora,timing",
    )


def config_from_args(args: argparse.Namespace) -> CheckConfig:
    sections = tuple(s.strip() for s in str(args.sections).split(",") if s.strip())
    unknown = [s for s in sections if s not in CheckConfig().sections]
    if unknown:
        raise ValueError(f"--sections: unknown {unknown}; choose from {list(CheckConfig().sections)}")
    if args.budget_s <= 0:
        raise ValueError(f"--budget-s must be > 0, got {args.budget_s}")
    return CheckConfig(
        out=args.out,
        budget_s=args.budget_s,
        tiny=args.tiny,
        build=not args.no_build,
        tests=not args.no_tests,
        sections=sections,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kernels.gpu_check", description=__doc__.split("\n")[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        cfg = config_from_args(args)
    except ValueError as exc:
        parser.error(str(exc))
    data = run_check(cfg)
    failed = [k for k, v in data.items() if isinstance(v, dict) and v.get("status") == "error"]
    print(f"gpu check done in {data.get('elapsed_s')} s; sections with errors: {failed or 'none'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
