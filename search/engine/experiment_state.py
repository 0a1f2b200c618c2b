"""Tune's experiment snapshot, kept whole across a driver's death.

Tune writes ``experiment_state-<session>.json`` with a plain ``open("w")`` in the driver's staging
folder and copies it into the experiment folder afterwards: a driver killed during either leaves an
empty or truncated file there, ``Tuner.restore`` then fails ("Failed to restore the run state") and
the sweep cannot resume. Right after writing a snapshot Tune saves the searcher into the same
staging folder; the sweep's searcher (:class:`search.engine.studies.StudyMux`) uses that moment to
keep an atomic copy of every complete snapshot (:func:`keep_snapshots`), and ``resume`` replaces a
snapshot that does not parse by its copy before restoring (:func:`repair_snapshots`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from search.cluster.storage import write_bytes_atomic

__all__ = ["SNAPSHOT_GLOB", "keep_snapshots", "repair_snapshots"]

SNAPSHOT_GLOB = "experiment_state-*.json"


def _whole(data: bytes) -> bool:
    """A snapshot Tune can read back (it is JSON; a cut-off write is not)."""
    try:
        json.loads(data)
    except ValueError:
        return False
    return True


def keep_snapshots(staging_dir: str | os.PathLike[str], backup_dir: str | os.PathLike[str]) -> list[str]:
    """Copy each complete snapshot in ``staging_dir`` to ``backup_dir`` (atomically, only when it
    changed); returns the names copied."""
    copied = []
    for src in sorted(Path(staging_dir).glob(SNAPSHOT_GLOB)):
        data = src.read_bytes()
        dst = Path(backup_dir) / src.name
        if not _whole(data) or (dst.is_file() and dst.read_bytes() == data):
            continue
        write_bytes_atomic(dst, data)
        copied.append(src.name)
    return copied


def repair_snapshots(experiment_dir: str | os.PathLike[str], backup_dir: str | os.PathLike[str]) -> list[str]:
    """Replace each snapshot in ``experiment_dir`` that does not parse by its complete copy in
    ``backup_dir``; returns the names repaired (a broken one without a copy is left for Tune)."""
    repaired = []
    for path in sorted(Path(experiment_dir).glob(SNAPSHOT_GLOB)):
        if _whole(path.read_bytes()):
            continue
        copy = Path(backup_dir) / path.name
        if copy.is_file() and _whole(copy.read_bytes()):
            write_bytes_atomic(path, copy.read_bytes())
            repaired.append(path.name)
    return repaired
