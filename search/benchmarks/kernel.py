"""``peftsweep bench kernel``: MSDA forward and forward+backward, grid_sample vs the compiled operator
vs Triton; ``--gpu-check`` runs the one-command GPU check instead (:mod:`kernels.gpu_check`).

Shapes are Mask DINO R50's at a 1024x1024 input: batch 2, levels 128x128 / 64x64 / 32x32 / 16x16
(21,760 tokens), 8 heads x 32 channels, 4 points; the encoder has one query per token, the decoder
300 queries. ``--small`` divides each level side by 4 (a 256x256 input, 1,360 tokens) so the CPU
run takes seconds.

Two levels are timed:

- ``msda``: the functional op on materialised locations (``torch`` = grid_sample reference,
  ``native`` = the compiled Deformable-DETR operator of ``torch-ms-deform-attn`` where installed,
  on the CPU or CUDA; ``triton`` = the Triton kernels).
- ``module``: :class:`kernels.MSDeformAttn` with LoRA (rank 8) on ``sampling_offsets`` and
  ``value_proj`` (``torch`` / ``native`` = unfused composition sampling with grid_sample / the
  compiled operator, ``triton_unfused`` = offsets/locations materialised in torch + Triton
  sampling, ``triton_fused`` = locations computed in the kernel).

GB/s is *effective* bandwidth: the compulsory bytes of the op (each input read once, each output
written once; see :func:`_msda_bytes`) divided by the time. Gathers re-read value rows, so the DRAM
traffic is at least that. Triton needs CUDA: on the CPU grid_sample and the compiled operator are
timed side by side (``kernels/benchmarks/kernel_cpu_side_by_side.txt``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["add_arguments", "main"]

LEVELS_1024 = [(128, 128), (64, 64), (32, 32), (16, 16)]
DECODER_QUERIES = 300
# Peak HBM bandwidth (GB/s) by device-name substring, for the "% of peak" column.
PEAK_GBS = {"H200": 4800.0, "H100 PCIe": 2000.0, "H100": 3350.0, "A100": 2039.0, "L40S": 864.0}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--small", action="store_true", help="levels 32x32..4x4 (256x256 input) instead of 1024x1024"
    )
    parser.add_argument("--batch", type=int, default=2, help="batch size (default 2)")
    parser.add_argument(
        "--dtype", choices=["fp32", "fp16", "bf16"], default="fp32", help="dtype of the msda op"
    )
    parser.add_argument("--cases", default="encoder,decoder", help="comma list of encoder,decoder")
    parser.add_argument("--levels", choices=["msda", "module", "both"], default="both", help="what to time")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--warmup", type=int, default=None, help="warm-up runs (default 5 on CUDA, 1 on CPU)")
    parser.add_argument("--iters", type=int, default=None, help="timed runs (default 50 on CUDA, 3 on CPU)")
    parser.add_argument("--no-backward", action="store_true", help="time the forward only")
    parser.add_argument(
        "--out",
        default=None,
        help="write JSON results: a .json file, or a directory (e.g. benchmarks/) for kernel_<device>.json",
    )
    parser.add_argument(
        "--gpu-check",
        action="store_true",
        help="run the GPU check instead (kernels/gpu_check.py: correctness at full shapes, speed, targets; "
        "< 5 min on an H100/H200); --out defaults to kernels/benchmarks/",
    )
    parser.add_argument(
        "--budget-s",
        type=float,
        default=285.0,
        help="--gpu-check: total time budget in seconds (default 285)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress: only the table")


def _device_name(device: Any) -> str:
    import torch

    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu {platform.machine()} ({torch.get_num_threads()} threads)"


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def _peak(name: str) -> float | None:
    for key, gbs in PEAK_GBS.items():  # dict order: "H100 PCIe" is tried before "H100"
        if key in name:
            return gbs
    return None


def _time_ms(fn: Callable[[], Any], device: Any, warmup: int, iters: int) -> float:
    """Median wall time of ``fn`` in ms (CUDA events on the GPU, perf_counter on the CPU)."""
    import torch

    for _ in range(warmup):
        fn()
    times = []
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        for _ in range(iters):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize(device)
            times.append(start.elapsed_time(end))
    else:
        for _ in range(iters):
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def _msda_bytes(n: int, s: int, lq: int, m: int, d: int, lp: int, elem: int, backward: bool) -> int:
    """Compulsory bytes: forward reads value, locations, weights and writes the output; the backward
    also reads grad_out and writes grad value (fp32 accumulation buffer), grad locations, grad weights."""
    value, locs, weights, out = (
        n * s * m * d * elem,
        n * lq * m * lp * 2 * elem,
        n * lq * m * lp * elem,
        n * lq * m * d * elem,
    )
    fwd = value + locs + weights + out
    if not backward:
        return fwd
    bwd = (value + locs + weights + out) + (n * s * m * d * 4 + locs + weights)
    return fwd + bwd


def _make_inputs(n: int, lq: int, levels: list[tuple[int, int]], dtype: Any, device: Any) -> dict[str, Any]:
    import torch

    m, d, p = 8, 32, 4
    spatial = torch.tensor(levels, dtype=torch.long, device=device)
    sizes = spatial[:, 0] * spatial[:, 1]
    s = int(sizes.sum())
    gen = torch.Generator(device="cpu").manual_seed(0)
    weights = torch.rand(n, lq, m, len(levels) * p, generator=gen).softmax(-1).view(n, lq, m, len(levels), p)
    return {
        "value": torch.randn(n, s, m, d, generator=gen).to(device=device, dtype=dtype),
        "spatial_shapes": spatial,
        "level_start_index": torch.cat([sizes.new_zeros(1), sizes.cumsum(0)[:-1]]),
        "sampling_locations": (torch.rand(n, lq, m, len(levels), p, 2, generator=gen) * 1.1 - 0.05).to(
            device=device, dtype=dtype
        ),
        "attention_weights": weights.to(device=device, dtype=dtype),
    }


def _fwd_bwd(fn: Callable[[], Any], leaves: list[Any]) -> Callable[[], Any]:
    import torch

    def run() -> Any:
        out = fn()
        return torch.autograd.grad(out, leaves, torch.ones_like(out))

    return run


def _no_tick(label: str) -> None:
    return None


def _paths(level: str, device: Any, triton: bool) -> int:
    """How many paths a level times (the progress total; the lists are built in the bench functions)."""
    from kernels.native import native_available

    native = int(native_available(device.type))
    return 1 + native + (int(triton) if level == "msda" else 2 * int(triton))


def _bench_msda(
    case: str,
    n: int,
    lq: int,
    levels: list,
    dtype: Any,
    device: Any,
    opts: dict,
    triton: bool,
    tick: Callable[[str], None] = _no_tick,
) -> list[dict]:
    import torch

    from kernels.native import ms_deform_attn_native, native_available
    from kernels.reference import ms_deform_attn_torch

    inputs = _make_inputs(n, lq, levels, dtype, device)
    leaves = [inputs[k].requires_grad_(True) for k in ("value", "sampling_locations", "attention_weights")]
    paths: dict[str, Callable[..., Any]] = {"torch": ms_deform_attn_torch}
    if native_available(device.type):
        paths["native"] = ms_deform_attn_native
    if triton:
        from kernels.triton_ops import ms_deform_attn_triton

        paths["triton"] = ms_deform_attn_triton
    s = inputs["value"].shape[1]
    elem = inputs["value"].element_size()
    rows = []
    for path, fn in paths.items():
        phases = [("fwd", False)] + ([] if opts["no_backward"] else [("fwd+bwd", True)])
        for phase, backward in phases:

            def call(fn: Callable[..., Any] = fn) -> Any:
                return fn(**inputs)

            if backward:
                timed = _fwd_bwd(call, leaves)
            else:

                def timed(call: Callable[[], Any] = call) -> Any:
                    with torch.no_grad():
                        return call()

            ms = _time_ms(timed, device, opts["warmup"], opts["iters"])
            tick(f"msda {case} {path} {phase}")
            nbytes = _msda_bytes(n, s, lq, 8, 32, len(levels) * 4, elem, backward)
            rows.append(
                {
                    "level": "msda",
                    "case": case,
                    "path": path,
                    "phase": phase,
                    "ms": ms,
                    "gbs": nbytes / ms / 1e6,
                    "bytes": nbytes,
                }
            )
    return rows


def _bench_module(
    case: str,
    n: int,
    lq: int,
    levels: list,
    device: Any,
    opts: dict,
    triton: bool,
    tick: Callable[[str], None] = _no_tick,
) -> list[dict]:
    import torch

    from kernels.lora import LoRALinear
    from kernels.msda import MSDeformAttn
    from kernels.native import native_available
    from kernels.reference import sampling_locations_torch

    torch.manual_seed(0)
    mod = MSDeformAttn(d_model=256, n_levels=len(levels), n_heads=8, n_points=4).to(device)
    mod.sampling_offsets = LoRALinear.wrap(mod.sampling_offsets, rank=8, alpha=16.0)
    mod.value_proj = LoRALinear.wrap(mod.value_proj, rank=8, alpha=16.0)
    for p in list(mod.parameters()):
        p.requires_grad_(False)
    for sub in (mod.sampling_offsets, mod.value_proj):
        torch.nn.init.normal_(sub.lora_B, std=0.01)
        sub.lora_A.requires_grad_(True)
        sub.lora_B.requires_grad_(True)
    inputs = _make_inputs(n, lq, levels, torch.float32, device)
    s = inputs["value"].shape[1]
    gen = torch.Generator(device="cpu").manual_seed(1)
    query = torch.randn(n, lq, 256, generator=gen).to(device).requires_grad_(True)
    src = torch.randn(n, s, 256, generator=gen).to(device).requires_grad_(True)
    ref = torch.rand(n, lq, len(levels), 2, generator=gen).to(device)
    args = (query, ref, src, inputs["spatial_shapes"], inputs["level_start_index"])
    leaves = [query, src] + [p for p in mod.parameters() if p.requires_grad]

    def unfused_triton() -> Any:
        # what the module would do without the fusion: offsets and locations materialised in HBM
        from kernels.triton_ops import ms_deform_attn_triton

        m, lv, p = mod.n_heads, mod.n_levels, mod.n_points
        value = mod.value_proj(src).view(n, s, m, 32)
        offsets = mod.sampling_offsets(query).view(n, lq, m, lv, p, 2)
        weights = mod.attention_weights(query).view(n, lq, m, lv * p).softmax(-1).view(n, lq, m, lv, p)
        locs = sampling_locations_torch(ref, offsets, inputs["spatial_shapes"], p)
        out = ms_deform_attn_triton(
            value, inputs["spatial_shapes"], inputs["level_start_index"], locs, weights
        )
        return mod.output_proj(out)

    def with_backend(backend: str) -> Callable[[], Any]:
        def run() -> Any:
            mod.backend = backend  # type: ignore[assignment]
            return mod(*args)

        return run

    paths: dict[str, Callable[[], Any]] = {"torch": with_backend("torch")}
    if native_available(device.type):
        paths["native"] = with_backend("native")
    if triton:
        paths["triton_unfused"] = unfused_triton
        paths["triton_fused"] = with_backend("triton")
    rows = []
    for path, fn in paths.items():
        phases = [("fwd", False)] + ([] if opts["no_backward"] else [("fwd+bwd", True)])
        for phase, backward in phases:
            if backward:
                timed = _fwd_bwd(fn, leaves)
            else:

                def timed(fn: Callable[[], Any] = fn) -> Any:
                    with torch.no_grad():
                        return fn()

            ms = _time_ms(timed, device, opts["warmup"], opts["iters"])
            tick(f"module {case} {path} {phase}")
            rows.append({"level": "module", "case": case, "path": path, "phase": phase, "ms": ms})
    return rows


def _ratios(rows: list[dict]) -> list[dict]:
    """Speed-up of every non-torch path over the torch path of the same (level, case, phase)."""
    base = {(r["level"], r["case"], r["phase"]): r["ms"] for r in rows if r["path"] == "torch"}
    out = []
    for r in rows:
        key = (r["level"], r["case"], r["phase"])
        if r["path"] != "torch" and key in base:
            out.append(
                {
                    "level": r["level"],
                    "case": r["case"],
                    "phase": r["phase"],
                    "path": r["path"],
                    "speedup_vs_torch": base[key] / r["ms"],
                }
            )
    return out


def _write_json(path: Path, payload: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(payload, indent=2) + "\n")
    os.replace(tmp, path)


def _gpu_check(args: argparse.Namespace) -> int:
    from kernels import gpu_check

    argv = [
        "--out",
        args.out or str(gpu_check.ROOT / "kernels" / "benchmarks"),
        "--budget-s",
        str(args.budget_s),
    ]
    return gpu_check.main(argv)


def main(args: argparse.Namespace) -> int:
    import torch

    from models.errors import UserError

    if getattr(args, "gpu_check", False):
        if not torch.cuda.is_available():
            raise UserError("--gpu-check: no CUDA device is available (run it on an H100/H200 machine)")
        return _gpu_check(args)

    cases = [c.strip() for c in str(args.cases).split(",") if c.strip()]
    if not cases or any(c not in ("encoder", "decoder") for c in cases):
        raise UserError(f"--cases must be a comma list of encoder,decoder, got {args.cases!r}")
    if args.batch < 1:
        raise UserError(f"--batch must be >= 1, got {args.batch}")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA device is available")
    use_cuda = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    device = torch.device("cuda" if use_cuda else "cpu")
    warmup = args.warmup if args.warmup is not None else (5 if use_cuda else 1)
    iters = args.iters if args.iters is not None else (50 if use_cuda else 3)
    if warmup < 0 or iters < 1:
        raise UserError("--warmup must be >= 0 and --iters >= 1")
    if args.out is not None and os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        print("note: TRITON_INTERPRET is set; interpreter timings are meaningless and Triton is not timed")
    dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[args.dtype]
    levels = [(h // 4, w // 4) for h, w in LEVELS_1024] if args.small else list(LEVELS_1024)
    tokens = sum(h * w for h, w in levels)
    name = _device_name(device)
    opts = {"warmup": warmup, "iters": iters, "no_backward": args.no_backward}
    from kernels.native import native_available, native_version

    notes = []
    native = f"torch-ms-deform-attn {native_version()}" if native_available(device.type) else None
    if not use_cuda:
        timed = "grid_sample" + (f" and the compiled operator ({native})" if native else "")
        notes.append(f"Triton needs CUDA: {timed} timed on the CPU")
        print(f"device: {name} -- Triton needs CUDA; timing {timed}")
    else:
        print(f"device: {name}" + (f"; CUDA reference: {native}" if native else ""))
    print(
        f"shapes: batch {args.batch}, levels {levels} ({tokens} tokens), 8 heads x 32 ch, 4 points, "
        f"{args.dtype}; warmup {warmup}, iters {iters}"
    )

    from models.progress import Progress

    rows: list[dict] = []
    kinds = [k for k in ("msda", "module") if args.levels in (k, "both")]
    phases = 1 if args.no_backward else 2
    total = len(cases) * phases * sum(_paths(k, device, use_cuda) for k in kinds)
    # Progress on stderr (stdout is the table): one unit per timed (case, level, path, phase).
    with Progress("off" if getattr(args, "quiet", False) else "auto") as progress:
        progress.add("kernel", "bench kernel", total=total)

        def tick(label: str) -> None:
            progress.update("kernel", advance=1, info=label)

        for case in cases:
            lq = tokens if case == "encoder" else DECODER_QUERIES
            if "msda" in kinds:
                rows += _bench_msda(case, args.batch, lq, levels, dtype, device, opts, use_cuda, tick)
            if "module" in kinds:
                rows += _bench_module(case, args.batch, lq, levels, device, opts, use_cuda, tick)
    peak = _peak(name) if use_cuda else None
    for r in rows:
        if "gbs" in r and peak:
            r["pct_of_peak_hbm"] = 100.0 * r["gbs"] / peak
    ratios = _ratios(rows)

    pct_head = f" {'%peak':>6}" if peak else ""
    print(f"{'level':7} {'case':8} {'path':15} {'phase':8} {'ms':>10} {'GB/s':>9} {'x torch':>8}{pct_head}")
    speed = {(x["level"], x["case"], x["phase"], x["path"]): x["speedup_vs_torch"] for x in ratios}
    for r in rows:
        gbs = f"{r['gbs']:9.1f}" if "gbs" in r else f"{'-':>9}"
        ratio = speed.get((r["level"], r["case"], r["phase"], r["path"]))
        ratio_s = f"{ratio:8.2f}" if ratio is not None else f"{'1.00' if r['path'] == 'torch' else '-':>8}"
        pct = (f" {r['pct_of_peak_hbm']:6.1f}" if "pct_of_peak_hbm" in r else f" {'-':>6}") if peak else ""
        print(
            f"{r['level']:7} {r['case']:8} {r['path']:15} {r['phase']:8} {r['ms']:10.3f} {gbs} {ratio_s}{pct}"
        )
    if peak:
        print(f"peak HBM assumed for {name}: {peak:.0f} GB/s")
    print("GB/s counts each input read once and each output written once (compulsory bytes)")

    if args.out is not None:
        import triton

        payload = {
            "benchmark": "kernel",
            "device": name,
            "device_type": device.type,
            "torch": torch.__version__,
            "triton": triton.__version__,
            "dtype": args.dtype,
            "batch": args.batch,
            "levels": levels,
            "tokens": tokens,
            "decoder_queries": DECODER_QUERIES,
            "heads": 8,
            "channels_per_head": 32,
            "points": 4,
            "warmup": warmup,
            "iters": iters,
            "peak_hbm_gbs": peak,
            "native_operator": native,
            "results": rows,
            "ratios": ratios,
            "notes": notes,
        }
        out = Path(args.out)
        if out.is_dir() or str(args.out).endswith(("/", os.sep)) or out.suffix != ".json":
            out = out / f"kernel_{_slug(name)}.json"
        _write_json(out, payload)
        print(f"wrote {out}")
    return 0
