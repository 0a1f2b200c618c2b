"""The conditional (define-by-run) search space handed to Optuna.

:class:`SearchSpace` is a module-level class whose instances are callables ``space(trial) -> None``;
Ray pickles them by reference to this module plus their small state, so they work across processes
and after ``Tuner.restore``. Parameter names (flat, the same in the Parquet store):

``method``; for lora ``lora_rank``, ``lora_alpha``, ``lora_targets`` ("a,b" joined) and, when the
space varies them, ``lora_dora``, ``lora_rslora``, ``lora_init`` (peft's variants); for loha
``loha_rank``, ``loha_alpha``, ``loha_targets``; for ia3 ``ia3_targets``;
for adapter ``adapter_repetitions``, ``adapter_placement`` ("a,b"), ``adapter_residual``,
``adapter_reduction``; always ``lr`` and ``iterations``. Head baselines (full_head, decoder_only,
class_mask) have only ``lr`` and ``iterations``.

Two encodings of the same space (``SearchSpace(space, encoding=...)``):

- ``conditional`` (default): ``method`` first, then only that method's parameters. TPE with
  ``group=True`` models each group of co-occurring parameters jointly on it.
- ``flat``: ``method``, then *every* method's parameters, in every trial (same names, same
  choices), then ``lr`` and ``iterations``. Samplers that model only the parameters all trials
  share (NSGA-II, GP) then model the method-specific ones too. :meth:`SearchSpace.active` keeps
  the parameters the trial's method uses (what Tune, the trial and the store get).

Both run the same per-method branch (:meth:`SearchSpace._method_params`), so a method added there
is covered by both encodings.
"""

from __future__ import annotations

from typing import Any, Protocol

from search.config import PARAM_COLUMNS, SearchSpaceConfig

__all__ = [
    "SearchSpace",
    "ENCODINGS",
    "PARAM_COLUMNS",
    "method_kwargs",
    "join_list",
    "split_list",
    "grid_points",
]


class _TrialLike(Protocol):
    def suggest_categorical(self, name: str, choices: Any) -> Any: ...
    def suggest_float(self, name: str, low: float, high: float, *, log: bool = False) -> float: ...


def join_list(items: list[str]) -> str:
    """Optuna categoricals must be scalars: a list of names travels as 'a,b'."""
    return ",".join(items)


def split_list(text: str) -> list[str]:
    return [t for t in text.split(",") if t]


ENCODINGS = ("conditional", "flat")
_SHARED = ("lr", "iterations")


class _Recorder:
    """A trial-like object that records the names a branch suggests (values from ``params``)."""

    def __init__(self, params: dict[str, Any]) -> None:
        self.params = params
        self.names: list[str] = []

    def suggest_categorical(self, name: str, choices: Any) -> Any:
        self.names.append(name)
        return self.params.get(name)

    def suggest_float(self, name: str, low: float, high: float, *, log: bool = False) -> float:
        self.names.append(name)
        return float(self.params.get(name, low))

    def suggest_int(self, name: str, low: int, high: int, *, log: bool = False) -> int:
        self.names.append(name)
        return int(self.params.get(name, low))


class SearchSpace:
    """Define-by-run space over :class:`SearchSpaceConfig`; picklable; deterministic given the trial."""

    def __init__(self, space: SearchSpaceConfig, encoding: str = "conditional") -> None:
        if encoding not in ENCODINGS:
            raise ValueError(f"encoding: {encoding!r}; allowed: {', '.join(ENCODINGS)}")
        self.space_json = space.model_dump(mode="json")
        self.encoding = encoding

    @property
    def space(self) -> SearchSpaceConfig:
        return SearchSpaceConfig.model_validate(self.space_json)

    def __call__(self, trial: _TrialLike) -> None:
        s = self.space
        method = trial.suggest_categorical("method", list(s.methods))
        if getattr(self, "encoding", "conditional") == "flat":
            for m in s.methods:
                self._method_params(trial, m, s)
        else:
            self._method_params(trial, method, s)
        self._shared_params(trial, s)

    def points(self) -> list[dict[str, Any]] | None:
        """Every point (active parameters) of a finite space; None when the learning rate is
        continuous (then no two proposals are equal)."""
        s = self.space
        if s.lr_grid is not None:
            lrs = list(s.lr_grid)
        elif s.lr.low == s.lr.high:
            lrs = [s.lr.low]
        else:
            return None
        return grid_points(s, lrs)

    def active(self, params: dict[str, Any]) -> dict[str, Any]:
        """``params`` without the parameters its method does not use (flat encoding's extras)."""
        rec = _Recorder(params)
        self._method_params(rec, str(params["method"]), self.space)
        keep = {"method", *rec.names, *_SHARED}
        return {k: v for k, v in params.items() if k in keep}

    @staticmethod
    def _shared_params(trial: _TrialLike, s: SearchSpaceConfig) -> None:
        if s.lr_grid is not None:
            trial.suggest_categorical("lr", list(s.lr_grid))
        elif s.lr.low == s.lr.high:
            trial.suggest_categorical("lr", [s.lr.low])
        else:
            trial.suggest_float("lr", s.lr.low, s.lr.high, log=s.lr.log)
        trial.suggest_categorical("iterations", list(s.iterations))

    @staticmethod
    def _method_params(trial: _TrialLike, method: str, s: SearchSpaceConfig) -> None:
        """The parameters of one method (both encodings run this branch)."""
        if method == "lora":
            trial.suggest_categorical("lora_rank", list(s.lora.rank))
            trial.suggest_categorical("lora_alpha", list(s.lora.alpha))
            trial.suggest_categorical("lora_targets", [join_list(t) for t in s.lora.targets])
            for name, choices in _lora_variants(s).items():
                trial.suggest_categorical(name, choices)
        elif method == "loha":
            trial.suggest_categorical("loha_rank", list(s.loha.rank))
            trial.suggest_categorical("loha_alpha", list(s.loha.alpha))
            trial.suggest_categorical("loha_targets", [join_list(t) for t in s.loha.targets])
        elif method == "ia3":
            trial.suggest_categorical("ia3_targets", [join_list(t) for t in s.ia3.targets])
        elif method == "adapter":
            trial.suggest_categorical("adapter_repetitions", list(s.adapter.repetitions))
            trial.suggest_categorical("adapter_placement", [join_list(p) for p in s.adapter.placement])
            trial.suggest_categorical("adapter_residual", list(s.adapter.residual))
            trial.suggest_categorical("adapter_reduction", list(s.adapter.reduction))


# LoRA variant parameter -> (LoraSpace field, LoraConfig field, the default that adds no parameter)
_LORA_VARIANTS = {
    "lora_dora": ("use_dora", "use_dora", [False]),
    "lora_rslora": ("use_rslora", "use_rslora", [False]),
    "lora_init": ("init", "init", ["default"]),
}


def _lora_variants(s: SearchSpaceConfig) -> dict[str, list[Any]]:
    """The LoRA variant parameters the space varies (a field at its default adds none)."""
    out: dict[str, list[Any]] = {}
    for name, (field, _, default) in _LORA_VARIANTS.items():
        choices = list(getattr(s.lora, field))
        if choices != default:
            out[name] = choices
    return out


def _given(params: dict[str, Any], name: str) -> bool:
    value = params.get(name)
    return value is not None and not (isinstance(value, float) and value != value)  # NaN: inactive


def method_kwargs(params: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """(method name, keyword arguments for ``models.peft.build_method_config``) from flat params."""
    method = str(params["method"])
    if method == "lora":
        kwargs: dict[str, Any] = {
            "rank": int(params["lora_rank"]),
            "alpha": float(params["lora_alpha"]),
            "targets": split_list(str(params["lora_targets"])),
        }
        for name, (_, config_field, _) in _LORA_VARIANTS.items():
            if _given(params, name):
                value = params[name]
                kwargs[config_field] = str(value) if config_field == "init" else bool(value)
        return method, kwargs
    if method == "loha":
        return method, {
            "rank": int(params["loha_rank"]),
            "alpha": float(params["loha_alpha"]),
            "targets": split_list(str(params["loha_targets"])),
        }
    if method == "ia3":
        return method, {"targets": split_list(str(params["ia3_targets"]))}
    if method == "adapter":
        return method, {
            "repetitions": int(params["adapter_repetitions"]),
            "placement": split_list(str(params["adapter_placement"])),
            "residual": str(params["adapter_residual"]),
            "reduction": int(params["adapter_reduction"]),
        }
    return method, {}


def grid_points(space: SearchSpaceConfig, lrs: list[float]) -> list[dict[str, Any]]:
    """Every point of the space with ``lr`` restricted to ``lrs`` (the exhaustive grid of a bench)."""
    points: list[dict[str, Any]] = []
    for method in space.methods:
        subs: list[dict[str, Any]]
        if method == "lora":
            subs = [
                {"lora_rank": r, "lora_alpha": a, "lora_targets": join_list(t)}
                for r in space.lora.rank
                for a in space.lora.alpha
                for t in space.lora.targets
            ]
            for name, choices in _lora_variants(space).items():
                subs = [{**sub, name: c} for sub in subs for c in choices]
        elif method == "loha":
            subs = [
                {"loha_rank": r, "loha_alpha": a, "loha_targets": join_list(t)}
                for r in space.loha.rank
                for a in space.loha.alpha
                for t in space.loha.targets
            ]
        elif method == "ia3":
            subs = [{"ia3_targets": join_list(t)} for t in space.ia3.targets]
        elif method == "adapter":
            subs = [
                {
                    "adapter_repetitions": r,
                    "adapter_placement": join_list(p),
                    "adapter_residual": res,
                    "adapter_reduction": red,
                }
                for r in space.adapter.repetitions
                for p in space.adapter.placement
                for res in space.adapter.residual
                for red in space.adapter.reduction
            ]
        else:
            subs = [{}]
        for sub in subs:
            for lr in lrs:
                for it in space.iterations:
                    points.append({"method": method, **sub, "lr": lr, "iterations": it})
    return points
