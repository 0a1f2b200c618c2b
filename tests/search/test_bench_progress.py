"""Progress of `peftsweep bench kernel / latency / engine`: plain lines with an ETA on stderr when it is
not a terminal (the figures on stdout unchanged), and with --quiet nothing but the figures.

Driven through the real CLI (``search.cli.main``) at the smallest sizes each benchmark takes."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from kernels.native import native_available
from search.benchmarks.engine import EngineBenchSettings, progress_totals
from search.cli import main

# every pass of a 2-thread model on a shared 2-core machine waits on busy cores: one thread
LATENCY = ["bench", "latency", "--warmup", "1", "--runs", "2", "--max-repetitions", "1", "--threads", "1"]
KERNEL = [
    "bench", "kernel", "--small", "--device", "cpu", "--cases", "decoder", "--warmup", "0", "--iters", "1",
]  # fmt: skip
ENGINE = [
    "bench", "engine", "--skip-cluster", "--overhead-trials", "10,20", "--store-rows", "100,300",
    "--writes", "3", "--front-trials", "50",
]  # fmt: skip


def _final_line(err: str, description: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.startswith(description + " ")]
    assert lines, f"no progress line for {description!r} in:\n{err}"
    return lines[-1]


def _plain(err: str) -> None:
    assert "\x1b" not in err and "\r" not in err  # not a terminal: no escape codes, no carriage returns


def test_bench_kernel_progress_lines_and_quiet(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(KERNEL) == 0
    out, err = capsys.readouterr()
    _plain(err)
    # msda + module level, torch (+ the compiled operator where installed), fwd and fwd+bwd
    total = 2 * (1 + int(native_available("cpu"))) * 2
    last = _final_line(err, "bench kernel")
    assert f"{total}/{total} (100%)" in last and "eta 0s" in last
    assert "module decoder torch fwd+bwd" in err or "module decoder native fwd+bwd" in err
    assert "GB/s" in out and "bench kernel" not in out  # the table on stdout, progress not in it

    assert main([*KERNEL, "--quiet"]) == 0
    quiet_out, quiet_err = capsys.readouterr()
    assert quiet_err == ""
    assert "GB/s" in quiet_out and "msda    decoder  torch" in quiet_out


def test_bench_latency_progress_lines_and_quiet(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*LATENCY, "--json", str(tmp_path / "a.json")]) == 0
    out, err = capsys.readouterr()
    _plain(err)
    # three models (base, merged LoRA, adapter x1) built, then 3 x (1 warm-up + 2 timed) passes
    assert "3/3 (100%)" in _final_line(err, "bench latency: build")
    last = _final_line(err, "bench latency: passes of 3 models")
    assert "9/9 (100%)" in last and "eta 0s" in last
    assert "vs base" in out and "(x86_64, 1 threads)" in out and "bench latency" not in out

    assert main([*LATENCY, "--quiet", "--json", str(tmp_path / "b.json")]) == 0
    quiet_out, quiet_err = capsys.readouterr()
    assert quiet_err == ""
    assert quiet_out.splitlines()[1].split() == ["variant", "median", "ms", "p90", "ms", "vs", "base"]
    ratios = json.loads(quiet_out.splitlines()[-1])  # the table's machine-readable last line
    assert list(ratios) == ["base", "lora r8 merged", "adapter x1"] and ratios["base"] == 1.0


def test_bench_latency_rejects_bad_threads(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*LATENCY[:-2], "--threads", "0"]) == 2
    assert capsys.readouterr().err.strip() == "peftsweep: error: --threads: must be >= 1, got 0"


def test_bench_engine_progress_lines_and_quiet(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(ENGINE) == 0
    out, err = capsys.readouterr()
    _plain(err)
    # store: 100 rows = 1 filling upsert + 3 timed, 300 rows = 3 + 3; overhead: 20 trials
    assert "10/10 (100%)" in _final_line(err, "bench engine: store writes")
    last = _final_line(err, "bench engine: driver overhead, trials")
    assert "20/20 (100%)" in last and "eta 0s" in last
    assert "cluster" not in err  # --skip-cluster: no row for it
    assert out.startswith("bench engine on ") and "at    20 trials" in out and "bench engine:" not in out

    assert main([*ENGINE, "--quiet", "--json"]) == 0
    quiet_out, quiet_err = capsys.readouterr()
    assert quiet_err == ""
    result = json.loads(quiet_out)
    assert set(result["overhead"]) == {"10", "20"} and set(result["store"]) == {"100", "300"}


def test_bench_engine_cluster_total_counts_both_ways_of_running() -> None:
    s = EngineBenchSettings(studies=4, trials=16, seeds=2, store_rows=(100, 1000), writes=30)
    assert progress_totals(s) == {"store": (1 + 30) + (10 + 30), "overhead": 2000, "cluster": 2 * 2 * 4 * 16}


@pytest.mark.parametrize("flag", ["--store-rows", "--overhead-trials"])
def test_bench_engine_rejects_bad_counts(flag: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*ENGINE, flag, "10,x"]) == 2
    err = capsys.readouterr().err.strip()
    assert re.fullmatch(rf"peftsweep: error: {flag}: a comma list of positive integers, got '10,x'", err)


@pytest.mark.slow
def test_bench_engine_on_a_local_ray_prints_only_progress_lines(tmp_path: Path) -> None:
    """The cluster part starts its own Ray (so a separate process): its stderr holds the progress
    rows and nothing of Ray's, Tune's or Optuna's start-up lines."""
    import subprocess
    import sys

    argv = [
        *ENGINE[:2], "--studies", "1", "--trials", "2", "--slots", "2", "--time-scale", "0.001",
        "--overhead-trials", "5", "--store-rows", "100", "--writes", "1", "--front-trials", "10",
    ]  # fmt: skip
    proc = subprocess.run(
        [sys.executable, "-m", "search.cli", *argv], capture_output=True, text=True, timeout=600, cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.splitlines()
    assert lines and all(ln.startswith("bench engine: ") for ln in lines), proc.stderr
    # 2 trials all studies at once + 2 one study after another
    assert "4/4 (100%)" in _final_line(proc.stderr, "bench engine: cluster, trials")
    assert "seed 0: all studies at once busy" in proc.stdout
