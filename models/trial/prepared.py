"""A prepared trial: training, evaluation, and the resume state written between reports."""

from __future__ import annotations

import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from models.errors import UserError
from models.trial.rng import capture_rng, restore_rng
from models.trial.spec import METRICS, ReportFn, TrialRecord, TrialSpec

__all__ = ["PreparedTrial", "STATE_FILE"]

STATE_FILE = "trial_state.pt"
_STATE_VERSION = 2


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
    _start_iteration: int = field(default=0, init=False)  # where the last train_and_evaluate began

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
            start_iteration=int(self._start_iteration),
            base_load=self.load_report.short() if self.load_report is not None else "",
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
        """What training changes, by state_dict name: the trainable parameters and the running
        statistics of BatchNorm layers in train mode. The frozen base is rebuilt by
        :func:`prepare_trial` from the spec (same base checkpoint, same seed), so it is not saved."""
        import torch

        names = {n for n, p in self.model.named_parameters() if p.requires_grad}
        for mod_name, mod in self.model.named_modules():
            if isinstance(mod, torch.nn.modules.batchnorm._BatchNorm) and mod.track_running_stats:
                prefix = f"{mod_name}." if mod_name else ""
                names |= {prefix + b for b, _ in mod.named_buffers(recurse=False)}
        return {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items() if k in names}

    def _data_order(self) -> dict[str, Any]:
        """The training stream's position: batches come from a reshuffle per epoch seeded by
        ``seed`` over exactly these images, so (seed, images, batch size, batches drawn) fixes it;
        the images are named by a digest so that a resume over other data is refused."""
        import hashlib

        names = "\n".join(
            str(d.get("file_name", d.get("image_id", i))) for i, d in enumerate(self.train_dicts)
        )
        return {
            "seed": int(self.spec.seed),
            "batch_size": int(self.spec.batch_size),
            "batches_drawn": int(self._iteration),
            "num_images": len(self.train_dicts),
            "images_sha1": hashlib.sha1(names.encode()).hexdigest(),
        }

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
            "rng": self._rng if self._rng is not None else capture_rng(),
            "data_order": self._data_order(),
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
        saved_order = dict(state.get("data_order") or {})
        mine_order = {k: v for k, v in self._data_order().items() if k != "batches_drawn"}
        if {k: saved_order.get(k) for k in mine_order} != mine_order:
            raise UserError(f"{path}: saved for other training images (data order differs)")
        if saved_order.get("batches_drawn") != int(state["iteration"]):
            raise UserError(f"{path}: data position {saved_order.get('batches_drawn')} != iteration")
        # Copied in place, not through load_state_dict: a partial state dict without version
        # metadata makes detectron2's FrozenBatchNorm2d reset the running statistics it lacks
        # (running_var 1 instead of 1 - eps), and the resumed run would drift from the original.
        current = self.model.state_dict()
        with torch.no_grad():
            for k, v in tensors.items():
                current[k].copy_(v)
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
            restore_rng(self._rng or {})
            self._start_iteration = start_iteration
        else:
            # A fresh run: fresh optimizer state even if this object trained before.
            self._optimizer = self._scheduler = None
            self._iteration, self._losses, self._rng = 0, [], None
            self._start_iteration = 0
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
            self._rng = capture_rng()
            if report is None:
                return False
            evaluated = self.evaluate().to_dict()
            restore_rng(self._rng)  # evaluation must not shift the training random streams
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
            **{k: metrics[k] for k in METRICS},
        )
