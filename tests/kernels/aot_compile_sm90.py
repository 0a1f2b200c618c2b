"""Compile the MSDA kernels ahead of time for an H100/H200 (sm_90) with the launch configs the GPU uses.

Run without TRITON_INTERPRET (a subprocess of test_kernels_triton.py): Triton lowers to PTX and
runs its bundled ptxas without needing a GPU or a driver, so compile errors that the interpreter
cannot see (layouts, tl.dot shapes, types) fail here. Pointer arguments are compiled as the JIT
compiles them for real tensors (16-byte aligned), so the PTX shows what a GPU would run: ptxas'
registers and spills, and how many value loads are 16-byte vectors (``ld.global.v4``).
Prints one JSON line per kernel variant; ``--candidates`` adds every autotuning candidate of the
Mask DINO encoder shape (fp32).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import kernels.triton_msda as k  # noqa: E402
from kernels.triton_ops import _launch_config, _tune_candidates  # noqa: E402

TARGET = GPUTarget("cuda", 90, 32)
PTXAS = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "ptxas"
ENCODER_LQ = 21760  # Mask DINO R50 encoder at 1024x1024


def _ptx_info(ptx: str) -> dict[str, int]:
    info = {
        "vector_loads": len(re.findall(r"ld\.global(?:\.\w+)*\.v[248]\.", ptx)),
        "scalar_loads": len(re.findall(r"ld\.global(?:\.\w+)*\.(?:b|f|u|s)(?:16|32)\s", ptx)),
    }
    if not PTXAS.exists():
        return info
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "k.ptx")
        Path(path).write_text(ptx)
        res = subprocess.run(
            [str(PTXAS), "-v", "--gpu-name=sm_90a", path, "-o", os.devnull],
            capture_output=True,
            text=True,
            check=True,
        )
    regs = re.search(r"Used (\d+) registers", res.stderr)
    spills = re.search(r"(\d+) bytes spill stores", res.stderr)
    info["registers"] = int(regs.group(1)) if regs else -1
    info["spill_bytes"] = int(spills.group(1)) if spills else -1
    return info


def _compile(kernel: object, sig: dict[str, str], const: dict[str, object], num_warps: int) -> str:
    sig = {**sig, **dict.fromkeys(const, "constexpr")}
    # what the JIT specialises for real tensors: 16-byte aligned pointers
    attrs = {(i,): [["tt.divisibility", 16]] for i, t in enumerate(sig.values()) if t.startswith("*")}
    compiled = triton.compile(
        ASTSource(kernel, sig, const, attrs), target=TARGET, options={"num_warps": num_warps}
    )
    return compiled.asm["ptx"]


def _fwd(
    dt: str,
    lq: int,
    levels: int,
    points: int,
    d: int,
    fused: bool,
    lora: bool,
    box: bool,
    softmax: bool,
    cfg: dict[str, int] | None = None,
) -> dict:
    kind = "fused" if fused else "fwd"
    cfg = cfg or _launch_config(lq, levels * points, d, kind, interpret=False)
    sig = {
        "value_ptr": f"*{dt}",
        "shapes_ptr": "*i64",
        "lsi_ptr": "*i64",
        "attw_ptr": f"*{dt}",
        "out_ptr": f"*{dt}",
        "loc_ptr": f"*{dt}",
        "q_ptr": "*fp32",
        "woff_ptr": "*fp32",
        "boff_ptr": "*fp32",
        "t_ptr": "*fp32",
        "lorab_ptr": "*fp32",
        "ref_ptr": "*fp32",
        "scaling": "fp32",
        "Lq": "i32",
        "S": "i32",
        "C": "i32",
        "R": "i32",
        "LQ_KEY": "i32",
    }
    const = {
        "M": 8,
        "D": d,
        "L": levels,
        "P": points,
        "FUSED": fused,
        "HAS_BIAS": fused,
        "HAS_LORA": lora,
        "REF_BOX": box,
        "SOFTMAX": softmax,
        "IDX64": False,
        "BLOCK_Q": cfg["BLOCK_Q"],
        "BLOCK_J": cfg["BLOCK_J"],
        "BLOCK_D": cfg["BLOCK_D"],
        "BLOCK_C": 64,
        "BLOCK_R": 16,
    }
    ptx = _compile(k.msda_fwd_kernel, sig, const, cfg["num_warps"])
    return {
        "kernel": kind,
        "dtype": dt,
        "lora": lora,
        "box": box,
        "softmax": softmax,
        "L": levels,
        "P": points,
        "D": d,
        **cfg,
        **_ptx_info(ptx),
    }


def _bwd(
    dt: str,
    lq: int,
    levels: int,
    points: int,
    d: int,
    softmax: bool,
    need_gv: bool,
    idx64: bool = False,
    cfg: dict[str, int] | None = None,
) -> dict:
    cfg = cfg or _launch_config(lq, levels * points, d, "bwd", interpret=False)
    sig = {
        "value_ptr": f"*{dt}",
        "shapes_ptr": "*i64",
        "lsi_ptr": "*i64",
        "loc_ptr": f"*{dt}",
        "attw_ptr": f"*{dt}",
        "gout_ptr": f"*{dt}",
        "gvalue_ptr": "*fp32",
        "gloc_ptr": "*fp32",
        "gattw_ptr": "*fp32",
        "Lq": "i32",
        "S": "i32",
        "LQ_KEY": "i32",
    }
    const = {
        "M": 8,
        "D": d,
        "L": levels,
        "P": points,
        "SOFTMAX": softmax,
        "NEED_GV": need_gv,
        "IDX64": idx64,
        "BLOCK_Q": cfg["BLOCK_Q"],
        "BLOCK_J": cfg["BLOCK_J"],
        "BLOCK_D": cfg["BLOCK_D"],
    }
    ptx = _compile(k.msda_bwd_kernel, sig, const, cfg["num_warps"])
    return {
        "kernel": "bwd",
        "dtype": dt,
        "softmax": softmax,
        "need_gv": need_gv,
        "idx64": idx64,
        "L": levels,
        "P": points,
        "D": d,
        **cfg,
        **_ptx_info(ptx),
        "vector_atomics": len(re.findall(r"(?:red|atom)\.global(?:\.\w+)*\.v[248]\.", ptx)),
        "atomics": len(re.findall(r"(?:red|atom)\.global", ptx)),
    }


def _candidates() -> list:
    """Every autotuning candidate at the Mask DINO encoder shape (L=4, P=4, D=32), fp32."""
    out = []
    for kind in ("fwd", "fused", "bwd"):
        for block_q, warps in _tune_candidates(kind, 16, 32):
            cfg = {"BLOCK_Q": block_q, "BLOCK_J": 16, "BLOCK_D": 32, "num_warps": warps}
            if kind == "bwd":
                out.append(
                    lambda cfg=cfg: {
                        **_bwd("fp32", ENCODER_LQ, 4, 4, 32, True, True, cfg=cfg),
                        "candidate": True,
                    }
                )
            else:
                fused = kind == "fused"
                out.append(
                    lambda cfg=cfg, fused=fused: {
                        **_fwd("fp32", ENCODER_LQ, 4, 4, 32, fused, fused, False, True, cfg=cfg),
                        "candidate": True,
                    }
                )
    return out


def main() -> int:
    assert not k.interpreted(), "run without TRITON_INTERPRET"
    lq = ENCODER_LQ
    variants = [
        lambda: _fwd("fp32", lq, 4, 4, 32, fused=False, lora=False, box=False, softmax=False),
        lambda: _fwd("bf16", lq, 4, 4, 32, fused=False, lora=False, box=False, softmax=True),
        lambda: _fwd("fp16", 300, 5, 8, 24, fused=False, lora=False, box=False, softmax=False),
        lambda: _fwd("fp32", lq, 4, 4, 32, fused=True, lora=True, box=False, softmax=True),
        lambda: _fwd("bf16", 300, 4, 4, 32, fused=True, lora=False, box=True, softmax=True),
        lambda: _bwd("fp32", lq, 4, 4, 32, softmax=True, need_gv=True),
        lambda: _bwd("fp32", lq, 4, 4, 32, softmax=False, need_gv=False),
        lambda: _bwd("bf16", lq, 4, 4, 32, softmax=True, need_gv=True, idx64=True),
        lambda: _bwd("fp16", 300, 5, 8, 24, softmax=False, need_gv=True),
    ]
    if "--candidates" in sys.argv[1:]:
        variants += _candidates()
    for make in variants:
        print(json.dumps(make()), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
