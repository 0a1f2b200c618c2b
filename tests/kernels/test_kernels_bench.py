"""`peftsweep bench kernel` entry points: the CPU run (grid_sample and, where installed, the compiled
operator side by side) writes its JSON on request; the same tests pass on a CUDA machine."""

from __future__ import annotations

import argparse
import json

import pytest

from kernels.native import native_available
from search.benchmarks import kernel as bench

# the CPU tests pass --device cpu: on a CUDA machine the default would time Triton instead
NATIVE_CPU = native_available("cpu")


def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    return parser.parse_args(list(argv))


def test_small_cpu_bench_prints_and_writes_results(tmp_path, capsys) -> None:
    args = _parse(
        "--small", "--device", "cpu", "--cases", "decoder", "--warmup", "0", "--iters", "1",
        "--out", str(tmp_path) + "/",
    )  # fmt: skip
    assert bench.main(args) == 0
    printed = capsys.readouterr().out
    assert "Triton needs CUDA" in printed and "GB/s" in printed
    assert ("compiled operator (torch-ms-deform-attn 0.1.1)" in printed) == NATIVE_CPU
    files = list(tmp_path.glob("kernel_*.json"))
    assert len(files) == 1
    data = json.loads(files[0].read_text())
    assert data["device"].startswith("cpu") and data["tokens"] == 1360 and data["levels"][0] == [32, 32]
    seen = {(r["level"], r["path"], r["phase"]) for r in data["results"]}
    paths = ["torch", "native"] if NATIVE_CPU else ["torch"]
    assert seen == {
        (level, path, phase) for level in ("msda", "module") for path in paths for phase in ("fwd", "fwd+bwd")
    }
    for r in data["results"]:
        assert r["ms"] > 0 and r["case"] == "decoder"
        if r["level"] == "msda":
            assert r["gbs"] == pytest.approx(r["bytes"] / r["ms"] / 1e6)
    # the compiled operator against grid_sample, where installed; nothing else on the CPU
    assert {(r["level"], r["path"]) for r in data["ratios"]} == (
        {("msda", "native"), ("module", "native")} if NATIVE_CPU else set()
    )
    assert data["native_operator"] == ("torch-ms-deform-attn 0.1.1" if NATIVE_CPU else None)


def test_no_file_without_out_and_bad_flags(tmp_path, monkeypatch) -> None:
    import torch

    from models.errors import UserError

    monkeypatch.chdir(tmp_path)
    fast = (
        "--small",
        "--device",
        "cpu",
        "--cases",
        "decoder",
        "--levels",
        "msda",
        "--no-backward",
        "--warmup",
        "0",
        "--iters",
        "1",
    )
    assert bench.main(_parse(*fast)) == 0
    assert list(tmp_path.iterdir()) == []
    out_dir, out_file = tmp_path / "benchmarks", tmp_path / "r.json"
    assert bench.main(_parse(*fast, "--out", str(out_dir))) == 0  # no suffix: a directory
    assert len(list(out_dir.glob("kernel_cpu*.json"))) == 1
    assert bench.main(_parse(*fast, "--out", str(out_file))) == 0
    assert json.loads(out_file.read_text())["results"][0]["phase"] == "fwd"
    with pytest.raises(UserError, match="--cases"):
        bench.main(_parse("--cases", "pixel"))
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="--gpu-check: no CUDA device"):
            bench.main(_parse("--gpu-check"))


def test_compulsory_bytes_at_the_mask_dino_encoder_shape() -> None:
    # value 2*21760*8*32 fp32 = 44.6 MB, locations 2*21760*8*16*2 = 44.6 MB, weights 22.3 MB, out 44.6 MB
    assert bench._msda_bytes(2, 21760, 21760, 8, 32, 16, 4, backward=False) == 4 * (
        2 * 21760 * 256 + 2 * 21760 * 256 + 2 * 21760 * 128 + 2 * 21760 * 256
    )


def test_triton_rows_and_ratios_through_the_interpreter(triton_device) -> None:
    # the CUDA-only branches of the benchmark (Triton functional, unfused and fused module paths),
    # exercised at a tiny shape on whatever runs Triton here
    import torch

    opts = {"warmup": 0, "iters": 1, "no_backward": False}
    levels = [(4, 4), (2, 2)]
    rows = bench._bench_msda("decoder", 1, 6, levels, torch.float32, triton_device, opts, triton=True)
    rows += bench._bench_module("decoder", 1, 6, levels, triton_device, opts, triton=True)
    native = {("msda", "native"), ("module", "native")} if native_available(triton_device.type) else set()
    assert {(r["level"], r["path"]) for r in rows} == {
        ("msda", "torch"),
        ("msda", "triton"),
        ("module", "torch"),
        ("module", "triton_unfused"),
        ("module", "triton_fused"),
    } | native
    ratios = bench._ratios(rows)
    assert len(ratios) == 2 * (3 + len(native))  # (triton, unfused, fused[, native x 2]) x (fwd, fwd+bwd)
    for r in ratios:
        assert r["speedup_vs_torch"] > 0


def test_gpu_check_flag_runs_the_gpu_check(monkeypatch, tmp_path) -> None:
    import torch

    from kernels import gpu_check

    calls: list[list[str]] = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(gpu_check, "main", lambda argv: calls.append(argv) or 0)
    assert bench.main(_parse("--gpu-check", "--budget-s", "200", "--out", str(tmp_path))) == 0
    assert calls == [["--out", str(tmp_path), "--budget-s", "200.0"]]
    assert bench.main(_parse("--gpu-check")) == 0
    assert calls[-1][:2] == ["--out", str(gpu_check.ROOT / "kernels" / "benchmarks")]
