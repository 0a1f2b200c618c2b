"""Regenerate ``tests/select/data/source_backbone.safetensors`` (not a test).

The shift-ordering test needs a backbone that has *learned* the pretraining domain: a randomly
initialised one measures colour statistics and orders the synthetic domains differently for
every seed. Pretraining in the test would take minutes, so the test reads the backbone of a
``models.pretrain`` run on ``source`` (1500 iterations, batch 2, 400 images; held-out AP 22.3)
stored here (fp16, backbone keys only, ~0.6 MB).

    .venv/bin/python tests/select/make_backbone_fixture.py [--iterations 1500]   # ~15 min on 1 core
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

FIXTURE = Path(__file__).with_name("data") / "source_backbone.safetensors"


def convert(base_pt: Path, summary: dict[str, object], out: Path = FIXTURE) -> None:
    """Backbone tensors of a ``models.pretrain`` checkpoint -> fp16 safetensors with provenance."""
    import torch
    from safetensors.torch import save_file

    from models.checkpoint import read_state_dict

    state = read_state_dict(base_pt)
    backbone = {k[len("backbone.") :]: v.to(torch.float16).contiguous() for k, v in state.items()
                if k.startswith("backbone.")}  # fmt: skip
    cfg = dict(summary["config"])  # type: ignore[call-overload]
    meta = {"model": str(cfg["model"]), "domain": str(cfg["domain"]), "iterations": str(cfg["iterations"]),
            "heldout_ap": f"{summary['eval']['ap']:.2f}", "config": json.dumps(cfg)}  # type: ignore[index]  # fmt: skip
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file(backbone, str(out), metadata=meta)
    print(f"wrote {out} ({len(backbone)} tensors, held-out AP {meta['heldout_ap']})")


def main() -> None:
    import torch

    from models.pretrain import PretrainConfig, pretrain

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--iterations", type=int, default=1500)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cfg = PretrainConfig(
        iterations=args.iterations, batch_size=2, num_train_images=400, num_eval_images=8, device="cpu",
        log_every=50,
    )  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        summary = pretrain(tmp, cfg)
        convert(Path(tmp) / "base.pt", summary)


if __name__ == "__main__":
    main()
