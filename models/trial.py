"""One trial: adapt a pretrained model with one PEFT config on one domain, then measure it.

Sequence (the contract the sweep relies on):

1. :func:`prepare_trial` builds the model (``models.build_model``), loads the base checkpoint
   (``models.checkpoint.load_checkpoint``, class head re-initialised when the class count
   differs), applies the PEFT method (``models.peft``), then measures parameters and the latency
   of the *deployed* form (a deep copy with LoRA merged and adapters in place) BEFORE any training,
   so a sweep can drop infeasible configurations cheaply.
2. :meth:`PreparedTrial.train_and_evaluate` trains ``iterations`` steps, calls
   ``report(iteration, metrics)`` every ``eval_every`` iterations with at least
   ``{"iteration", "ap", "loss"}`` (an evaluation on the eval split), evaluates at the end and
   returns a :class:`TrialRecord`. ``report`` returning True stops training early (the record is
   then evaluated at the iteration reached).
3. A diverged run (non-finite loss or gradient) returns ``status="failed"`` with the reason in
   ``error`` and NaN metrics — never AP 0. Parameters and latency stay filled in.
4. Resume: :meth:`PreparedTrial.save_state` (typically from inside ``report``) writes the training
   state at the last completed iteration — trainable parameters and buffers, optimizer,
   LR scheduler, RNG states (torch, numpy, python), iteration, recent losses — to
   ``<dir>/trial_state.pt`` atomically. A fresh :func:`prepare_trial` of the same spec then
   ``load_state(dir) -> iteration`` and ``train_and_evaluate(report, start_iteration=iteration)``
   continues exactly where the first run was (same data stream, same augmentations, same
   weights as an uninterrupted run). Evaluations for ``report`` do not touch the training RNG
   streams (saved and restored around them), so reporting never changes what is trained.
"""

from __future__ import annotations

import dataclasses
import math
import os
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from models.errors import UserError

if TYPE_CHECKING:
    from models.latency import LatencyCache

__all__ = ["TrialSpec", "TrialRecord", "PreparedTrial", "prepare_trial", "run_trial", "ReportFn"]

ReportFn = Callable[[int, dict[str, float]], Any]
STATE_FILE = "trial_state.pt"
_STATE_VERSION = 1


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


_METRICS = ("ap", "ap50", "ap75", "ap_s", "ap_m", "ap_l", "missed_rate", "tp_confidence", "small_recall")


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

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _resolve_device(name: str) -> Any:
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"trial spec: device {name!r} requested but CUDA is not available")
    return dev


def _load_data(spec: TrialSpec) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[str]]:
    """(train dicts, eval dicts, class names) through detectron2's DatasetCatalog."""
    from models.data.register import get_class_names, get_dataset_dicts, register_coco, register_synthetic

    if spec.train_json is None:
        train_syn = register_synthetic(
            spec.domain, "train", spec.seed, spec.num_train_images, spec.image_size
        )
        val_syn = register_synthetic(spec.domain, "val", spec.seed, spec.num_eval_images, spec.image_size)
        return (
            get_dataset_dicts(train_syn, drop_empty=True),
            get_dataset_dicts(val_syn),
            get_class_names(train_syn),
        )
    import hashlib

    assert spec.train_images is not None
    key = hashlib.sha1(f"{spec.train_json}|{spec.train_images}".encode()).hexdigest()[:10]
    train_name = register_coco(f"peftsweep_coco_{key}", spec.train_json, spec.train_images)
    train_all = get_dataset_dicts(train_name, drop_empty=False)
    classes = get_class_names(train_name)
    if spec.eval_json is not None:
        assert spec.eval_images is not None
        key = hashlib.sha1(f"{spec.eval_json}|{spec.eval_images}".encode()).hexdigest()[:10]
        eval_name = register_coco(f"peftsweep_coco_{key}", spec.eval_json, spec.eval_images)
        eval_dicts = get_dataset_dicts(eval_name)[: spec.num_eval_images]
        if get_class_names(eval_name) != classes:
            raise UserError(f"{spec.eval_json}: categories differ from {spec.train_json}")
        train: list[dict[str, Any]] = train_all
    else:
        if len(train_all) < 2:
            raise UserError(f"{spec.train_json}: need >= 2 images to hold some out for evaluation")
        n_eval = min(spec.num_eval_images, len(train_all) // 2)
        train, eval_dicts = train_all[:-n_eval], train_all[-n_eval:]
    train = [d for d in train if d.get("annotations")][: spec.num_train_images]
    if not train:
        raise UserError(f"{spec.train_json}: no training image with annotations")
    return train, eval_dicts, classes


@dataclass
class PreparedTrial:
    """A trial ready to train: model built, base loaded, PEFT applied, params + latency measured."""

    spec: TrialSpec
    model: Any
    device: Any
    class_names: list[str]
    train_dicts: list[dict[str, Any]]
    eval_dicts: list[dict[str, Any]]
    params: Any  # models.peft ParamCounts
    latency: Any  # models.latency.LatencyResult
    load_report: Any = None
    peft_info: Any = None
    prepare_seconds: float = 0.0
    # Training state (resume): built lazily, carried across a save_state/load_state round trip.
    _optimizer: Any = field(default=None, init=False, repr=False)
    _scheduler: Any = field(default=None, init=False, repr=False)
    _iteration: int = field(default=0, init=False)  # iterations completed
    _losses: list[float] = field(default_factory=list, init=False, repr=False)
    _rng: dict[str, Any] | None = field(default=None, init=False, repr=False)  # RNG at _iteration's boundary
    _loaded_iteration: int | None = field(default=None, init=False)

    def feasibility(self) -> dict[str, float]:
        """What a sweep checks before training: trainable/total params, latency (ms)."""
        return {
            "trainable_params": float(self.params.trainable),
            "total_params": float(self.params.total),
            "trainable_pct": float(self.params.trainable_pct),
            "latency_ms": float(self.latency.median_ms),
            "latency_p90_ms": float(self.latency.p90_ms),
        }

    def _record(self, **kw: Any) -> TrialRecord:
        return TrialRecord(
            trainable_params=int(self.params.trainable),
            total_params=int(self.params.total),
            trainable_pct=float(self.params.trainable_pct),
            latency_ms=float(self.latency.median_ms),
            latency_p90_ms=float(self.latency.p90_ms),
            device=str(self.latency.device),
            **kw,
        )

    def evaluate(self) -> Any:
        """EvalResult of the current model on the eval split."""
        from models.data.mapper import InstanceMapper, build_augmentations
        from models.evaluation import evaluate_model

        mapper = InstanceMapper(False, build_augmentations(False, self.spec.image_size))
        return evaluate_model(
            self.model,
            self.eval_dicts,
            mapper,
            self.class_names,
            batch_size=self.spec.eval_batch_size,
            device=self.device,
            score_threshold=self.spec.score_threshold,
        )

    def _optim_config(self) -> Any:
        from models.training import OptimConfig

        spec = self.spec
        warmup = spec.warmup_iters if spec.warmup_iters >= 0 else min(spec.iterations // 10, 50)
        return OptimConfig(
            lr=spec.lr,
            weight_decay=spec.weight_decay,
            warmup_iters=warmup,
            schedule=spec.schedule,
            grad_clip=spec.grad_clip,
        )

    def _ensure_optim(self) -> None:
        """Build the optimizer and LR schedule once; a resumed trial loads their state into them."""
        if self._optimizer is None:
            from models.training import build_optimizer, build_scheduler

            cfg = self._optim_config()
            self._optimizer = build_optimizer(self.model, cfg)
            self._scheduler = build_scheduler(self._optimizer, cfg, self.spec.iterations)

    def _state_tensors(self) -> dict[str, Any]:
        """What changes in training: trainable parameters and all buffers, by state_dict name."""
        trainable = {n for n, p in self.model.named_parameters() if p.requires_grad}
        names = trainable | {n for n, _ in self.model.named_buffers()}
        return {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items() if k in names}

    def save_state(self, directory: str | os.PathLike[str]) -> Path:
        """Write the training state at the last completed iteration to ``<directory>/trial_state.pt``.

        Written to a temporary name then renamed, so a crash never leaves a half-written state.
        Called from inside ``report`` it captures the state right after that iteration (the RNG
        as it was before the evaluation for the report). Returns the file's path.
        """
        import torch

        self._ensure_optim()
        state = {
            "version": _STATE_VERSION,
            "iteration": int(self._iteration),
            "spec": {k: v for k, v in self.spec.to_dict().items() if k not in ("threads", "device")},
            "tensors": self._state_tensors(),
            "optimizer": self._optimizer.state_dict(),
            "scheduler": self._scheduler.state_dict(),
            "rng": self._rng if self._rng is not None else _capture_rng(),
            # Enough history for final_loss (last 10) and the next report's mean loss.
            "losses": [float(v) for v in self._losses[-max(10, self.spec.eval_every) :]],
        }
        path = Path(directory) / STATE_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{STATE_FILE}.{os.getpid()}.tmp")
        torch.save(state, tmp)
        os.replace(tmp, path)
        return path

    def load_state(self, directory: str | os.PathLike[str]) -> int:
        """Restore what :meth:`save_state` wrote; returns the iteration to resume from.

        The trial must be prepared from the same spec (device and threads may differ):
        another spec, or a state of other parameter names/shapes, raises UserError.
        """
        import torch

        path = Path(directory) / STATE_FILE
        if not path.is_file():
            raise UserError(f"{path}: no trial state to resume from")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # a truncated or foreign file
            raise UserError(f"{path}: unreadable trial state ({exc.__class__.__name__})") from None
        if not isinstance(state, dict) or state.get("version") != _STATE_VERSION:
            raise UserError(f"{path}: not a trial state of version {_STATE_VERSION}")
        mine = {k: v for k, v in self.spec.to_dict().items() if k not in ("threads", "device")}
        if state["spec"] != mine:
            diff = sorted(k for k in mine if state["spec"].get(k) != mine[k])
            raise UserError(f"{path}: saved for another trial spec (differs in {', '.join(diff)})")
        own = self._state_tensors()
        tensors = state["tensors"]
        if set(tensors) != set(own) or any(tensors[k].shape != own[k].shape for k in own):
            raise UserError(f"{path}: trainable parameters do not match this trial's model")
        self.model.load_state_dict(tensors, strict=False)
        self._ensure_optim()
        self._optimizer.load_state_dict(state["optimizer"])
        self._scheduler.load_state_dict(state["scheduler"])
        self._iteration = int(state["iteration"])
        self._losses = [float(v) for v in state["losses"]]
        self._rng = state["rng"]
        self._loaded_iteration = self._iteration
        return self._iteration

    def train_and_evaluate(self, report: ReportFn | None = None, start_iteration: int = 0) -> TrialRecord:
        """Train, report every ``eval_every`` iterations, evaluate; see the module docstring.

        ``start_iteration`` > 0 continues a run restored by :meth:`load_state` (it must be the
        iteration that returned); 0 starts from the prepared model with a fresh optimizer.
        """
        import numpy as np
        import torch

        from models.data.mapper import InstanceMapper, batch_iterator, build_augmentations
        from models.training import DivergenceError, train_loop

        spec = self.spec
        if start_iteration:
            if start_iteration != self._loaded_iteration:
                raise UserError(
                    f"start_iteration: {start_iteration} given but the loaded state is at "
                    f"{self._loaded_iteration} (call load_state first)"
                )
            _restore_rng(self._rng or {})
        else:
            # A fresh run: fresh optimizer state even if this object trained before.
            self._optimizer = self._scheduler = None
            self._iteration, self._losses, self._rng = 0, [], None
            # Every stream training draws from (augmentations use numpy's global RNG): a trial
            # is a function of its spec.
            torch.manual_seed(spec.seed)
            np.random.seed(spec.seed % 2**32)
            random.seed(spec.seed)
        self._loaded_iteration = None
        self._ensure_optim()
        cfg = self._optim_config()
        mapper = InstanceMapper(
            True, build_augmentations(True, spec.image_size, flip=spec.flip, lsj=spec.lsj)
        )
        batches = batch_iterator(
            self.train_dicts, mapper, spec.batch_size, seed=spec.seed, skip=start_iteration
        )

        last_eval: dict[str, Any] = {}  # iteration -> metrics of the latest intermediate evaluation

        def on_progress(iteration: int, loss: float) -> bool:
            # The state at this iteration's boundary, for save_state calls made inside report.
            self._iteration = iteration
            self._rng = _capture_rng()
            if report is None:
                return False
            evaluated = self.evaluate().to_dict()
            _restore_rng(self._rng)  # evaluation must not shift the training random streams
            last_eval.clear()
            last_eval[str(iteration)] = evaluated
            self.model.train()
            return report(iteration, {"iteration": float(iteration), "loss": loss, **evaluated}) is True

        t0 = time.perf_counter()
        try:
            result = train_loop(
                self.model,
                batches,
                spec.iterations,
                cfg,
                self.device,
                callback=on_progress if report is not None and spec.eval_every > 0 else None,
                callback_every=spec.eval_every,
                inject_nan_at=spec.inject_nan_at,
                optimizer=self._optimizer,
                scheduler=self._scheduler,
                start_iteration=start_iteration,
                losses=self._losses,
            )
            self._iteration, self._rng = result.iterations, None
        except DivergenceError as exc:
            return self._record(
                status="failed",
                error=str(exc),
                train_seconds=time.perf_counter() - t0,
                iterations=exc.iteration - 1,
            )
        except torch.OutOfMemoryError as exc:
            return self._record(
                status="failed",
                error=f"out of memory: {str(exc).splitlines()[0]}",
                train_seconds=time.perf_counter() - t0,
            )
        train_seconds = time.perf_counter() - t0
        # The model after the last iteration may just have been evaluated for a report: reuse it.
        metrics = last_eval.get(str(result.iterations)) or self.evaluate().to_dict()
        return self._record(
            status="completed",
            train_seconds=train_seconds,
            iterations=result.iterations,
            final_loss=result.final_loss,
            **{k: metrics[k] for k in _METRICS},
        )


def _capture_rng() -> dict[str, Any]:
    """Every RNG training draws from (dropout, sampling, augmentations), in a weights-only-loadable form."""
    import numpy as np
    import torch

    kind, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "kind": str(kind),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached": float(cached),
        },
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _restore_rng(state: Mapping[str, Any]) -> None:
    """Inverse of :func:`_capture_rng` (missing parts are left as they are)."""
    import numpy as np
    import torch

    if "torch" in state:
        torch.set_rng_state(state["torch"])
    if "numpy" in state:
        n = state["numpy"]
        keys = n["keys"].numpy().astype(np.uint32)
        np.random.set_state((n["kind"], keys, n["pos"], n["has_gauss"], n["cached"]))
    if "python" in state:
        version, internal, gauss = state["python"]
        random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(list(state["cuda"]))


def prepare_trial(
    spec: TrialSpec | Mapping[str, Any], latency_cache: LatencyCache | None = None
) -> PreparedTrial:
    """Build model, load base, apply PEFT, measure params + deployed latency (no training yet).

    With ``latency_cache`` the latency is measured once per deployed architecture
    (:func:`models.latency.deployed_architecture`), model, class count, input size and device, and
    reused: merged LoRA of any rank then shares the base network's figure instead of each trial
    drawing its own timing noise."""
    import torch

    import models
    from models.latency import (
        LatencyResult,
        deployed_architecture,
        deployed_copy,
        device_name,
        measure_latency,
    )
    from models.peft import apply_method, build_method_config, count_parameters

    if not isinstance(spec, TrialSpec):
        spec = TrialSpec.from_dict(spec)
    else:
        spec.validate()
    t0 = time.perf_counter()
    if spec.threads > 0:
        torch.set_num_threads(spec.threads)
    device = _resolve_device(spec.device)
    train_dicts, eval_dicts, class_names = _load_data(spec)
    method_config = build_method_config(spec.method, **dict(spec.method_params))
    torch.manual_seed(spec.seed)
    model = models.build_model(spec.model, len(class_names))
    load_report = None
    if spec.base_checkpoint:
        from models.checkpoint import load_checkpoint

        load_report = load_checkpoint(model, spec.base_checkpoint, num_classes=len(class_names))
    # Tensors the checkpoint could not provide for this class count (the class head) are fresh:
    # they must train whatever the method, or the trial would evaluate a random classifier.
    reinitialised = tuple(getattr(load_report, "reinitialised", ()) or ())
    peft_info = apply_method(model, method_config, reinitialized=reinitialised)
    model.to(device)
    params = count_parameters(model)

    def measure() -> LatencyResult:
        return measure_latency(
            deployed_copy(model), spec.image_size, device, warmup=spec.latency_warmup, runs=spec.latency_runs
        )

    if latency_cache is None:
        latency = measure()
    else:
        key = (
            f"{spec.model}|classes={len(class_names)}|{spec.image_size}px|{device_name(device)}|"
            f"{deployed_architecture(method_config)}"
        )
        hit = latency_cache.get(key)
        latency = LatencyResult.from_dict(
            hit if hit is not None else latency_cache.put(key, measure().to_dict())
        )
    return PreparedTrial(
        spec=spec,
        model=model,
        device=device,
        class_names=class_names,
        train_dicts=train_dicts,
        eval_dicts=eval_dicts,
        params=params,
        latency=latency,
        load_report=load_report,
        peft_info=peft_info,
        prepare_seconds=time.perf_counter() - t0,
    )


def run_trial(spec: TrialSpec | Mapping[str, Any], report: ReportFn | None = None) -> TrialRecord:
    """:func:`prepare_trial` then :meth:`PreparedTrial.train_and_evaluate`."""
    return prepare_trial(spec).train_and_evaluate(report=report)
