"""The results store: append-only Parquet part files read as one dataset, latest version wins.

Two tables under the store's root (a local or shared folder, or a ``pyarrow.fs`` URI such as
``s3://bucket/prefix`` or ``gs://bucket/prefix``):

- ``trials/``: one logical row per trial (key ``trial_id``): sweep id, study, model, domain, the
  flat search parameters (:data:`search.config.PARAM_COLUMNS`), the full config as JSON, status
  ("completed" | "pruned" | "infeasible" | "failed" | "running"), error, metrics, timings, node,
  seed. Metrics of a ``pruned`` row are its LAST INTERMEDIATE values (``iterations_done`` says when
  it was stopped); only ``completed`` rows carry final metrics and enter Pareto fronts.
- ``intermediate/``: one logical row per (trial_id, iteration) with the intermediate metrics.

Writes never rewrite what is there: each write is one new part file ``part-<seq>-<uuid>.parquet``
holding the written rows and a version column ``_seq`` (nanoseconds; ties broken by the part name),
written under a temporary name and renamed into place on file systems that rename atomically (on
object stores one PUT is atomic already). A read lists the parts once, reads exactly those as a
``pyarrow.dataset`` and keeps, per key, the row of the highest version; a deletion is a tombstone
row (``_deleted``). So a read takes no lock and always sees one consistent snapshot: the state
after some set of complete writes. Compaction (:meth:`ResultStore.compact`: at the sweep's end,
and by a writer once it has added :data:`COMPACT_EVERY` parts) writes the winning rows of the
parts it read as one part, then deletes those parts; a reader that listed a part that compaction
deleted meanwhile re-lists and reads again (the compacted part holds the same winners, tombstones
included, so any listing yields the same answer).

Each part carries ``peftsweep.schema_version`` in its Parquet metadata. A legacy single-file
store (``trials.parquet``, schema version 1) is read as the oldest part.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from models.errors import UserError
from search.config import PARAM_COLUMNS

__all__ = [
    "SCHEMA_VERSION",
    "TRIAL_SCHEMA",
    "INTERMEDIATE_SCHEMA",
    "COMPACT_EVERY",
    "ResultStore",
    "open_filesystem",
]

SCHEMA_VERSION = 2  # 2: part files with _seq/_deleted, study and model columns
_READABLE_VERSIONS = ("1", "2")
# A writer compacts after adding this many parts: reads stay fast (one dataset of ~this many
# small files at most per writer) and a write stays O(its own rows) on average.
COMPACT_EVERY = 64
_READ_RETRIES = 20
# (root, table) -> parts this process added since it last compacted them. Per process, not per
# instance: callers open a ResultStore per write.
_WRITTEN: dict[tuple[str, str], int] = {}

_TYPES = {"string": pa.string(), "int64": pa.int64(), "float64": pa.float64(), "bool": pa.bool_()}

_TRIAL_FIELDS: list[tuple[str, str]] = [
    ("trial_id", "string"),
    ("sweep_id", "string"),
    ("study", "string"),
    ("model", "string"),
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
    ("study", "string"),
    ("domain", "string"),
    ("iteration", "int64"),
    ("ap", "float64"),
    ("loss", "float64"),
    ("trainable_pct", "float64"),
    ("latency_ms", "float64"),
    ("time", "float64"),
]
# Bookkeeping columns of every part (dropped from what readers get).
_SEQ, _DELETED = "_seq", "_deleted"


def _schema(fields: list[tuple[str, str]]) -> pa.Schema:
    return pa.schema(
        [pa.field(n, _TYPES[t], nullable=True) for n, t in fields],
        metadata={"peftsweep.schema_version": str(SCHEMA_VERSION)},
    )


TRIAL_SCHEMA = _schema(_TRIAL_FIELDS)
INTERMEDIATE_SCHEMA = _schema(_INTERMEDIATE_FIELDS)


def _part_schema(schema: pa.Schema) -> pa.Schema:
    return schema.append(pa.field(_SEQ, pa.int64())).append(pa.field(_DELETED, pa.bool_()))


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


def open_filesystem(root: str | os.PathLike[str]) -> tuple[pafs.FileSystem, str, bool]:
    """(file system, path in it, is_local) for a folder path or a ``pyarrow.fs`` URI.

    URIs may carry pyarrow's options as a query (``s3://b/p?endpoint_override=host:port&scheme=http``);
    credentials come from the usual environment (``AWS_ACCESS_KEY_ID``, ...), never from configs."""
    text = os.fspath(root)
    if "://" in text and not text.startswith("file://"):
        try:
            fs, path = pafs.FileSystem.from_uri(text)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, OSError) as exc:
            raise UserError(f"{text}: not a usable store URI ({str(exc).splitlines()[0]})") from None
        return fs, path.rstrip("/"), isinstance(fs, pafs.LocalFileSystem)
    if text.startswith("file://"):
        text = text[len("file://") :]
    return pafs.LocalFileSystem(), str(Path(text).absolute()), True


class ResultStore:
    """The two tables under ``root`` (folders created on first write). Picklable (holds the root)."""

    TRIALS = "trials"
    INTERMEDIATE = "intermediate"
    LEGACY = {"trials": "trials.parquet", "intermediate": "intermediate.parquet"}

    def __init__(self, root: str | os.PathLike[str], *, compact_every: int = COMPACT_EVERY) -> None:
        self.root = os.fspath(root)
        self.compact_every = compact_every
        self._fs_cache: tuple[pafs.FileSystem, str, bool] | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {"root": self.root, "compact_every": self.compact_every}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["root"], compact_every=state["compact_every"])  # type: ignore[misc]

    @property
    def _fs(self) -> tuple[pafs.FileSystem, str, bool]:
        if self._fs_cache is None:
            self._fs_cache = open_filesystem(self.root)
        return self._fs_cache

    def _dir(self, table: str) -> str:
        return f"{self._fs[1]}/{table}"

    # ----------------------------------------------------------------------------------- checks
    def check_reachable(self, field: str = "results") -> None:
        """Raise a one-line UserError naming ``field`` when the root cannot be reached or written
        (e.g. an object store's bucket that does not exist, a dead endpoint, a read-only folder)."""
        try:
            fs, path, local = self._fs
        except UserError as exc:
            raise UserError(f"{field}: {exc}") from None
        try:
            if local:
                parent = Path(path)
                while not parent.exists():
                    parent = parent.parent
                if not os.access(parent, os.W_OK):
                    raise UserError(f"{field}: {self.root}: not writable")
                return
            bucket = path.split("/", 1)[0]
            info = fs.get_file_info(bucket)
            if info.type == pafs.FileType.NotFound:
                raise UserError(f"{field}: {self.root}: bucket {bucket!r} not found")
        except UserError:
            raise
        except (OSError, pa.ArrowException) as exc:
            raise UserError(f"{field}: {self.root}: unreachable ({str(exc).splitlines()[0]})") from None

    # ---------------------------------------------------------------------------------- writing
    def _append(self, table: str, data: pa.Table, deleted: bool = False) -> None:
        fs, _, local = self._fs
        seq = time.time_ns()
        n = data.num_rows
        data = data.append_column(_SEQ, pa.array([seq] * n, pa.int64()))
        data = data.append_column(_DELETED, pa.array([deleted] * n, pa.bool_()))
        folder = self._dir(table)
        name = f"part-{seq:020d}-{uuid.uuid4().hex[:12]}.parquet"
        self._write_part(fs, folder, name, data, local)
        key = (self.root, table)
        _WRITTEN[key] = _WRITTEN.get(key, 0) + 1
        if _WRITTEN[key] >= self.compact_every:
            self.compact(table)

    @staticmethod
    def _write_part(
        fs: pafs.FileSystem, folder: str, name: str, data: pa.Table, local: bool, durable: bool = False
    ) -> None:
        fs.create_dir(folder, recursive=True)
        if not local:
            # One PUT is atomic on object stores: readers see the whole object or none of it.
            pq.write_table(data, f"{folder}/{name}", filesystem=fs, write_statistics=False)
            return
        tmp = f"{folder}/.{name}.tmp-{os.getpid()}"
        try:
            # No statistics: parts are small and read whole. No fsync for a row's part: a process
            # that dies leaves its page cache behind, and the rename makes the part whole or absent;
            # compacted parts (which replace others) are synced (``durable``).
            pq.write_table(data, tmp, filesystem=fs, write_statistics=False)
            if durable:
                with open(tmp, "rb") as fh:
                    os.fsync(fh.fileno())
            fs.move(tmp, f"{folder}/{name}")
        except BaseException:
            with contextlib.suppress(OSError):
                fs.delete_file(tmp)
            raise

    def upsert_trials(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """Insert or replace trial rows by ``trial_id`` (the last of a batch wins). Unknown keys are
        ignored."""
        if any(not r.get("trial_id") for r in rows):
            raise ValueError("every trial row needs a trial_id")
        if rows:
            self._append(self.TRIALS, _table(rows, TRIAL_SCHEMA))

    def upsert_intermediate(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """Insert or replace intermediate rows by (trial_id, iteration)."""
        if rows:
            self._append(self.INTERMEDIATE, _table(rows, INTERMEDIATE_SCHEMA))

    def delete_trials(self, trial_ids: Sequence[str]) -> None:
        """Remove trials (and their intermediate rows) by id: used for rows of trials the driver
        started but Tune's last experiment snapshot never recorded (lost with a killed driver)."""
        ids = sorted(set(trial_ids))
        if not ids:
            return
        self._append(self.TRIALS, _table([{"trial_id": t} for t in ids], TRIAL_SCHEMA), deleted=True)
        inter = self._snapshot(self.INTERMEDIATE, INTERMEDIATE_SCHEMA)
        gone = inter.filter(pc.is_in(inter["trial_id"], pa.array(ids, pa.string())))
        if gone.num_rows:
            keys = gone.select(["trial_id", "iteration"]).to_pylist()
            self._append(self.INTERMEDIATE, _table(keys, INTERMEDIATE_SCHEMA), deleted=True)

    # ---------------------------------------------------------------------------------- reading
    def _parts(self, table: str) -> list[str]:
        fs, path, _ = self._fs
        infos = fs.get_file_info(pafs.FileSelector(self._dir(table), allow_not_found=True))
        parts = [i.path for i in infos if i.type == pafs.FileType.File]
        parts = [p for p in parts if p.rsplit("/", 1)[-1].startswith("part-") and p.endswith(".parquet")]
        return sorted(parts)

    def _legacy(self, table: str) -> str | None:
        fs, path, _ = self._fs
        legacy = f"{path}/{self.LEGACY[table]}"
        return legacy if fs.get_file_info(legacy).type == pafs.FileType.File else None

    def _read_parts(self, table: str, schema: pa.Schema) -> pa.Table:
        """Every row of every part listed once (with _seq and _deleted), in part-name order."""
        fs, _, _ = self._fs
        pschema = _part_schema(schema)
        for attempt in range(_READ_RETRIES):
            parts = self._parts(table)
            try:
                pieces = []
                legacy = self._legacy(table)
                if legacy is not None:
                    pieces.append(self._read_legacy(fs, legacy, schema))
                if parts:
                    # The first and last parts say which layout wrote them (every part of one
                    # store is written by the same schema version; reading each footer twice
                    # would double a read's cost).
                    for p in {parts[0], parts[-1]}:
                        self._check_version(fs, p)
                    pieces.append(
                        ds.dataset(parts, schema=pschema, format="parquet", filesystem=fs).to_table()
                    )
                if not pieces:
                    return pschema.empty_table()
                return pa.concat_tables(pieces) if len(pieces) > 1 else pieces[0]
            except FileNotFoundError:
                # Compaction deleted a listed part after our listing: list again.
                time.sleep(0.01 * (attempt + 1))
        raise OSError(f"{self.root}/{table}: parts kept changing during {_READ_RETRIES} reads")

    def _check_version(self, fs: pafs.FileSystem, path: str) -> None:
        meta = pq.read_schema(path, filesystem=fs).metadata or {}
        version = meta.get(b"peftsweep.schema_version", b"?").decode()
        if version not in _READABLE_VERSIONS:
            raise UserError(
                f"{path}: results schema version {version}, this peftsweep reads {SCHEMA_VERSION}"
            )

    def _read_legacy(self, fs: pafs.FileSystem, path: str, schema: pa.Schema) -> pa.Table:
        self._check_version(fs, path)
        old = pq.read_table(path, filesystem=fs)
        cols = {
            f.name: old[f.name].cast(f.type) if f.name in old.column_names else pa.nulls(old.num_rows, f.type)
            for f in schema
        }
        n = old.num_rows
        cols.update(
            {
                _SEQ: pa.array([0] * n, pa.int64()),
                _DELETED: pa.array([False] * n, pa.bool_()),
            }
        )
        return pa.table(cols)

    @staticmethod
    def _latest(rows: pa.Table, key: list[str]) -> pa.Table:
        """Per key, the row of the highest version: ``_seq``, then the part's name, then the row's
        place in its part (``rows`` come in part-name order; Arrow's sort is stable). Ordered by
        version, so a rewritten row moves to the end as it did in the one-file store. The sorting
        and grouping run on the key columns only; the wide table is gathered once."""
        if rows.num_rows == 0:
            return rows
        order = pc.sort_indices(rows.select([_SEQ]), [(_SEQ, "ascending")])
        small = pa.table({k: pc.take(rows[k], order) for k in key})
        small = small.append_column("_rank", pa.array(range(rows.num_rows), pa.int64()))
        last = small.group_by(key, use_threads=False).aggregate([("_rank", "max")])["_rank_max"]
        winners = pc.take(order, pc.take(last, pc.sort_indices(last)))
        return rows.take(winners)

    def _snapshot(self, table: str, schema: pa.Schema, *, keep_tombstones: bool = False) -> pa.Table:
        key = ["trial_id"] if table == self.TRIALS else ["trial_id", "iteration"]
        latest = self._latest(self._read_parts(table, schema), key)
        if keep_tombstones:
            return latest
        latest = latest.filter(pc.invert(pc.fill_null(latest[_DELETED], False)))
        return latest.select(schema.names).cast(schema)

    def trials_table(self) -> pa.Table:
        """The current trials: one row per trial id, in the order of their latest writes."""
        return self._snapshot(self.TRIALS, TRIAL_SCHEMA)

    def trials(self) -> pd.DataFrame:
        return self.trials_table().to_pandas()

    def intermediate_table(self) -> pa.Table:
        return self._snapshot(self.INTERMEDIATE, INTERMEDIATE_SCHEMA)

    def intermediate(self) -> pd.DataFrame:
        return self.intermediate_table().to_pandas()

    def exists(self) -> bool:
        return bool(self._parts(self.TRIALS)) or self._legacy(self.TRIALS) is not None

    def num_parts(self, table: str = TRIALS) -> int:
        return len(self._parts(table))

    # ------------------------------------------------------------------------------- compaction
    def compact(self, table: str | None = None) -> None:
        """Fold the parts of ``table`` (default both) into one part of their latest rows."""
        for name in [table] if table else [self.TRIALS, self.INTERMEDIATE]:
            self._compact(name)

    def _compact(self, table: str) -> None:
        schema = TRIAL_SCHEMA if table == self.TRIALS else INTERMEDIATE_SCHEMA
        fs, _, local = self._fs
        _WRITTEN[(self.root, table)] = 0
        parts = self._parts(table)
        if len(parts) < 2:
            return
        key = ["trial_id"] if table == self.TRIALS else ["trial_id", "iteration"]
        pschema = _part_schema(schema)
        try:
            rows = ds.dataset(parts, schema=pschema, format="parquet", filesystem=fs).to_table()
        except FileNotFoundError:
            return  # another writer compacted these parts meanwhile
        latest = self._latest(rows, key).cast(pschema)
        # Named after the newest version it holds, so its name sorts with the parts it replaces.
        seq = int(pc.max(latest[_SEQ]).as_py() or 0)
        name = f"part-{seq:020d}-compact-{uuid.uuid4().hex[:12]}.parquet"
        self._write_part(fs, self._dir(table), name, latest, local, durable=True)
        for p in parts:  # only after the compacted part is visible
            with contextlib.suppress(FileNotFoundError):
                fs.delete_file(p)
