"""The conditional (define-by-run) search space handed to Optuna.

:class:`SearchSpace` is a module-level class whose instances are callables ``space(trial) -> None``;
Ray pickles them by reference to this module plus their small state, so they work across processes
and after ``Tuner.restore``. Parameter names (flat, the same in the Parquet store):

``method``; for lora ``lora_rank``, ``lora_alpha``, ``lora_targets`` ("a,b" joined);
for adapter ``adapter_repetitions``, ``adapter_placement`` ("a,b"), ``adapter_residual``,
``adapter_reduction``; always ``lr`` and ``iterations``. Head baselines (full_head, decoder_only,
class_mask) have only ``lr`` and ``iterations``.
"""

from __future__ import annotations

from typing import Any, Protocol

from search.config import PARAM_COLUMNS, SearchSpaceConfig

__all__ = ["SearchSpace", "PARAM_COLUMNS", "method_kwargs", "join_list", "split_list", "grid_points"]


class _TrialLike(Protocol):
    def suggest_categorical(self, name: str, choices: Any) -> Any: ...
    def suggest_float(self, name: str, low: float, high: float, *, log: bool = False) -> float: ...


def join_list(items: list[str]) -> str:
    """Optuna categoricals must be scalars: a list of names travels as 'a,b'."""
    return ",".join(items)


def split_list(text: str) -> list[str]:
    return [t for t in text.split(",") if t]


class SearchSpace:
    """Define-by-run space over :class:`SearchSpaceConfig`; picklable; deterministic given the trial."""

    def __init__(self, space: SearchSpaceConfig) -> None:
        self.space_json = space.model_dump(mode="json")

    @property
    def space(self) -> SearchSpaceConfig:
        return SearchSpaceConfig.model_validate(self.space_json)

    def __call__(self, trial: _TrialLike) -> None:
        s = self.space
        method = trial.suggest_categorical("method", list(s.methods))
        if method == "lora":
            trial.suggest_categorical("lora_rank", list(s.lora.rank))
            trial.suggest_categorical("lora_alpha", list(s.lora.alpha))
            trial.suggest_categorical("lora_targets", [join_list(t) for t in s.lora.targets])
        elif method == "adapter":
            trial.suggest_categorical("adapter_repetitions", list(s.adapter.repetitions))
            trial.suggest_categorical("adapter_placement", [join_list(p) for p in s.adapter.placement])
            trial.suggest_categorical("adapter_residual", list(s.adapter.residual))
            trial.suggest_categorical("adapter_reduction", list(s.adapter.reduction))
        if s.lr_grid is not None:
            trial.suggest_categorical("lr", list(s.lr_grid))
        elif s.lr.low == s.lr.high:
            trial.suggest_categorical("lr", [s.lr.low])
        else:
            trial.suggest_float("lr", s.lr.low, s.lr.high, log=s.lr.log)
        trial.suggest_categorical("iterations", list(s.iterations))


def method_kwargs(params: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """(method name, keyword arguments for ``models.peft.build_method_config``) from flat params."""
    method = str(params["method"])
    if method == "lora":
        return method, {
            "rank": int(params["lora_rank"]),
            "alpha": float(params["lora_alpha"]),
            "targets": split_list(str(params["lora_targets"])),
        }
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
