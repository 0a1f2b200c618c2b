"""What a selection is given (:class:`SelectionSettings`) and what it decides (:class:`SelectionResult`)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from search.selection.decision import Budgets, Decision
from search.selection.halving import DEFAULT_PROMOTE_BY
from search.selection.shift import (
    ShiftResult,
)
from search.selection.similarity import Neighbour
from search.selection.warmstart import DEFAULT_PILOT, WarmPoint

__all__ = ["SelectionSettings", "SelectionResult", "clean_json"]


@dataclass
class SelectionSettings:
    """Inputs of one selection. ``trial_overrides`` go straight into ``models.trial.TrialSpec``."""

    data_json: str
    images_dir: str
    budgets: Budgets
    out_dir: str = "runs/select"
    model: str = "maskdino_tiny"
    base_checkpoint: str | None = None
    domain_name: str | None = None  # default: the json's file stem (parent folder for annotations.json)
    history: list[str] = field(default_factory=list)
    reference_domain: str | None = None  # default: the base checkpoint's pretraining domain, else source
    neighbours: int = 2
    shift_images: int = 64
    image_size: int = 128
    iterations: int = 40  # full pilot length (the last halving rung)
    lr: float = 1e-3
    pilot: str = DEFAULT_PILOT  # see search.selection.warmstart.parse_pilot
    lrs: list[float] | None = None  # pilot learning rates (default: [lr])
    rungs: int = 3  # successive-halving rungs (1: every candidate trains the full length)
    eta: float = 2.0  # keep the best 1/eta of a rung
    promote_by: str = DEFAULT_PROMOTE_BY  # what ranks a rung: see search.selection.halving.PROMOTE_BY
    # Finalists run with this many seeds, decided on the mean (spread in the report). 2: on the
    # recorded select grids one seed missed "<= 10 % regret on every domain" and two met it, at
    # 4.2-4.6 % of a full sweep's compute (search/benchmarks/select_cpu.md).
    seeds: int = 2
    address: str | None = None  # Ray cluster for parallel pilot trials (None: in this process)
    token_file: str | None = None
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    accept_untrained: bool = False  # decide even when no pilot learned anything
    eval_json: str | None = None
    eval_images: str | None = None
    seed: int = 0
    device: str = "auto"
    trial_overrides: dict[str, Any] = field(default_factory=dict)

    @property
    def pilot_lrs(self) -> list[float]:
        return list(self.lrs) if self.lrs else [self.lr]

    @property
    def resolved_domain_name(self) -> str:
        if self.domain_name:
            return self.domain_name
        p = Path(self.data_json)
        return p.parent.name if p.stem == "annotations" and p.parent.name else p.stem


@dataclass
class SelectionResult:
    domain: str
    reference_domain: str
    shift: ShiftResult
    neighbours: list[Neighbour]
    queue: list[WarmPoint]
    records: list[dict[str, Any]]
    decision: Decision
    out_dir: Path
    feature_key: str
    seconds: float
    known_shifts: dict[str, float] = field(default_factory=dict)  # earlier domain -> Fréchet from reference
    untrained_ap: float = math.nan  # AP of the prepared model before training (NaN: not measured)
    nothing_learned: str | None = None  # why no pilot learned anything (then no pick is made)
    likely_causes: list[str] = field(default_factory=list)
    compute_iterations: int = 0  # trial-iterations the pilot trained, all candidates together
    rungs: list[int] = field(default_factory=list)
    promote_by: str = "ap"  # what ranked the rungs (search.selection.halving.PROMOTE_BY)

    def to_dict(self) -> dict[str, Any]:
        """The ``--json`` document (plain JSON types; NaN -> null)."""
        return clean_json(
            {
                "domain": self.domain,
                "reference_domain": self.reference_domain,
                "shift": self.shift.to_dict(),
                "neighbours": [{"domain": n.domain, "distance": n.distance} for n in self.neighbours],
                "queue": [{"origin": w.origin, "params": w.params} for w in self.queue],
                "pilot": self.records,
                "decision": self.decision.to_dict(),
                "out_dir": str(self.out_dir),
                "feature_key": self.feature_key,
                "known_shifts": self.known_shifts,
                "seconds": self.seconds,
                "untrained_ap": self.untrained_ap,
                "nothing_learned": self.nothing_learned,
                "likely_causes": self.likely_causes,
                "compute_iterations": self.compute_iterations,
                "rungs": self.rungs,
                "promote_by": self.promote_by,
            }
        )


def clean_json(obj: Any) -> Any:
    if isinstance(obj, float):
        return None if not math.isfinite(obj) else obj
    if isinstance(obj, dict):
        return {str(k): clean_json(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [clean_json(v) for v in obj]
    if hasattr(obj, "item"):  # numpy scalar
        return clean_json(obj.item())
    return obj
