"""Training speed of LoRA through peft (now) against the project's own LoRA layer (before peft).

Issue 18 asks that moving LoRA onto the peft library keeps the CPU demo's speed. The pre-peft
LoRA code (``models/peft/lora/layer.py`` + ``model.py``, deleted by commit 1ebc2fd) is taken from
git (``git archive 1ebc2fd^``) into a temporary folder; every run is a fresh process whose
``PYTHONPATH`` picks one of the two trees, with the same virtual environment, the same shipped
base checkpoint and the demo's first trial (LoRA r8, alpha 8, targets msda + dec_self_qv, lr 1e-3,
batch 2, 128 px, clean domain, one thread). The trial code (models/trial, models/training) is the
same in both trees, so the difference is the LoRA layers alone.

For each seed the two trees run back to back, in alternating order (load that drifts during the
run hits both alike); the figure is the per-seed ratio of the training loop's CPU seconds per
iteration (one thread: what the code costs, far less sensitive to other processes than wall
time, which is reported beside it), peft over own, as mean and worst (largest) over seeds, next
to the final losses (the same training in both: close, not bit-equal, as the two layers draw
their init in a different order).

Usage (about 1 minute per run and tree at 40 iterations on a quiet 2-core machine):

    .venv/bin/python models/benchmarks/lora_train_speed.py --seeds 5 --iterations 40 \
        --out models/benchmarks/lora_train_speed_cpu.txt
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BEFORE_PEFT = "1ebc2fd^"  # the parent of "models.peft: LoRA through the peft library"
BASE = ROOT / "models" / "pretrained" / "maskdino_tiny_source" / "base.pt"

# One trial in a fresh process; prints one json line (the tree is whatever PYTHONPATH names first).
_CHILD = """
import json, sys, time
import models
import models.training as training
from models.trial import prepare_trial, TrialSpec
# CPU seconds of the training loop alone (the trial imports train_loop when it trains): with one
# thread, CPU time is what the code costs; wall time also holds the other processes' load.
loop = {}
_train_loop = training.train_loop
def _timed(*a, **k):
    c0, w0 = time.process_time(), time.perf_counter()
    try:
        return _train_loop(*a, **k)
    finally:
        loop["cpu"], loop["wall"] = time.process_time() - c0, time.perf_counter() - w0
training.train_loop = _timed
spec = TrialSpec(
    model="maskdino_tiny", domain="clean", method="lora",
    method_params={"rank": 8, "alpha": 8.0, "targets": ["msda", "dec_self_qv"]},
    base_checkpoint=sys.argv[1], iterations=int(sys.argv[2]), eval_every=0, batch_size=2,
    lr=1e-3, num_train_images=32, num_eval_images=8, seed=int(sys.argv[3]), device="cpu",
    latency_warmup=1, latency_runs=2, threads=1,
)
t = prepare_trial(spec)
rec = t.train_and_evaluate()
print(json.dumps({"tree": models.__file__, "status": rec.status, "error": rec.error,
                  "train_seconds": rec.train_seconds, "iterations": rec.iterations,
                  "loop_cpu": loop["cpu"], "loop_wall": loop["wall"],
                  "final_loss": rec.final_loss, "trainable_params": rec.trainable_params}))
"""


def _run(tree: Path, iterations: int, seed: int) -> dict:
    env = dict(os.environ, PYTHONPATH=str(tree), OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, str(BASE), str(iterations), str(seed)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tempfile.gettempdir(),
        check=False,
    )
    if proc.returncode != 0:
        raise SystemExit(f"run in {tree} failed:\n{proc.stderr[-3000:]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    if not out["tree"].startswith(str(tree)):
        raise SystemExit(f"imported {out['tree']}, not the tree {tree}")
    if out["status"] != "completed":
        raise SystemExit(f"trial in {tree}: {out['status']} {out['error']}")
    return out


def _extract(rev: str, folder: Path) -> Path:
    """The tree of git revision ``rev`` in ``folder`` (git archive: no checkout, no repository change)."""
    folder.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev], capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
    return folder


def _load() -> str:
    with open("/proc/loadavg") as fh:
        return " ".join(fh.read().split()[:3])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--iterations", type=int, default=40)
    ap.add_argument("--out", default=None, help="also write the table here")
    ap.add_argument(
        "--also",
        default=None,
        metavar="REV",
        help="also time the tree of this git revision (e.g. the peft code before a fix), same runs",
    )
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="peftsweep-before-peft-") as tmp:
        trees = {"peft": ROOT, "own": _extract(BEFORE_PEFT, Path(tmp) / "own")}
        if args.also:
            trees[f"peft@{args.also}"] = _extract(args.also, Path(tmp) / "also")
        rows = []
        loads = [_load()]
        for seed in range(args.seeds):
            names = list(trees)
            order = names if seed % 2 == 0 else names[::-1]  # alternate: drifting load hits all alike
            got = {name: _run(trees[name], args.iterations, seed) for name in order}
            loads.append(_load())
            cpu = {k: v["loop_cpu"] / v["iterations"] for k, v in got.items()}
            wall = {k: v["loop_wall"] / v["iterations"] for k, v in got.items()}
            rows.append(
                {
                    "seed": seed,
                    "peft_s_per_it": cpu["peft"],
                    "own_s_per_it": cpu["own"],
                    "ratio": cpu["peft"] / cpu["own"],
                    "wall_ratio": wall["peft"] / wall["own"],
                    "peft_loss": got["peft"]["final_loss"],
                    "own_loss": got["own"]["final_loss"],
                    "trainable": [got["peft"]["trainable_params"], got["own"]["trainable_params"]],
                }
            )
            if args.also:
                also = f"peft@{args.also}"
                rows[-1]["also_ratio"] = cpu[also] / cpu["own"]
                rows[-1]["also_s_per_it"] = cpu[also]
            print(json.dumps(rows[-1]), flush=True)
    ratios = [r["ratio"] for r in rows]
    lines = [
        "LoRA training speed: peft (FusedLoraLinear, now) vs the own LoRA layer (before peft, "
        f"git {BEFORE_PEFT})",
        f"trial: demo's first LoRA point (r8, alpha 8, msda + dec_self_qv), maskdino_tiny, 128 px, "
        f"batch 2, {args.iterations} iterations, 1 thread, shipped base",
        "s/it: CPU seconds of the training loop per iteration (one thread); wall: the same loop's wall "
        "time ratio, which also holds the machine's load",
        f"{'seed':>4} {'peft s/it':>10} {'own s/it':>10} {'peft/own':>9} {'wall p/o':>9} "
        f"{'peft loss':>10} {'own loss':>10}",
    ]
    for r in rows:
        lines.append(
            f"{r['seed']:>4} {r['peft_s_per_it']:>10.4f} {r['own_s_per_it']:>10.4f} {r['ratio']:>9.3f} "
            f"{r['wall_ratio']:>9.3f} {r['peft_loss']:>10.4f} {r['own_loss']:>10.4f}"
        )
    walls = [r["wall_ratio"] for r in rows]
    if args.also:
        others = [r["also_ratio"] for r in rows]
        lines.append(
            f"CPU ratio peft@{args.also}/own (same runs): "
            + " ".join(f"{x:.3f}" for x in others)
            + f"; mean {statistics.fmean(others):.3f}, worst {max(others):.3f}"
        )
    lines += [
        f"CPU ratio peft/own: mean {statistics.fmean(ratios):.3f}, worst {max(ratios):.3f}, "
        f"best {min(ratios):.3f} over {len(ratios)} seeds",
        f"wall ratio peft/own: mean {statistics.fmean(walls):.3f}, worst {max(walls):.3f}, "
        f"best {min(walls):.3f}",
        f"trainable parameters peft / own: {rows[0]['trainable'][0]} / {rows[0]['trainable'][1]}",
        f"load average (1/5/15 min) before and after each seed: {' | '.join(loads)}",
    ]
    text = "\n".join(lines)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
