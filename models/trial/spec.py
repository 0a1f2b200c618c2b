"""What a trial is given (:class:`TrialSpec`, validated) and what it returns (:class:`TrialRecord`)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from models.errors import UserError

__all__ = ["TrialSpec", "TrialRecord", "ReportFn", "METRICS"]

ReportFn = Callable[[int, dict[str, float]], Any]


@dataclass(frozen=True)
class TrialSpec:
    """Everything one trial needs. Build from loose values with :meth:`from_dict` (UserError on bad fields).

    Data: a synthetic ``domain`` (default), or a COCO dataset given by ``train_json`` +
    ``train_images`` (and optionally ``eval_json`` + ``eval_images``; without them the last
    ``num_eval_images`` training images are held out).
    """

    model: str = "maskdino_tiny"
    domain: str = "clean"
    method: str = "lora"
    method_params: Mapping[str, Any] = field(default_factory=dict)
    base_checkpoint: str | None = None
    iterations: int = 100
    eval_every: int = 0  # 0: no intermediate reports
    batch_size: int = 2
    lr: float = 1e-4
    weight_decay: float = 0.05
    warmup_iters: int = -1  # -1: min(10% of iterations, 50)
    schedule: str = "cosine"
    grad_clip: float = 1.0
    image_size: int = 128
    lsj: bool = False
    flip: bool = True
    num_train_images: int = 64
    num_eval_images: int = 16
    eval_batch_size: int = 4
    score_threshold: float = 0.2  # models.evaluation.DEFAULT_SCORE_THRESHOLD
    seed: int = 0
    device: str = "auto"
    latency_warmup: int = 2
    latency_runs: int = 5
    train_json: str | None = None
    train_images: str | None = None
    eval_json: str | None = None
    eval_images: str | None = None
    inject_nan_at: int | None = None  # debugging/tests: NaN loss at this (1-based) iteration
    threads: int = 0  # torch CPU threads for this process (0: leave as is); 1 per trial on shared CPUs

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> TrialSpec:
        """Build + validate from a mapping; unknown keys and bad values raise UserError naming them."""
        names = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - set(names))
        if unknown:
            raise UserError(f"trial spec: unknown field {unknown[0]!r}; allowed: {', '.join(sorted(names))}")
        kwargs: dict[str, Any] = {}
        for k, v in values.items():
            default = names[k].default
            if v is not None and isinstance(default, bool):
                if not isinstance(v, bool):
                    raise UserError(f"trial spec: {k} must be true/false, got {v!r}")
            elif v is not None and isinstance(default, int) and not isinstance(default, bool):
                if isinstance(v, bool) or not (
                    isinstance(v, int) or (isinstance(v, float) and v.is_integer())
                ):
                    raise UserError(f"trial spec: {k} must be an integer, got {v!r}")
                v = int(v)
            elif v is not None and isinstance(default, float):
                if isinstance(v, bool) or not isinstance(v, int | float):
                    raise UserError(f"trial spec: {k} must be a number, got {v!r}")
                v = float(v)
            elif k == "method_params":
                if not isinstance(v, Mapping):
                    raise UserError(f"trial spec: method_params must be a mapping, got {v!r}")
                v = dict(v)
            kwargs[k] = v
        spec = cls(**kwargs)
        spec.validate()
        return spec

    def validate(self) -> None:
        def need(ok: bool, msg: str) -> None:
            if not ok:
                raise UserError(f"trial spec: {msg}")

        need(
            self.inject_nan_at is None or (isinstance(self.inject_nan_at, int) and self.inject_nan_at >= 1),
            f"inject_nan_at must be a positive integer or null, got {self.inject_nan_at!r}",
        )
        for name in ("model", "domain", "method", "device", "schedule"):
            need(
                isinstance(getattr(self, name), str), f"{name} must be a string, got {getattr(self, name)!r}"
            )
        need(self.threads >= 0, f"threads must be >= 0, got {self.threads}")
        need(self.iterations >= 0, f"iterations must be >= 0, got {self.iterations}")
        need(self.eval_every >= 0, f"eval_every must be >= 0, got {self.eval_every}")
        need(self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}")
        need(self.lr > 0, f"lr must be > 0, got {self.lr}")
        need(self.image_size >= 32, f"image_size must be >= 32, got {self.image_size}")
        need(self.num_train_images >= 1, f"num_train_images must be >= 1, got {self.num_train_images}")
        need(self.num_eval_images >= 1, f"num_eval_images must be >= 1, got {self.num_eval_images}")
        need(0 <= self.score_threshold <= 1, f"score_threshold must be in [0, 1], got {self.score_threshold}")
        need(self.latency_runs >= 1, f"latency_runs must be >= 1, got {self.latency_runs}")
        need(self.latency_warmup >= 0, f"latency_warmup must be >= 0, got {self.latency_warmup}")
        need(
            self.device == "auto" or self.device.split(":")[0] in ("cpu", "cuda"),
            f"device must be auto, cpu, cuda or cuda:N, got {self.device!r}",
        )
        need(
            (self.train_json is None) == (self.train_images is None),
            "train_json and train_images go together",
        )
        need((self.eval_json is None) == (self.eval_images is None), "eval_json and eval_images go together")
        need(self.eval_json is None or self.train_json is not None, "eval_json needs train_json")
        if self.train_json is None:
            from models.data.synthetic import domain_spec

            domain_spec(self.domain)
        from models.training import SCHEDULES

        need(
            self.schedule in SCHEDULES,
            f"schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}",
        )

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["method_params"] = dict(self.method_params)
        return d


METRICS = ("ap", "ap50", "ap75", "ap_s", "ap_m", "ap_l", "missed_rate", "tp_confidence", "small_recall")


@dataclass
class TrialRecord:
    """Outcome of one trial; :meth:`to_dict` is a flat dict of scalars (the sweep's row)."""

    status: str  # "completed" | "failed"
    error: str = ""
    ap: float = math.nan
    ap50: float = math.nan
    ap75: float = math.nan
    ap_s: float = math.nan
    ap_m: float = math.nan
    ap_l: float = math.nan
    missed_rate: float = math.nan
    tp_confidence: float = math.nan
    small_recall: float = math.nan
    trainable_params: int = 0
    total_params: int = 0
    trainable_pct: float = math.nan
    latency_ms: float = math.nan
    latency_p90_ms: float = math.nan
    device: str = ""
    train_seconds: float = 0.0
    iterations: int = 0
    final_loss: float = math.nan
    start_iteration: int = 0  # > 0: continued from a saved state after that many iterations
    base_load: str = ""  # the base checkpoint's load summary (models.checkpoint.LoadReport.short)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
