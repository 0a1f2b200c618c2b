"""What a sweep's Optuna studies hold beyond the store: proposals that were never trained.

The searcher (:mod:`search.engine.repeats`, :mod:`search.engine.gate`) tells Optuna every proposal
it does not train, marked with a user attribute: a proposal that repeats a point already trained,
training or stopped (:data:`REPEAT_ATTR`), and a point rejected before training
(:data:`REJECTED_ATTR`; those are in the store too, as ``infeasible`` rows). The attribute names
live here so the engine writes and the report reads the same ones.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

__all__ = ["REPEAT_ATTR", "REJECTED_ATTR", "repeat_counts"]

# User attributes that mark Optuna trials which were not trained: a repeat (the trained trial's
# number) and a point rejected before training (the reason).
REPEAT_ATTR = "repeat_of"
REJECTED_ATTR = "rejected_before_training"


def repeat_counts(storage: str, study_names: Iterable[str]) -> dict[str, int]:
    """Study name -> proposals told as repeats, for the named studies found in ``storage`` (a
    journal file or a database URL). A journal that does not exist yet gives an empty dict."""
    import optuna

    if "://" in storage:
        store: optuna.storages.BaseStorage = optuna.storages.RDBStorage(storage)
    elif Path(storage).is_file():
        from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock

        store = optuna.storages.JournalStorage(
            JournalFileBackend(storage, lock_obj=JournalFileOpenLock(storage))
        )
    else:
        return {}
    known = {s.study_name for s in store.get_all_studies()}
    out: dict[str, int] = {}
    for name in study_names:
        if name not in known:
            continue
        trials = store.get_all_trials(store.get_study_id_from_name(name), deepcopy=False)
        out[name] = sum(1 for t in trials if REPEAT_ATTR in t.user_attrs)
    return out
