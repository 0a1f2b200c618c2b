"""Inference latency of a model as deployed (``peftsweep bench latency`` is search.benchmarks.latency).

:func:`measure_latency` times full forward passes of a detectron2-convention model in eval mode
under ``torch.inference_mode`` on one fixed-size input: ``warmup`` untimed passes, then ``runs``
timed passes; it reports the median and the 90th percentile. On CUDA each pass is timed with CUDA
events (GPU time, synchronised); on CPU with ``time.perf_counter``. The caller is responsible for
passing the model in its deployed form: peft methods merged (``models.peft.merge_for_inference``),
sequential adapters in place — :func:`deployed_copy` produces that from a training-time model.

Importing this module is cheap (torch is imported inside functions).
"""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any, Protocol

__all__ = [
    "LatencyResult",
    "LatencyCache",
    "deployed_architecture",
    "device_name",
    "deployed_copy",
    "measure_latency",
    "measure_latency_interleaved",
]


@dataclass(frozen=True)
class LatencyResult:
    """Milliseconds per forward pass (batch 1) on ``device`` (a human-readable device name)."""

    median_ms: float
    p90_ms: float
    device: str
    image_size: tuple[int, int]
    runs: int
    warmup: int

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["image_size"] = list(self.image_size)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> LatencyResult:
        return cls(
            median_ms=float(d["median_ms"]),
            p90_ms=float(d["p90_ms"]),
            device=str(d["device"]),
            image_size=(int(d["image_size"][0]), int(d["image_size"][1])),
            runs=int(d["runs"]),
            warmup=int(d["warmup"]),
        )


# Methods whose deployed network runs exactly the base network's computation: the peft methods
# merge into the weights they adapt (LoRA and its variants: W + scale * B A, DoRA's row rescaling,
# PiSSA / OLoRA's residual + B A; LoHa: W + its Hadamard product; IA3: rows of W and b scaled) and
# a split attention is packed back; the head baselines only change weights.
_BASE_COMPUTATION = frozenset({"lora", "loha", "ia3", "full_head", "decoder_only", "class_mask"})


def deployed_architecture(method_config: Any) -> str:
    """What the deployed network's computation depends on, besides model, class count and input
    size: ``"base"`` for methods that deploy the base network's computation, otherwise the method
    and its structural fields (never the learning rate; any field a method has may matter)."""
    if method_config.method in _BASE_COMPUTATION:
        return "base"
    fields = {k: v for k, v in method_config.to_dict().items() if k != "extra_trainable"}
    return json.dumps(fields, sort_keys=True)


class LatencyCache(Protocol):
    """Latency measured once per deployed architecture and device, shared by trials.

    ``put`` stores only when the key is absent and returns what is stored: two trials that measured
    the same new architecture at once both end up with the first value."""

    def get(self, key: str) -> dict[str, Any] | None: ...

    def put(self, key: str, value: dict[str, Any]) -> dict[str, Any]: ...


def device_name(device: Any) -> str:
    """'NVIDIA H100 80GB HBM3' for a CUDA device, 'cpu (<processor>, <n> threads)' otherwise."""
    import torch

    dev = torch.device(device)
    if dev.type == "cuda":
        return str(torch.cuda.get_device_name(dev))
    proc = platform.processor() or platform.machine()
    return f"cpu ({proc}, {torch.get_num_threads()} threads)"


def deployed_copy(model: Any) -> Any:
    """A deep copy of ``model`` in its deployed form: LoRA merged, adapters kept, eval mode.

    The original (still being trained) is left untouched.
    """
    import copy

    from models.peft import merge_for_inference

    deployed = copy.deepcopy(model)
    merge_for_inference(deployed)
    return deployed.eval()


def _percentile(sorted_values: list[float], q: float) -> float:
    # Linear interpolation between closest ranks (numpy's default), without importing numpy.
    if len(sorted_values) == 1:
        return sorted_values[0]
    pos = (len(sorted_values) - 1) * q
    lo = int(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def measure_latency(
    model: Any, image_size: int | tuple[int, int], device: Any = "cpu", warmup: int = 3, runs: int = 10
) -> LatencyResult:
    """Median and p90 latency (ms) of ``model([{"image", "height", "width"}])`` at a fixed size.

    The input is a seeded random uint8 RGB image of ``image_size`` (int = square). The model is
    moved to ``device`` and put in eval mode (its training flag is restored afterwards).
    """
    return measure_latency_interleaved({"model": model}, image_size, device, warmup, runs)["model"]


def measure_latency_interleaved(
    models: dict[str, Any],
    image_size: int | tuple[int, int],
    device: Any = "cpu",
    warmup: int = 3,
    runs: int = 10,
    on_pass: Callable[[], None] | None = None,
) -> dict[str, LatencyResult]:
    """:func:`measure_latency` for several models, timed round-robin (one pass of each per round).

    Interleaving makes ratios between models robust to load that drifts during the measurement
    (shared CPUs, GPU clocks), which timing one model after the other is not. ``on_pass`` is
    called after every pass, warm-up included (a progress display; outside the timed region).
    """
    import torch

    if runs < 1 or warmup < 0:
        raise ValueError("measure_latency: runs >= 1 and warmup >= 0 required")
    h, w = (
        (image_size, image_size) if isinstance(image_size, int) else (int(image_size[0]), int(image_size[1]))
    )
    dev = torch.device(device)
    gen = torch.Generator().manual_seed(0)
    image = torch.randint(0, 256, (3, h, w), generator=gen, dtype=torch.uint8).to(dev)
    batch = [{"image": image, "height": h, "width": w}]
    flags = {name: m.training for name, m in models.items()}
    times: dict[str, list[float]] = {name: [] for name in models}
    try:
        for m in models.values():
            m.to(dev).eval()
        with torch.inference_mode():
            for _ in range(warmup):
                for m in models.values():
                    m(batch)
                    if on_pass is not None:
                        on_pass()
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            for _ in range(runs):
                for name, m in models.items():
                    times[name].append(_time_one(m, batch, dev))
                    if on_pass is not None:
                        on_pass()
    finally:
        for name, m in models.items():
            m.train(flags[name])
    out = {}
    for name, t in times.items():
        t.sort()
        out[name] = LatencyResult(
            median_ms=_percentile(t, 0.5),
            p90_ms=_percentile(t, 0.9),
            device=device_name(dev),
            image_size=(h, w),
            runs=runs,
            warmup=warmup,
        )
    return out


def _time_one(model: Any, batch: list[dict[str, Any]], dev: Any) -> float:
    """One forward pass in ms: CUDA events (GPU time) on CUDA, perf_counter on CPU."""
    import torch

    if dev.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        model(batch)
        end.record()
        end.synchronize()
        return float(start.elapsed_time(end))
    t0 = time.perf_counter()
    model(batch)
    return (time.perf_counter() - t0) * 1000.0
