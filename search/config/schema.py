"""Sweep configuration: the pydantic v2 schema (unknown keys rejected everywhere, ``extra="forbid"``).

Loading, error messages and path handling are in :mod:`search.config.loading`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from search.config.names import (
    KNOWN_METRICS,
    LORA_INITS,
    METHODS,
    PARAM_NAMES,
    PRETRAIN_METRICS,
    SYNTHETIC_DOMAINS,
    allowed_names,
)

__all__ = [
    "ModelSettings",
    "Study",
    "DomainSpec",
    "LoraSpace",
    "LohaSpace",
    "Ia3Space",
    "AdapterSpace",
    "FloatRange",
    "SearchSpaceConfig",
    "Objective",
    "Constraint",
    "Budget",
    "SamplerSettings",
    "EarlyStopping",
    "TrialSettings",
    "WandbSettings",
    "SweepConfig",
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelSettings(_Strict):
    """Which model to adapt and the pretrained base it starts from.

    In a ``models:`` list each entry is one model of the sweep; its studies are named
    ``<label>.<domain>`` (label defaults to the model name)."""

    name: str = "maskdino_tiny"
    base_checkpoint: str | None = None
    # Study-name prefix: needed when one model name appears twice (e.g. two base checkpoints).
    label: str | None = None
    # Trials per study of this model (default: budget.trials); budget.per_study overrides per study.
    trials: int | None = Field(default=None, ge=1)
    # Trial settings that differ per model (image size, batch, ...): merged over trial.extra.
    extra: dict[str, Any] = Field(default_factory=dict)

    @field_validator("label")
    @classmethod
    def _label(cls, v: str | None) -> str | None:
        if v is not None and (not v or not all(c.isalnum() or c in "-_" for c in v)):
            raise ValueError("use letters, digits, '-' or '_'")
        return v

    @property
    def study_label(self) -> str:
        return self.label or self.name


@dataclass(frozen=True)
class Study:
    """One (model, domain) pair of a sweep: its own Optuna study, front, report section, W&B group."""

    name: str  # the domain name in a one-model sweep, else "<label>.<domain>"
    label: str
    model: ModelSettings
    domain: DomainSpec
    trials: int
    index: int  # position in the sweep (seeds its sampler)


class DomainSpec(_Strict):
    """A target domain: a synthetic name or a COCO dataset on disk."""

    name: str
    synthetic: bool = True
    train_json: str | None = None
    train_images: str | None = None
    eval_json: str | None = None  # optional: without it models.trial holds out training images
    eval_images: str | None = None

    @model_validator(mode="after")
    def _check(self) -> DomainSpec:
        if self.synthetic:
            if self.name not in SYNTHETIC_DOMAINS:
                raise ValueError(
                    f"unknown synthetic domain {self.name!r}; allowed: {', '.join(SYNTHETIC_DOMAINS)}"
                )
        elif not (self.train_json and self.train_images):
            raise ValueError("a COCO domain (synthetic: false) needs train_json and train_images")
        elif (self.eval_json is None) != (self.eval_images is None):
            raise ValueError("eval_json and eval_images go together")
        return self


def _family_default_targets() -> list[list[str]]:
    return [[]]


# Checks the rank/alpha/targets choices of every low-rank family (LoRA, LoHa) and IA3's targets share.
def _check_ranks(v: list[int]) -> list[int]:
    if any(r < 1 for r in v):
        raise ValueError("every rank must be >= 1")
    return v


def _check_alphas(v: list[float]) -> list[float]:
    if any(not (a > 0 and math.isfinite(a)) for a in v):
        raise ValueError("every alpha must be a positive number")
    return v


def _check_targets(v: list[list[str]]) -> list[list[str]]:
    allowed = allowed_names("targets")
    for group in v:
        bad = [t for t in group if t not in allowed]
        if bad:
            raise ValueError(f"unknown target {bad[0]!r}; allowed: {', '.join(allowed)}")
    return v


class LoraSpace(_Strict):
    """LoRA sub-space: categorical choices."""

    rank: list[int] = Field(default_factory=lambda: [2, 4, 8, 16], min_length=1)
    alpha: list[float] = Field(default_factory=lambda: [8.0], min_length=1)
    # An empty set (the default) means the model family's default_lora_targets (Mask DINO: msda +
    # dec_self_qv; SEEM: enc/dec self + cross q,v), resolved when the LoRA config meets the model.
    targets: list[list[str]] = Field(default_factory=_family_default_targets, min_length=1)
    # peft's LoRA variants (models.peft.lora.config): DoRA magnitudes, rank-stabilised scaling,
    # factor initialisation (default, gaussian, pissa, olora). The defaults keep plain LoRA; a
    # field left at its default adds no parameter to the trials.
    use_dora: list[bool] = Field(default_factory=lambda: [False], min_length=1)
    use_rslora: list[bool] = Field(default_factory=lambda: [False], min_length=1)
    init: list[str] = Field(default_factory=lambda: ["default"], min_length=1)

    @field_validator("rank")
    @classmethod
    def _rank(cls, v: list[int]) -> list[int]:
        return _check_ranks(v)

    @field_validator("init")
    @classmethod
    def _init(cls, v: list[str]) -> list[str]:
        bad = [i for i in v if i not in LORA_INITS]
        if bad:
            raise ValueError(f"unknown init {bad[0]!r}; allowed: {', '.join(LORA_INITS)}")
        return v

    @field_validator("alpha")
    @classmethod
    def _alpha(cls, v: list[float]) -> list[float]:
        return _check_alphas(v)

    @field_validator("targets")
    @classmethod
    def _targets(cls, v: list[list[str]]) -> list[list[str]]:
        return _check_targets(v)


class LohaSpace(_Strict):
    """LoHa sub-space (peft): categorical choices; targets are the LoRA target sets."""

    rank: list[int] = Field(default_factory=lambda: [4, 8], min_length=1)
    alpha: list[float] = Field(default_factory=lambda: [8.0], min_length=1)
    targets: list[list[str]] = Field(default_factory=_family_default_targets, min_length=1)

    @field_validator("rank")
    @classmethod
    def _rank(cls, v: list[int]) -> list[int]:
        return _check_ranks(v)

    @field_validator("alpha")
    @classmethod
    def _alpha(cls, v: list[float]) -> list[float]:
        return _check_alphas(v)

    @field_validator("targets")
    @classmethod
    def _targets(cls, v: list[list[str]]) -> list[list[str]]:
        return _check_targets(v)


class Ia3Space(_Strict):
    """IA3 sub-space (peft): which target sets get learned output scales."""

    targets: list[list[str]] = Field(default_factory=_family_default_targets, min_length=1)

    @field_validator("targets")
    @classmethod
    def _targets(cls, v: list[list[str]]) -> list[list[str]]:
        return _check_targets(v)


class AdapterSpace(_Strict):
    """Sequential bottleneck adapter sub-space: categorical choices."""

    repetitions: list[int] = Field(default_factory=lambda: [1, 2, 3], min_length=1)
    placement: list[list[str]] = Field(
        default_factory=lambda: [["enc_self", "dec_self", "dec_cross"]], min_length=1
    )
    residual: list[str] = Field(default_factory=lambda: ["kappa+lambda"], min_length=1)
    reduction: list[int] = Field(default_factory=lambda: [4], min_length=1)

    @field_validator("repetitions")
    @classmethod
    def _reps(cls, v: list[int]) -> list[int]:
        if any(not 1 <= r <= 4 for r in v):
            raise ValueError("every repetition count must be in 1..4")
        return v

    @field_validator("placement")
    @classmethod
    def _placement(cls, v: list[list[str]]) -> list[list[str]]:
        for group in v:
            if not group:
                raise ValueError("a placement set must not be empty")
            allowed = allowed_names("placement")
            bad = [p for p in group if p not in allowed]
            if bad:
                raise ValueError(f"unknown placement {bad[0]!r}; allowed: {', '.join(allowed)}")
        return v

    @field_validator("residual")
    @classmethod
    def _residual(cls, v: list[str]) -> list[str]:
        allowed = allowed_names("residual")
        bad = [r for r in v if r not in allowed]
        if bad:
            raise ValueError(f"unknown residual {bad[0]!r}; allowed: {', '.join(allowed)}")
        return v

    @field_validator("reduction")
    @classmethod
    def _reduction(cls, v: list[int]) -> list[int]:
        if any(r < 1 for r in v):
            raise ValueError("every reduction factor must be >= 1")
        return v


class FloatRange(_Strict):
    """A continuous range (log-uniform when ``log``)."""

    low: float
    high: float
    log: bool = True

    @model_validator(mode="after")
    def _check(self) -> FloatRange:
        if not (self.low > 0 and self.high >= self.low):
            raise ValueError("need 0 < low <= high")
        return self


class SearchSpaceConfig(_Strict):
    """The conditional space: method first, then that method's own parameters."""

    methods: list[str] = Field(default_factory=lambda: ["lora", "adapter"], min_length=1)
    lora: LoraSpace = Field(default_factory=lambda: LoraSpace())
    loha: LohaSpace = Field(default_factory=lambda: LohaSpace())
    ia3: Ia3Space = Field(default_factory=lambda: Ia3Space())
    adapter: AdapterSpace = Field(default_factory=lambda: AdapterSpace())
    lr: FloatRange = Field(default_factory=lambda: FloatRange(low=1e-4, high=3e-3))
    # When set, lr is categorical over these values instead of the continuous range (grids, benches).
    lr_grid: list[float] | None = Field(default=None, min_length=1)
    iterations: list[int] = Field(default_factory=lambda: [40], min_length=1)

    @field_validator("methods")
    @classmethod
    def _methods(cls, v: list[str]) -> list[str]:
        bad = [m for m in v if m not in METHODS]
        if bad:
            raise ValueError(f"unknown method {bad[0]!r}; allowed: {', '.join(METHODS)}")
        if len(set(v)) != len(v):
            raise ValueError("methods must not repeat")
        return v

    @field_validator("lr_grid")
    @classmethod
    def _lr_grid(cls, v: list[float] | None) -> list[float] | None:
        if v is not None and any(not (x > 0 and math.isfinite(x)) for x in v):
            raise ValueError("every learning rate must be a positive number")
        return v

    @field_validator("iterations")
    @classmethod
    def _iters(cls, v: list[int]) -> list[int]:
        if any(i < 1 for i in v):
            raise ValueError("every iteration count must be >= 1")
        return v


class Objective(_Strict):
    """One objective; ``ref`` is the hypervolume reference value (None: derived, see pareto)."""

    name: str
    mode: Literal["max", "min"]
    ref: float | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if v not in KNOWN_METRICS:
            raise ValueError(f"unknown metric {v!r}; allowed: {', '.join(KNOWN_METRICS)}")
        return v


class Constraint(_Strict):
    """``metric op value``, e.g. latency_ms <= 50."""

    metric: str
    op: Literal["<=", ">="]
    value: float

    @field_validator("metric")
    @classmethod
    def _metric(cls, v: str) -> str:
        if v not in KNOWN_METRICS:
            raise ValueError(f"unknown metric {v!r}; allowed: {', '.join(KNOWN_METRICS)}")
        return v

    def violation(self, value: float) -> float:
        """Optuna convention: <= 0 means satisfied, > 0 is the amount of violation."""
        return value - self.value if self.op == "<=" else self.value - value

    @property
    def before_training(self) -> bool:
        """True when the metric is known before training, so violators are stopped at once."""
        return self.metric in PRETRAIN_METRICS


class Budget(_Strict):
    """How many trials per domain, how many at once, and what each one gets."""

    trials: int = Field(default=12, ge=1)
    concurrency: int = Field(default=2, ge=1)
    cpus_per_trial: float = Field(default=1.0, gt=0)
    gpus_per_trial: float = Field(default=0.0, ge=0)
    max_failures: int = Field(default=2, ge=0)
    time_limit_s: float | None = Field(default=None, gt=0)
    # Trials of all studies together (None: the sum of the studies' budgets).
    total_trials: int | None = Field(default=None, ge=1)
    # Trials of single studies by name (e.g. {maskdino_r50.wixray: 40}); others get `trials`.
    per_study: dict[str, int] = Field(default_factory=dict)

    @field_validator("per_study")
    @classmethod
    def _per_study(cls, v: dict[str, int]) -> dict[str, int]:
        bad = [k for k, n in v.items() if n < 1]
        if bad:
            raise ValueError(f"{bad[0]}: a study needs at least 1 trial")
        return v


class SamplerSettings(_Strict):
    # TPE by default: on the recorded real grid (`peftsweep bench search`, search/benchmarks/) it
    # reached 0.963 of the grid hypervolume in a third of the grid's trials, NSGA-II 0.942, random 0.906.
    name: Literal["nsga2", "tpe", "gp", "random"] = "tpe"
    seed: int = 0
    population_size: int = Field(default=8, ge=2)
    startup_trials: int = Field(default=4, ge=0)
    # Configurations tried first, in every domain (e.g. the paper's recipes), as flat parameters;
    # lists (targets, placement) as comma-joined strings, e.g. {method: lora, lora_rank: 8, ...}.
    initial_points: list[dict[str, Any]] = Field(default_factory=list)
    # Where the Optuna studies live: a database URL (sqlite:///..., postgresql://...) or None for
    # a JournalStorage file in the output folder (OUT/optuna/journal.log).
    storage: str | None = None

    @field_validator("initial_points")
    @classmethod
    def _points(cls, v: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for p in v:
            bad = [k for k in p if k not in PARAM_NAMES]
            if bad:
                raise ValueError(f"unknown parameter {bad[0]!r}; allowed: {', '.join(PARAM_NAMES)}")
            if "method" not in p:
                raise ValueError("every initial point needs a method")
        return v


class EarlyStopping(_Strict):
    """MO-ASHA (``search.engine.mo_asha``): rungs at ``grace * reduction_factor**k`` iterations of
    the longest schedule (``max(space.iterations)``), applied as the same fractions of every
    trial's own schedule. Defaults chosen on the real recorded grid (tuning seeds; numbers in
    ``search/benchmarks/early_stopping_cpu.txt``): rungs at 1/4 and 3/4, EpsNet selection."""

    enabled: bool = True
    # The first rung in iterations; None: grace_fraction of the longest schedule.
    grace_iterations: int | None = Field(default=None, ge=1)
    grace_fraction: float = Field(default=0.25, gt=0, lt=1)
    # Each rung continues 1/reduction_factor of the trials that reached it.
    reduction_factor: float = Field(default=3.0, gt=1)
    # The order a rung continues its trials in: "epsnet" (spread over the front), "rank"
    # (non-dominated rank, then crowding distance) or "front" (every non-dominated trial, then EpsNet).
    selection: Literal["epsnet", "rank", "front"] = "epsnet"

    def grace_for(self, max_t: int) -> int:
        """The first rung, in iterations, for schedules of at most ``max_t`` iterations."""
        if self.grace_iterations is not None:
            return self.grace_iterations
        return max(1, int(round(self.grace_fraction * max_t)))


class TrialSettings(_Strict):
    """How one trial runs: the trial function (import path) and its fixed settings."""

    function: str = "search.engine.model_trial:prepare"
    eval_every: int = Field(default=10, ge=1)
    seed: int = 0
    # Latency from the sweep's latency profile (search.engine.latency_profile): every deployed
    # architecture measured once, in isolation (nothing training on the device), on the target
    # device, before the first trial, cached in OUT and the user cache; trials read that figure.
    # False: each trial times itself while other trials may train beside it (the same architecture
    # read 30.5 and 61.4 ms that way), and a latency constraint is decided in the trial.
    latency_per_architecture: bool = True
    # The device latency is measured on (search.engine.latency_profile): "" = the driver's node (its
    # GPU when trials use GPUs, else its CPU), or the name of a Ray custom resource one node offers.
    latency_device: str = ""
    extra: dict[str, Any] = Field(default_factory=dict)

    @field_validator("function")
    @classmethod
    def _fn(cls, v: str) -> str:
        mod, sep, attr = v.partition(":")
        if not sep or not mod or not attr:
            raise ValueError("must look like 'package.module:function'")
        return v


class WandbSettings(_Strict):
    enabled: bool = False
    project: str = "peftsweep"
    entity: str | None = None
    # auto: online when WANDB_API_KEY is set, offline otherwise.
    mode: Literal["auto", "online", "offline", "disabled"] = "auto"


class SweepConfig(_Strict):
    """A whole sweep: one study (Optuna study, front, W&B group) per (model, domain) pair, all in
    one Tune experiment."""

    name: str = "sweep"
    model: ModelSettings = Field(default_factory=lambda: ModelSettings())
    # Several models: every (model, domain) pair is a study. Give either `model` or `models`.
    models: list[ModelSettings] | None = Field(default=None, min_length=1)
    domains: list[DomainSpec] = Field(min_length=1)
    space: SearchSpaceConfig = Field(default_factory=lambda: SearchSpaceConfig())
    objectives: list[Objective] = Field(
        default_factory=lambda: [
            Objective(name="ap", mode="max", ref=0.0),
            Objective(name="trainable_pct", mode="min", ref=100.0),
            Objective(name="latency_ms", mode="min", ref=None),
        ],
        min_length=1,
    )
    constraints: list[Constraint] = Field(default_factory=list)
    budget: Budget = Field(default_factory=lambda: Budget())
    sampler: SamplerSettings = Field(default_factory=lambda: SamplerSettings())
    early_stopping: EarlyStopping = Field(default_factory=lambda: EarlyStopping())
    trial: TrialSettings = Field(default_factory=lambda: TrialSettings())
    output_dir: str = "runs/sweep"
    # The results store's root: a path or a pyarrow.fs URI (s3://bucket/prefix, gs://...);
    # None: OUT/results.
    results: str | None = None
    wandb: WandbSettings = Field(default_factory=lambda: WandbSettings())

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not v or not all(c.isalnum() or c in "-_." for c in v):
            raise ValueError("use letters, digits, '-', '_' or '.'")
        return v

    @field_validator("models")
    @classmethod
    def _models(cls, v: list[ModelSettings] | None) -> list[ModelSettings] | None:
        seen: dict[str, int] = {}
        for i, m in enumerate(v or []):
            if m.study_label in seen:
                raise ValueError(
                    f"[{i}]: studies named twice: models[{seen[m.study_label]}] and models[{i}] are both "
                    f"{m.study_label!r}; give them distinct labels"
                )
            seen[m.study_label] = i
        return v

    @field_validator("domains", mode="before")
    @classmethod
    def _domains(cls, v: Any) -> Any:
        # A bare string is a synthetic domain name.
        if isinstance(v, list):
            return [{"name": d} if isinstance(d, str) else d for d in v]
        return v

    @model_validator(mode="after")
    def _check(self) -> SweepConfig:
        for i, p in enumerate(self.sampler.initial_points):
            if p["method"] not in self.space.methods:
                raise ValueError(
                    f"sampler.initial_points[{i}].method {p['method']!r} is not in space.methods "
                    f"({', '.join(self.space.methods)})"
                )
        names = [o.name for o in self.objectives]
        if len(set(names)) != len(names):
            raise ValueError("objectives: names must not repeat")
        dnames = [d.name for d in self.domains]
        if len(set(dnames)) != len(dnames):
            raise ValueError("domains: names must not repeat")
        if self.models is not None and "model" in self.model_fields_set:
            raise ValueError("model, models: give one of them (models: a list of model entries)")
        studies = {s.name for s in self.studies(check=False)}
        bad = sorted(set(self.budget.per_study) - studies)
        if bad:
            raise ValueError(
                f"budget.per_study: unknown study {bad[0]!r}; studies: {', '.join(sorted(studies))}"
            )
        return self

    def model_entries(self) -> list[ModelSettings]:
        """The sweep's models (``models`` or the single ``model``)."""
        return list(self.models) if self.models is not None else [self.model]

    def studies(self, check: bool = True) -> list[Study]:
        """Every (model, domain) pair, models outer, in config order."""
        models = self.model_entries()
        out: list[Study] = []
        for m in models:
            for d in self.domains:
                name = d.name if len(models) == 1 else f"{m.study_label}.{d.name}"
                trials = self.budget.per_study.get(name, m.trials or self.budget.trials)
                out.append(Study(name, m.study_label, m, d, trials, len(out)))
        return out

    @property
    def metric_names(self) -> list[str]:
        return [o.name for o in self.objectives]

    @property
    def modes(self) -> list[str]:
        return [o.mode for o in self.objectives]
