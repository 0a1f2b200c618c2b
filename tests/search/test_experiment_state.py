"""Complete copies of Tune's experiment snapshots, and the repair of a cut-off one (no Ray)."""

from __future__ import annotations

import json
from pathlib import Path

from search.engine.experiment_state import keep_snapshots, repair_snapshots

WHOLE = json.dumps({"trial_data": [], "runner_data": {}}).encode()


def test_kept_copies_are_whole_and_repair_puts_them_back(tmp_path: Path) -> None:
    staging, backup, exp = tmp_path / "staging", tmp_path / "backup", tmp_path / "exp"
    for d in (staging, exp):
        d.mkdir()
    (staging / "experiment_state-2026-12-01_06-00-00.json").write_bytes(WHOLE)
    (staging / "experiment_state-2026-12-01_07-00-00.json").write_bytes(WHOLE[:10])  # being written
    (staging / "searcher-state-x.pkl").write_bytes(b"not a snapshot")
    assert keep_snapshots(staging, backup) == ["experiment_state-2026-12-01_06-00-00.json"]
    assert keep_snapshots(staging, backup) == []  # unchanged: not copied again
    assert sorted(p.name for p in backup.iterdir()) == ["experiment_state-2026-12-01_06-00-00.json"]

    (exp / "experiment_state-2026-12-01_06-00-00.json").write_bytes(b"")  # the driver died copying it
    (exp / "experiment_state-2026-12-01_05-00-00.json").write_bytes(b"{")  # cut off, and no copy kept
    (exp / "experiment_state-2026-12-01_04-00-00.json").write_bytes(WHOLE)
    assert repair_snapshots(exp, backup) == ["experiment_state-2026-12-01_06-00-00.json"]
    assert (exp / "experiment_state-2026-12-01_06-00-00.json").read_bytes() == WHOLE
    assert (exp / "experiment_state-2026-12-01_05-00-00.json").read_bytes() == b"{"  # left for Tune
    assert repair_snapshots(exp, tmp_path / "no-backup") == []
