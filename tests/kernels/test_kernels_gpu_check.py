"""kernels/gpu_check.py: every section runs (tiny shapes through the interpreter without a GPU), an
error in one section is recorded and the next one runs, the time budget skips what no longer fits,
and the JSON is on disk after each section."""

from __future__ import annotations

import json
import time

import pytest

from kernels import gpu_check
from kernels.native import native_available


@pytest.mark.slow
def test_tiny_check_runs_every_section_and_writes_its_json(tmp_path, triton_device) -> None:
    cfg = gpu_check.CheckConfig(out=str(tmp_path), tiny=True, build=False, tests=False)
    data = gpu_check.run_check(cfg)
    files = list(tmp_path.glob("gpu_check_*.json"))
    assert len(files) == 1
    assert json.loads(files[0].read_text())["targets"] == json.loads(json.dumps(data["targets"]))
    for section in ("environment", "correctness", "int64", "fused_lora", "timing", "targets"):
        assert data[section]["status"] == "ok", (section, data[section].get("error"))
    assert data["environment"]["torch"] and data["environment"]["triton"]

    worst = data["correctness"]["worst_rel_l2"]
    assert worst["triton_fp32_vs_grid_sample"] < 1e-5
    assert worst["triton_softmax_vs_grid_sample"] < 1e-5
    assert 1e-5 < worst["triton_bf16_vs_fp32"] < 2e-2  # bf16 really rounds, and only that much
    if native_available(triton_device.type):
        name = "cuda_op" if triton_device.type == "cuda" else "native_cpu"
        assert worst[f"{name}_vs_grid_sample"] < 1e-5 and worst[f"triton_fp32_vs_{name}"] < 1e-5
    locations = {(r["case"], r["locations"]) for r in data["correctness"]["rows"]}
    assert {loc for _, loc in locations} == {"uniform", "local"} and len(locations) == 4

    int64 = data["int64"]
    assert int64["errors_vs_grid_sample_on_crop"]["output"]["rel_l2"] < 1e-2  # bf16 output
    assert int64["errors_vs_grid_sample_on_crop"]["grad_value_crop"]["rel_l2"] < 1e-2  # bf16 gradient
    assert int64["grad_value_outside_crop_max_abs"] == 0.0

    for row in data["fused_lora"]["rows"]:
        for key in ("fused_vs_torch", "unfused_vs_torch"):
            assert max(e["rel_l2"] for e in row[key].values()) < 1e-4, (key, row["case"])
        assert row["fused_fwd_bwd_ms"] > 0 and row["unfused_fwd_bwd_ms"] > 0
        assert {k for k in row[key] if k.startswith("grad_")} >= {
            "grad_query",
            "grad_src",
            "grad_sampling_offsets.lora_A",
            "grad_sampling_offsets.lora_B",
            "grad_value_proj.lora_A",
            "grad_value_proj.lora_B",
        }

    paths = {r["path"] for r in data["timing"]["rows"]}
    assert {"triton", "grid_sample"} <= paths
    assert {(s["dtype"], s["vs"]) for s in data["timing"]["speedups"]} >= {
        ("fp32", "grid_sample"),
        ("bf16", "grid_sample"),
    }
    targets = data["targets"]
    assert set(targets) - {"status", "seconds"} == {
        "fwd_bwd_fp32_vs_cuda_op",
        "fwd_bwd_bf16_vs_cuda_op",
        "fwd_bwd_vs_grid_sample",
        "fused_lora_no_slower",
        "fused_lora_lower_peak_memory",
    }
    if triton_device.type == "cpu":
        assert targets["fwd_bwd_fp32_vs_cuda_op"]["status"] == "not measured"
        assert targets["fused_lora_lower_peak_memory"]["status"] == "not measured"


def test_an_error_is_recorded_and_the_next_section_runs(tmp_path, triton_device, monkeypatch) -> None:
    def broken(cfg, device):
        raise RuntimeError("illegal memory access (simulated)")

    monkeypatch.setitem(gpu_check.__dict__, "_correctness", broken)
    cfg = gpu_check.CheckConfig(
        out=str(tmp_path / "r.json"), tiny=True, build=False, tests=False, sections=("correctness", "int64")
    )
    data = gpu_check.run_check(cfg)
    assert data["correctness"]["status"] == "error"
    assert "RuntimeError: illegal memory access (simulated)" in data["correctness"]["error"]
    assert data["int64"]["status"] == "ok"
    assert data["targets"]["fwd_bwd_vs_grid_sample"] == {"target": 5.0, "status": "not measured"}
    assert json.loads((tmp_path / "r.json").read_text())["correctness"]["status"] == "error"


def test_sections_that_no_longer_fit_the_budget_are_skipped(tmp_path) -> None:
    cfg = gpu_check.CheckConfig(out=str(tmp_path / "r.json"), budget_s=10.0)
    report = gpu_check.Report(cfg, start=time.monotonic() - 9.0)
    report.set_path("any")
    ran: list[str] = []
    gpu_check._section(report, "timing", 30, lambda: ran.append("timing"))
    gpu_check._section(report, "quick", 0, lambda: {"value": ran.append("quick")})
    assert ran == ["quick"]
    written = json.loads((tmp_path / "r.json").read_text())
    assert written["timing"]["status"] == "skipped" and "time budget" in written["timing"]["reason"]
    assert written["quick"]["status"] == "ok"


def test_a_section_past_the_budget_is_interrupted(tmp_path) -> None:
    cfg = gpu_check.CheckConfig(out=None, budget_s=4.0)
    report = gpu_check.Report(cfg, start=time.monotonic())

    def hang() -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            time.sleep(0.05)

    t0 = time.monotonic()
    gpu_check._section(report, "hang", 0, hang)
    assert time.monotonic() - t0 < 10
    assert report.data["hang"]["status"] == "error" and "time budget" in report.data["hang"]["error"]


def test_command_line(capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        gpu_check.main(["--sections", "correctness,pixel"])
    assert exc.value.code == 2
    assert "--sections: unknown ['pixel']" in capsys.readouterr().err


def test_background_tests_and_build_are_collected_or_stopped(tmp_path, monkeypatch) -> None:
    # the CUDA-only plumbing (pytest and the reference build run in the background) on stand-in
    # processes: a summary is parsed, a process past its deadline is stopped, a failed build or a
    # missing sdist is a message and not an exception
    import subprocess
    import sys

    monkeypatch.setattr(gpu_check, "TESTS_LOG", tmp_path / "tests.log")
    with open(tmp_path / "tests.log", "w") as log:
        done = subprocess.Popen([sys.executable, "-c", "print('71 passed, 8 skipped in 60.1s')"], stdout=log)
    result = gpu_check._finish_tests(done, time.monotonic() + 60)
    assert result["passed"] and result["counts"] == {"passed": 71, "skipped": 8}
    with open(tmp_path / "tests.log", "w") as log:
        slow = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], stdout=log)
    t0 = time.monotonic()
    result = gpu_check._finish_tests(slow, time.monotonic() + 0.5)
    assert time.monotonic() - t0 < 20 and slow.poll() is not None
    assert not result["passed"] and result["summary"].startswith("timed out")

    monkeypatch.setattr(gpu_check, "BUILD_TARGET", tmp_path / "ref")
    failed = subprocess.Popen([sys.executable, "-c", "import sys; print('nvcc fatal'); sys.exit(1)"])
    result = gpu_check._finish_build(failed, time.monotonic() + 60)
    assert result["built"] is False and result["returncode"] == 1
    assert gpu_check._finish_build("no sdist", time.monotonic())["message"] == "no sdist"

    import torch

    from kernels import native

    monkeypatch.setattr(gpu_check, "SDIST_DIR", tmp_path / "vendor_sdist")
    monkeypatch.setattr(native, "native_available", lambda device_type="cpu": False)
    message = gpu_check._start_build(torch.device("cpu"))
    assert isinstance(message, str) and "bash kernels/fetch_reference_sdist.sh" in message
