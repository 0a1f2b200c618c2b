"""The append-only store: reads that never fail during writes and compaction, one consistent
snapshot per read, tombstones, legacy single-file stores, and the object-store URI path."""

from __future__ import annotations

import threading
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from models.errors import UserError
from search.results.store import ResultStore


def _row(tid: str, **kw: object) -> dict[str, object]:
    return {"trial_id": tid, "sweep_id": "s", "domain": "clean", "status": "running", **kw}


def test_writes_append_parts_and_compaction_keeps_the_latest_rows(tmp_path: Path) -> None:
    st = ResultStore(tmp_path, compact_every=1000)
    for i in range(6):
        st.upsert_trials([_row(f"t{i}")])
    st.upsert_trials([_row("t2", status="completed", ap=0.4)])
    st.delete_trials(["t4"])
    assert st.num_parts() == 8  # nothing rewritten: one part per write
    before = st.trials()
    st.compact()
    assert st.num_parts() == 1
    after = st.trials()
    assert list(after.trial_id) == list(before.trial_id) == ["t0", "t1", "t3", "t5", "t2"]
    assert after.set_index("trial_id").loc["t2", "ap"] == pytest.approx(0.4)
    # The tombstone survives compaction: an old part a slow reader still lists cannot revive t4.
    st.upsert_trials([_row("t9")])
    assert "t4" not in set(st.trials().trial_id)


def test_a_reader_in_a_tight_loop_never_fails_and_sees_whole_writes(tmp_path: Path) -> None:
    st = ResultStore(tmp_path, compact_every=7)  # compaction every few writes, while reading
    errors: list[str] = []
    seen: list[int] = []
    stop = threading.Event()

    def reader() -> None:
        r = ResultStore(tmp_path)
        while not stop.is_set():
            try:
                df = r.trials()
            except Exception as exc:  # noqa: BLE001 - the test records any failure
                errors.append(f"{type(exc).__name__}: {exc}")
                continue
            seen.append(len(df))
            # Each write adds a trial and finishes the previous one in ONE batch: a consistent
            # snapshot never shows two running trials.
            if (df.status == "running").sum() > 1 or df.status.isna().any():
                errors.append(f"torn snapshot: {df[['trial_id', 'status']].values.tolist()}")

    th = threading.Thread(target=reader)
    th.start()
    try:
        for i in range(120):
            rows = [_row(f"t{i}")]
            if i:
                rows.append(_row(f"t{i - 1}", status="completed", ap=0.5))
            st.upsert_trials(rows)
            if i % 40 == 39:
                st.delete_trials([f"t{i - 30}"])
    finally:
        stop.set()
        th.join(30)
    assert not errors, errors[:5]
    assert len(seen) > 20, "the reader barely ran"
    final = st.trials()
    assert len(final) == 117 and final.trial_id.is_unique


def test_reads_legacy_single_file_stores(tmp_path: Path) -> None:
    # A version-1 file: one table, no study/model columns.
    t = pa.table({"trial_id": ["a", "b"], "domain": ["clean", "clean"], "status": ["completed", "running"]})
    pq.write_table(t.replace_schema_metadata({"peftsweep.schema_version": "1"}), tmp_path / "trials.parquet")
    st = ResultStore(tmp_path)
    assert st.exists() and list(st.trials().trial_id) == ["a", "b"]
    st.upsert_trials([_row("b", status="completed")])  # newer than anything in the legacy file
    assert set(st.trials().status) == {"completed"}


def test_schema_version_from_the_future_is_a_user_error(tmp_path: Path) -> None:
    st = ResultStore(tmp_path)
    st.upsert_trials([_row("a")])
    part = next((tmp_path / "trials").glob("part-*.parquet"))
    t = pq.read_table(part)
    pq.write_table(t.replace_schema_metadata({"peftsweep.schema_version": "99"}), part)
    with pytest.raises(UserError, match="schema version 99"):
        st.trials()


def test_unwritable_root_is_a_user_error_naming_the_field(tmp_path: Path) -> None:
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        import os

        if os.access(ro, os.W_OK):  # root ignores permissions
            pytest.skip("running as a user that can write anywhere")
        with pytest.raises(UserError, match="^results: .*not writable"):
            ResultStore(ro / "results").check_reachable("results")
    finally:
        ro.chmod(0o700)


def test_s3_uri_round_trip_against_a_local_server(s3_server: str) -> None:
    uri = f"s3://sweeps/run1?{s3_server}"
    st = ResultStore(uri, compact_every=4)
    st.check_reachable()
    for i in range(5):  # the 4th write compacts on the object store
        st.upsert_trials([_row(f"t{i}", ap=float(i))])
    st.upsert_intermediate([{"trial_id": "t1", "iteration": 10, "ap": 0.1}])
    st.upsert_trials([_row("t1", status="completed", ap=0.9)])
    df = ResultStore(uri).trials()  # a fresh reader (another process would see the same)
    assert sorted(df.trial_id) == [f"t{i}" for i in range(5)]
    assert df.set_index("trial_id").loc["t1", "status"] == "completed"
    assert list(ResultStore(uri).intermediate().ap) == [0.1]
    st.compact()
    assert st.num_parts() == 1 and len(st.trials()) == 5


def test_s3_unknown_bucket_is_a_user_error(s3_server: str) -> None:
    with pytest.raises(UserError, match=r"^results: s3://nobucket/x.*bucket 'nobucket' not found"):
        ResultStore(f"s3://nobucket/x?{s3_server}").check_reachable("results")


def test_write_time_does_not_grow_with_the_table(tmp_path: Path) -> None:
    """Behaviour, not speed: a write touches only its own part (bytes written independent of the
    table's size), which is what keeps a sweep's store writes linear overall."""
    st = ResultStore(tmp_path, compact_every=10_000)
    st.upsert_trials([_row(f"t{i}") for i in range(3000)])
    before = {p.name for p in (tmp_path / "trials").iterdir()}
    st.upsert_trials([_row("t5", status="completed")])
    new = [p for p in (tmp_path / "trials").iterdir() if p.name not in before]
    assert len(new) == 1 and pq.read_metadata(new[0]).num_rows == 1
