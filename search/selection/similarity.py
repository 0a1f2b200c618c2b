"""Domain similarity store: feature statistics of every domain a sweep has seen.

Layout, next to a sweep's results store (``store_dir``)::

    store_dir/domain_stats/index.parquet      one row per (domain, feature_key)
    store_dir/domain_stats/<name>-<hash>.npz  FeatureStats arrays (mean, cov, count, sample, levels)

``feature_key`` names the feature extractor (model name + base checkpoint identity + levels):
statistics are only comparable when the same backbone produced them, so neighbour search only
looks at rows with the caller's key. Recording the same (domain, feature_key) again replaces the
earlier entry. Writes go through a temp file + ``os.replace`` under an exclusive ``flock`` so
concurrent sweeps never leave a half-written index.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from models.errors import UserError
from search.selection.shift import FeatureStats, frechet_distance

__all__ = [
    "STATS_DIRNAME",
    "Neighbour",
    "record_domain_stats",
    "load_domain_stats",
    "list_domain_stats",
    "nearest_domains",
    "feature_key_for",
]

STATS_DIRNAME = "domain_stats"
_INDEX = "index.parquet"
_SCHEMA = pa.schema(
    [
        ("domain", pa.string()),
        ("feature_key", pa.string()),
        ("file", pa.string()),
        ("dim", pa.int64()),
        ("count", pa.int64()),
        ("recorded_at", pa.string()),
        ("source", pa.string()),
    ]
)


@dataclass(frozen=True)
class Neighbour:
    """An earlier domain and its Fréchet distance to the query statistics."""

    domain: str
    distance: float
    feature_key: str


def feature_key_for(model_name: str, base: str | None, levels: Sequence[str]) -> str:
    """Identity of a feature extractor: model config, base checkpoint (content hash) and levels.

    ``base`` is a checkpoint path (hashed by content, so a moved file keeps its key), any other
    identity string, or None for a randomly initialised backbone.
    """
    if base is None:
        base_id = "random-init"
    elif Path(base).is_file():
        h = hashlib.sha256()
        with open(base, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        base_id = h.hexdigest()[:16]
    else:
        base_id = str(base)
    return f"{model_name}|{base_id}|{'+'.join(levels)}"


def _stats_dir(store_dir: str | os.PathLike[str]) -> Path:
    return Path(store_dir) / STATS_DIRNAME


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / ".lock", "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _read_index(directory: Path) -> list[dict[str, object]]:
    path = directory / _INDEX
    if not path.exists():
        return []
    try:
        return pq.read_table(path).to_pylist()
    except (OSError, pa.ArrowInvalid) as exc:
        raise UserError(f"{path}: unreadable domain-stats index ({exc})") from exc


def _atomic_write(path: Path, write: object) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)  # type: ignore[operator]
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _file_name(domain: str, feature_key: str) -> str:
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in domain)[:60]
    digest = hashlib.sha256(f"{domain}\0{feature_key}".encode()).hexdigest()[:12]
    return f"{safe}-{digest}.npz"


def record_domain_stats(
    store_dir: str | os.PathLike[str],
    domain_name: str,
    stats: FeatureStats,
    *,
    feature_key: str,
    source: str = "",
) -> Path:
    """Store ``stats`` for ``domain_name`` under ``feature_key``; returns the npz path.

    ``source`` is free text saying where the statistics came from (sweep name, dataset path).
    """
    if not domain_name:
        raise UserError("domain_name: must not be empty")
    directory = _stats_dir(store_dir)
    with _locked(directory):
        rows = [
            r
            for r in _read_index(directory)
            if not (r["domain"] == domain_name and r["feature_key"] == feature_key)
        ]
        name = _file_name(domain_name, feature_key)
        npz_path = directory / name
        arrays = stats.to_arrays()

        def _write_npz(tmp: str) -> None:
            with open(tmp, "wb") as fh:
                np.savez(fh, **arrays)  # type: ignore[arg-type]

        _atomic_write(npz_path, _write_npz)
        rows.append(
            {
                "domain": domain_name,
                "feature_key": feature_key,
                "file": name,
                "dim": stats.dim,
                "count": stats.count,
                "recorded_at": datetime.now(UTC).isoformat(timespec="seconds"),
                "source": source,
            }
        )
        table = pa.Table.from_pylist(rows, schema=_SCHEMA)
        _atomic_write(directory / _INDEX, lambda tmp: pq.write_table(table, tmp))
    return npz_path


def list_domain_stats(
    store_dir: str | os.PathLike[str], feature_key: str | None = None
) -> list[dict[str, object]]:
    """Index rows (domain, feature_key, file, dim, count, recorded_at, source), optionally filtered."""
    rows = _read_index(_stats_dir(store_dir))
    return [r for r in rows if feature_key is None or r["feature_key"] == feature_key]


def load_domain_stats(store_dir: str | os.PathLike[str], domain_name: str, feature_key: str) -> FeatureStats:
    """The stored statistics of ``domain_name`` under ``feature_key`` (UserError if absent)."""
    directory = _stats_dir(store_dir)
    for row in _read_index(directory):
        if row["domain"] == domain_name and row["feature_key"] == feature_key:
            with np.load(directory / str(row["file"])) as data:
                return FeatureStats.from_arrays(data)
    raise UserError(f"{directory}: no statistics for domain {domain_name!r} with this feature extractor")


def nearest_domains(
    store_dir: str | os.PathLike[str],
    stats: FeatureStats,
    k: int,
    *,
    feature_key: str,
    exclude: Sequence[str] = (),
) -> list[Neighbour]:
    """The ``k`` stored domains closest to ``stats`` (Fréchet distance), nearest first.

    Only rows with the same ``feature_key`` and dimension are candidates; names in ``exclude``
    (e.g. the base model's own pretraining domain) are skipped. Ties break by domain name.
    """
    if k < 1:
        return []
    directory = _stats_dir(store_dir)
    found: list[Neighbour] = []
    for row in list_domain_stats(store_dir, feature_key):
        name = str(row["domain"])
        if name in exclude or int(row["dim"]) != stats.dim:  # type: ignore[call-overload]
            continue
        with np.load(directory / str(row["file"])) as data:
            other = FeatureStats.from_arrays(data)
        found.append(Neighbour(name, frechet_distance(stats, other), feature_key))
    found.sort(key=lambda n: (n.distance, n.domain))
    return found[:k]
