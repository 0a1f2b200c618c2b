"""Parquet store: typed versioned schema, idempotent upserts, atomic parts, concurrent writers."""

from __future__ import annotations

import multiprocessing as mp
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from models.errors import UserError
from search.results import store as store_mod
from search.results.store import SCHEMA_VERSION, TRIAL_SCHEMA, ResultStore


def _row(tid: str, **kw: object) -> dict[str, object]:
    return {
        "trial_id": tid,
        "sweep_id": "s",
        "domain": "clean",
        "status": "completed",
        "method": "lora",
        "lora_rank": 8,
        "ap": 0.5,
        "trainable_pct": 0.3,
        "latency_ms": 12.0,
        **kw,
    }


def test_upsert_is_idempotent_and_typed(tmp_path: Path) -> None:
    st = ResultStore(tmp_path)
    st.upsert_trials([_row("a", status="running"), _row("b")])
    st.upsert_trials([_row("a", ap=0.7), _row("a", ap=0.8)])  # retried twice: last one wins
    st.upsert_trials([_row("b")])
    df = st.trials()
    assert sorted(df.trial_id) == ["a", "b"]
    a = df[df.trial_id == "a"].iloc[0]
    assert a.status == "completed" and a.ap == pytest.approx(0.8)
    part = sorted((tmp_path / "trials").glob("part-*.parquet"))[0]
    assert pq.read_schema(part).metadata[b"peftsweep.schema_version"] == str(SCHEMA_VERSION).encode()
    t = st.trials_table()
    assert t.schema.field("lora_rank").type == pa.int64() and t.schema.field("ap").type == pa.float64()
    assert t.schema.names == TRIAL_SCHEMA.names
    # inactive conditional parameters are null, not NaN-floats of an int column
    assert t.column("adapter_repetitions").null_count == 2
    st.upsert_intermediate(
        [{"trial_id": "a", "iteration": 10, "ap": 0.1}, {"trial_id": "a", "iteration": 20, "ap": 0.2}]
    )
    st.upsert_intermediate([{"trial_id": "a", "iteration": 20, "ap": 0.25}])
    inter = st.intermediate().sort_values("iteration")
    assert list(inter.iteration) == [10, 20] and list(inter.ap) == [0.1, 0.25]
    with pytest.raises(ValueError, match="trial_id"):
        st.upsert_trials([{"status": "completed"}])


def test_failed_write_leaves_no_part_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    st = ResultStore(tmp_path)
    st.upsert_trials([_row("a")])
    before = sorted(p.name for p in (tmp_path / "trials").iterdir())

    def broken(table: pa.Table, where: object, **kw: object) -> None:
        Path(str(where)).write_bytes(b"PAR1 half-written")
        raise OSError("disk full")

    monkeypatch.setattr(store_mod.pq, "write_table", broken)
    with pytest.raises(OSError):
        st.upsert_trials([_row("b")])
    monkeypatch.undo()
    assert sorted(p.name for p in (tmp_path / "trials").iterdir()) == before  # no half part, no temp
    assert list(ResultStore(tmp_path).trials().trial_id) == ["a"]


def test_schema_version_mismatch_is_a_user_error(tmp_path: Path) -> None:
    t = pa.table({"trial_id": ["a"]}).replace_schema_metadata({"peftsweep.schema_version": "99"})
    pq.write_table(t, tmp_path / "trials.parquet")
    with pytest.raises(UserError, match="schema version 99"):
        ResultStore(tmp_path).trials()


def _writer(root: str, k: int) -> None:
    st = ResultStore(root)
    for i in range(5):
        st.upsert_trials([_row(f"w{k}-{i}")])
        st.upsert_trials([_row("shared", ap=float(k))])


def test_concurrent_writers_lose_nothing(tmp_path: Path) -> None:
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=_writer, args=(str(tmp_path), k)) for k in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    ids = list(ResultStore(tmp_path).trials().trial_id)
    assert len(ids) == len(set(ids)) == 16
