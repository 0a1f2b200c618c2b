"""Unit tests of search.cluster (no Ray): auth token, addresses, storage URIs, process scoping,
and the `launch` command's input checks."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.fs as pafs
import pytest
import yaml

from models.errors import UserError
from search import cluster as sc
from search.cli import main as cli_main


def test_token_file_is_private_random_and_kept(tmp_path: Path):
    p = sc.write_token_file(tmp_path / "sub" / "tok")
    token = p.read_text()
    assert len(token) == 64 and int(token, 16) >= 0
    assert stat.S_IMODE(p.stat().st_mode) == 0o600
    assert sc.write_token_file(p).read_text() == token  # an existing token is kept
    assert sc.write_token_file(tmp_path / "other").read_text() != token


def test_auth_env(tmp_path: Path):
    assert sc.auth_env(None) == {}
    with pytest.raises(UserError, match="token-file"):
        sc.auth_env(tmp_path / "missing")
    (tmp_path / "empty").write_text("  \n")
    with pytest.raises(UserError, match="token-file"):
        sc.auth_env(tmp_path / "empty")
    p = sc.write_token_file(tmp_path / "tok")
    assert sc.auth_env(p) == {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(p.resolve())}


@pytest.mark.parametrize("before", [None, "/elsewhere/token"])
def test_token_auth_restores_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, before: str | None
):
    # A driver that used a cluster's token and later starts a local Ray must not hand it that token.
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    if before is None:
        monkeypatch.delenv("RAY_AUTH_TOKEN_PATH", raising=False)
    else:
        monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", before)
    p = sc.write_token_file(tmp_path / "tok")
    with sc.token_auth(p) as env:
        assert os.environ["RAY_AUTH_TOKEN_PATH"] == env["RAY_AUTH_TOKEN_PATH"] == str(p.resolve())
        assert os.environ["RAY_AUTH_MODE"] == "token"
    assert os.environ.get("RAY_AUTH_TOKEN_PATH") == before and "RAY_AUTH_MODE" not in os.environ
    with pytest.raises(RuntimeError), sc.token_auth(p):
        raise RuntimeError("the launch failed")
    assert os.environ.get("RAY_AUTH_TOKEN_PATH") == before  # restored on errors too
    with sc.token_auth(None) as env:  # no token file: nothing set, nothing restored
        assert env == {} and os.environ.get("RAY_AUTH_TOKEN_PATH") == before


@pytest.mark.parametrize("good", ["auto", "ray://head:10001", "ray://10.0.0.5:10001", "127.0.0.2:6379"])
def test_resolve_address_accepts(good: str):
    assert sc.resolve_address(good) == good


@pytest.mark.parametrize(
    "bad",
    ["", "head", "ray://head", "http://head:8265", "head:port", "head:0", "head:70000", "ray://head:10001/x"],
)
def test_resolve_address_rejects(bad: str):
    with pytest.raises(UserError, match="--address"):
        sc.resolve_address(bad)


def test_uri_kinds_and_local_resolution(tmp_path: Path):
    assert not sc.is_remote_uri("/mnt/shared/x") and not sc.is_remote_uri("file:///mnt/x")
    assert not sc.is_remote_uri("c://data")  # a one-letter "scheme" is a drive letter
    assert sc.is_remote_uri("s3://bucket/key") and sc.is_remote_uri("gs://b/k")
    fs, path = sc.resolve_uri(f"file://{tmp_path}/a/../b")
    assert isinstance(fs, pafs.LocalFileSystem) and path == str(tmp_path / "b")
    with pytest.raises(UserError, match="storage URI"):
        sc.resolve_uri("nosuchfs://bucket/key")


def test_atomic_write_and_read(tmp_path: Path):
    target = tmp_path / "d" / "f.bin"
    sc.write_bytes_atomic(target, b"one")
    sc.write_bytes_atomic(str(target), b"two")
    assert sc.read_bytes(f"file://{target}") == b"two"
    assert sorted(p.name for p in target.parent.iterdir()) == ["f.bin"]  # no temp files left
    with pytest.raises(UserError, match="no such file"):
        sc.read_bytes(tmp_path / "missing")


@pytest.fixture
def fake_bucket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """`fake://...` URIs served by a non-local pyarrow filesystem over a folder (the S3/GCS path)."""
    bucket = tmp_path / "bucket"
    bucket.mkdir()
    remote = pafs.SubTreeFileSystem(str(bucket), pafs.LocalFileSystem())
    real = sc.resolve_uri

    def resolve(uri: str | os.PathLike[str]) -> tuple[pafs.FileSystem, str]:
        text = os.fspath(uri)
        if text.startswith("fake://"):
            return remote, text.removeprefix("fake://")
        return real(uri)

    monkeypatch.setattr(sc.storage, "resolve_uri", resolve)  # where local_copy looks it up
    return bucket


def test_local_copy_of_remote_file_and_folder(fake_bucket: Path, tmp_path: Path):
    (fake_bucket / "ckpt").mkdir()
    (fake_bucket / "ckpt" / "model.pth").write_bytes(b"weights")
    (fake_bucket / "data" / "images").mkdir(parents=True)
    (fake_bucket / "data" / "images" / "a.png").write_bytes(b"png")
    (fake_bucket / "data" / "train.json").write_text("{}")
    cache = tmp_path / "cache"

    f = sc.local_copy("fake://ckpt/model.pth", cache)
    assert f.read_bytes() == b"weights" and cache in f.parents
    d = sc.local_copy("fake://data", cache)
    assert (d / "images" / "a.png").read_bytes() == b"png" and (d / "train.json").exists()
    # A finished copy is reused: it survives the source going away.
    (fake_bucket / "ckpt" / "model.pth").unlink()
    assert sc.local_copy("fake://ckpt/model.pth", cache).read_bytes() == b"weights"
    with pytest.raises(UserError, match="not found"):
        sc.local_copy("fake://nothing/here", cache)
    assert not any(p.name.startswith(".") and p.is_dir() for p in cache.rglob("*"))  # no staging left


def test_localize_paths(fake_bucket: Path, tmp_path: Path):
    (fake_bucket / "base.pth").write_bytes(b"w")
    spec = {
        "base_checkpoint": "fake://base.pth",
        "train_json": "file:///mnt/shared/t.json",
        "train_images": "/mnt/shared/imgs",
        "eval_json": None,
        "lr": 0.1,
    }
    out = sc.localize_paths(spec, cache_dir=tmp_path / "c")
    assert Path(out["base_checkpoint"]).read_bytes() == b"w"
    assert out["train_json"] == "/mnt/shared/t.json" and out["train_images"] == "/mnt/shared/imgs"
    assert out["eval_json"] is None and out["lr"] == 0.1 and spec["base_checkpoint"] == "fake://base.pth"


def test_node_spec_validation():
    with pytest.raises(UserError, match="object_store_memory"):
        sc.NodeSpec(object_store_memory=1024)
    with pytest.raises(UserError, match="num_cpus"):
        sc.NodeSpec(num_cpus=-1)
    with pytest.raises(UserError, match="memory"):
        sc.NodeSpec(memory=0)


def test_terminate_session_ends_only_that_session():
    """stop() relies on this: every process of a node's session ends, others are untouched."""
    # A "node": a session leader that spawns a child ignoring SIGTERM (like a slow gcs_server).
    stubborn = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)"
    leader = (
        "import subprocess, sys, time; "
        f"subprocess.Popen([sys.executable, '-c', {stubborn!r}]); time.sleep(60)"
    )
    node = subprocess.Popen([sys.executable, "-c", leader], start_new_session=True)
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
    try:
        deadline = time.monotonic() + 10
        while len(sc.session_processes(node.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(sc.session_processes(node.pid)) == 2
        sc.local._terminate_session(node.pid, grace_s=0.5)
        node.wait(timeout=5)
        assert sc.session_processes(node.pid) == {}
        assert other.poll() is None and sc.session_processes(other.pid)
    finally:
        for p in (node, other):
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()


def _config(tmp_path: Path, **over: object) -> Path:
    cfg = {"name": "t", "domains": ["clean"], "output_dir": str(tmp_path / "out"), **over}
    p = tmp_path / "sweep.yaml"
    p.write_text(yaml.safe_dump(cfg))
    return p


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--address", "nowhere"], "--address"),
        (["--address", "auto", "--token-file", "/nonexistent/token"], "--token-file"),
        (["--address", "auto", "--output-dir", "s3://bucket/out"], "output_dir"),
        (["--address", "auto", "--gpus-per-trial", "-1"], "--gpus-per-trial"),
        (["--address", "auto", "--gpus-per-trial", "1.5"], "--gpus-per-trial"),
        (["--address", "auto", "--max-failures", "-2"], "--max-failures"),
    ],
)
def test_launch_rejects_bad_input_before_touching_ray(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], needle: str
):
    assert cli_main(["launch", str(_config(tmp_path)), *extra]) == 2
    assert needle in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def _closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_check_reachable_answers_at_once_with_the_reason():
    import socket

    from search.cluster.connect import check_reachable

    with socket.socket() as server:  # something listening: reachable, in both address forms
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        check_reachable(f"127.0.0.1:{port}")
        check_reachable(f"ray://127.0.0.1:{port}")
    check_reachable("auto")  # Ray looks that one up itself
    port = _closed_port()
    t0 = time.monotonic()
    with pytest.raises(
        UserError,
        match=rf"^--address 127\.0\.0\.1:{port}: no Ray cluster answers there \(connection refused\)$",
    ):
        check_reachable(f"127.0.0.1:{port}")
    assert time.monotonic() - t0 < 5  # not ray.init's minutes of waiting
    with pytest.raises(
        UserError, match=r"^--address no-such-host\.invalid:6379: unknown host 'no-such-host\.invalid'$"
    ):
        check_reachable("no-such-host.invalid:6379")
    with pytest.raises(UserError, match="--address: expected"):
        check_reachable("head")


@pytest.mark.parametrize("command", ["launch", "run"])
def test_an_address_nobody_answers_at_stops_before_anything_is_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str
):
    address = f"127.0.0.1:{_closed_port()}"
    t0 = time.monotonic()
    assert cli_main([command, str(_config(tmp_path)), "--address", address]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"peftsweep: error: --address {address}: no Ray cluster answers there (connection refused)"
    ]
    assert not (tmp_path / "out").exists() and time.monotonic() - t0 < 30


def test_select_with_an_address_nobody_answers_at_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    from models.data.coco import write_synthetic_coco

    data = write_synthetic_coco("clean", tmp_path / "clean", 4, seed=0, image_size=64)
    address = f"127.0.0.1:{_closed_port()}"
    out = tmp_path / "sel"
    args = ["select", "--data", str(data), "--images", str(data.parent / "images"), "--out", str(out)]
    assert cli_main([*args, "--address", address, "--quiet"]) == 2
    assert f"--address {address}: no Ray cluster answers there" in capsys.readouterr().err
    assert not out.exists()
