"""The results store: two Parquet tables under a sweep's output folder.

- ``trials.parquet``: one row per trial (key ``trial_id``): sweep id, domain, the flat search
  parameters (see :data:`search.engine.space.PARAM_COLUMNS`), the full config as JSON, status
  ("completed" | "pruned" | "infeasible" | "failed" | "running"), error, metrics, timings, node, seed.
  Metrics of a ``pruned`` row are its LAST INTERMEDIATE values (``iterations_done`` says when it was
  stopped); only ``completed`` rows carry final metrics and enter Pareto fronts.
- ``intermediate.parquet``: one row per (trial_id, iteration) with the intermediate metrics.

Both have a typed schema and carry ``peftsweep.schema_version`` in the Parquet metadata.
Writes are *upserts*: a row whose key already exists replaces the old one, so a retried or
resumed trial never makes two rows. Each write takes an exclusive ``fcntl`` lock, reads the
current file, merges, writes ``<name>.tmp-<pid>`` and ``os.replace``\\ s it: readers see either the
old or the new file, never a half-written one.
"""

from __future__ import annotations

import fcntl
import json
import math
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from models.errors import UserError
from search.config import PARAM_COLUMNS

__all__ = [
    "SCHEMA_VERSION",
    "TRIAL_SCHEMA",
    "INTERMEDIATE_SCHEMA",
    "ResultStore",
]

SCHEMA_VERSION = 1

_TYPES = {"string": pa.string(), "int64": pa.int64(), "float64": pa.float64(), "bool": pa.bool_()}

_TRIAL_FIELDS: list[tuple[str, str]] = [
    ("trial_id", "string"),
    ("sweep_id", "string"),
    ("domain", "string"),
    ("trial_number", "int64"),
    ("status", "string"),
    ("stop_reason", "string"),
    ("error", "string"),
    *PARAM_COLUMNS.items(),
    ("config_json", "string"),
    ("ap", "float64"),
    ("ap50", "float64"),
    ("ap75", "float64"),
    ("ap_s", "float64"),
    ("ap_m", "float64"),
    ("ap_l", "float64"),
    ("missed_rate", "float64"),
    ("tp_confidence", "float64"),
    ("small_recall", "float64"),
    ("trainable_params", "int64"),
    ("total_params", "int64"),
    ("trainable_pct", "float64"),
    ("latency_ms", "float64"),
    ("latency_p90_ms", "float64"),
    ("final_loss", "float64"),
    ("iterations_done", "int64"),
    ("start_iteration", "int64"),  # > 0: the trial continued from a checkpoint at that iteration
    ("base_load", "string"),  # the base checkpoint's load summary (models.checkpoint.LoadReport.short)
    ("rung", "int64"),
    ("device", "string"),
    ("node", "string"),
    ("hostname", "string"),
    ("seed", "int64"),
    ("sampler", "string"),
    ("started_at", "float64"),  # unix seconds
    ("finished_at", "float64"),
    ("prepare_seconds", "float64"),
    ("train_seconds", "float64"),
    ("wall_seconds", "float64"),
]

_INTERMEDIATE_FIELDS: list[tuple[str, str]] = [
    ("trial_id", "string"),
    ("sweep_id", "string"),
    ("domain", "string"),
    ("iteration", "int64"),
    ("ap", "float64"),
    ("loss", "float64"),
    ("trainable_pct", "float64"),
    ("latency_ms", "float64"),
    ("time", "float64"),
]


def _schema(fields: list[tuple[str, str]]) -> pa.Schema:
    return pa.schema(
        [pa.field(n, _TYPES[t], nullable=True) for n, t in fields],
        metadata={"peftsweep.schema_version": str(SCHEMA_VERSION)},
    )


TRIAL_SCHEMA = _schema(_TRIAL_FIELDS)
INTERMEDIATE_SCHEMA = _schema(_INTERMEDIATE_FIELDS)


def _coerce(value: Any, kind: str) -> Any:
    """Python value -> the column's type; None/NaN-for-non-floats -> null."""
    if value is None:
        return None
    if isinstance(value, float) and math.isnan(value) and kind != "float64":
        return None
    try:
        if kind == "string":
            return (
                value
                if isinstance(value, str)
                else json.dumps(value)
                if isinstance(value, dict | list)
                else str(value)
            )
        if kind == "int64":
            return int(value)
        if kind == "float64":
            return float(value)
        if kind == "bool":
            return bool(value)
    except (TypeError, ValueError):
        return None
    return value


def _table(rows: Sequence[Mapping[str, Any]], schema: pa.Schema) -> pa.Table:
    cols: dict[str, list[Any]] = {f.name: [] for f in schema}
    kinds = {f.name: str(f.type).replace("double", "float64") for f in schema}
    for r in rows:
        for name in cols:
            cols[name].append(_coerce(r.get(name), kinds[name]))
    return pa.table(cols, schema=schema)


class ResultStore:
    """Parquet tables in ``root`` (created on first write)."""

    TRIALS = "trials.parquet"
    INTERMEDIATE = "intermediate.parquet"

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".store.lock", "a+") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _read(self, name: str, schema: pa.Schema) -> pa.Table:
        path = self.root / name
        if not path.exists():
            return schema.empty_table()
        table = pq.read_table(path)
        version = (table.schema.metadata or {}).get(b"peftsweep.schema_version", b"?").decode()
        if version != str(SCHEMA_VERSION):
            raise UserError(
                f"{path}: results schema version {version}, this peftsweep reads {SCHEMA_VERSION}"
            )
        # columns added after a file was written (start_iteration, base_load) read as nulls
        for f in schema:
            if f.name not in table.column_names:
                table = table.append_column(f, pa.nulls(table.num_rows, f.type))
        return table.select(schema.names).cast(schema)

    def _upsert(
        self, name: str, schema: pa.Schema, rows: Sequence[Mapping[str, Any]], key: list[str]
    ) -> None:
        if not rows:
            return
        new = _table(rows, schema)
        with self._locked():
            old = self._read(name, schema)
            new_keys = {tuple(r[k] for k in key) for r in new.select(key).to_pylist()}
            if old.num_rows:
                keep = [tuple(r[k] for k in key) not in new_keys for r in old.select(key).to_pylist()]
                old = old.filter(pa.array(keep, type=pa.bool_()))
            # Within one batch the last row of a key wins.
            seen: set[tuple[Any, ...]] = set()
            keep_new = [False] * new.num_rows
            for i, r in reversed(list(enumerate(new.select(key).to_pylist()))):
                k = tuple(r[c] for c in key)
                if k not in seen:
                    seen.add(k)
                    keep_new[i] = True
            merged = pa.concat_tables([old, new.filter(pa.array(keep_new, type=pa.bool_()))])
            path = self.root / name
            tmp = path.with_name(f"{name}.tmp-{os.getpid()}")
            pq.write_table(merged, tmp)
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
            os.replace(tmp, path)

    def upsert_trials(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """Insert or replace trial rows by ``trial_id``. Unknown keys are ignored."""
        if any(not r.get("trial_id") for r in rows):
            raise ValueError("every trial row needs a trial_id")
        self._upsert(self.TRIALS, TRIAL_SCHEMA, rows, ["trial_id"])

    def upsert_intermediate(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """Insert or replace intermediate rows by (trial_id, iteration)."""
        self._upsert(self.INTERMEDIATE, INTERMEDIATE_SCHEMA, rows, ["trial_id", "iteration"])

    def delete_trials(self, trial_ids: Sequence[str]) -> None:
        """Remove trials (and their intermediate rows) by id: used for rows of trials the driver
        started but Tune's last experiment snapshot never recorded (lost with a killed driver)."""
        ids = set(trial_ids)
        if not ids:
            return
        with self._locked():
            for name, schema in ((self.TRIALS, TRIAL_SCHEMA), (self.INTERMEDIATE, INTERMEDIATE_SCHEMA)):
                path = self.root / name
                if not path.exists():
                    continue
                table = self._read(name, schema)
                keep = [r["trial_id"] not in ids for r in table.select(["trial_id"]).to_pylist()]
                tmp = path.with_name(f"{name}.tmp-{os.getpid()}")
                pq.write_table(table.filter(pa.array(keep, type=pa.bool_())), tmp)
                os.replace(tmp, path)

    def trials_table(self) -> pa.Table:
        return self._read(self.TRIALS, TRIAL_SCHEMA)

    def trials(self) -> pd.DataFrame:
        return self.trials_table().to_pandas()

    def intermediate(self) -> pd.DataFrame:
        return self._read(self.INTERMEDIATE, INTERMEDIATE_SCHEMA).to_pandas()

    def exists(self) -> bool:
        return (self.root / self.TRIALS).exists()
