"""Compile the MSDA kernels ahead of time for an H100 (sm_90) with the launch configs the GPU uses.

Run without TRITON_INTERPRET (a subprocess of test_kernels_triton.py): Triton lowers to PTX and
runs its bundled ptxas without needing a GPU or a driver, so compile errors that the interpreter
cannot see (layouts, tl.dot shapes, types) fail here. Prints one JSON line per kernel variant with
ptxas' register and spill counts.
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
from kernels.triton_ops import _launch_config  # noqa: E402

TARGET = GPUTarget("cuda", 90, 32)
PTXAS = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "ptxas"


def _ptxas_info(ptx: str) -> dict[str, int]:
    if not PTXAS.exists():
        return {}
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
    return {
        "registers": int(regs.group(1)) if regs else -1,
        "spill_bytes": int(spills.group(1)) if spills else -1,
    }


def _fwd(dt: str, lq: int, levels: int, points: int, d: int, fused: bool, lora: bool, box: bool) -> dict:
    cfg = _launch_config(lq, levels * points, d, "fused" if fused else "fwd", interpret=False)
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
        "IDX64": False,
        "BLOCK_Q": cfg["BLOCK_Q"],
        "BLOCK_J": cfg["BLOCK_J"],
        "BLOCK_D": cfg["BLOCK_D"],
        "BLOCK_C": 64,
        "BLOCK_R": 16,
    }
    sig.update(dict.fromkeys(const, "constexpr"))
    compiled = triton.compile(
        ASTSource(k.msda_fwd_kernel, sig, const), target=TARGET, options={"num_warps": cfg["num_warps"]}
    )
    return {
        "kernel": "fwd",
        "dtype": dt,
        "fused": fused,
        "lora": lora,
        "box": box,
        "L": levels,
        "P": points,
        **cfg,
        **_ptxas_info(compiled.asm["ptx"]),
    }


def _bwd(dt: str, lq: int, levels: int, points: int, d: int, idx64: bool = False) -> dict:
    cfg = _launch_config(lq, levels * points, d, "bwd", interpret=False)
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
    }
    const = {
        "M": 8,
        "D": d,
        "L": levels,
        "P": points,
        "IDX64": idx64,
        "BLOCK_Q": cfg["BLOCK_Q"],
        "BLOCK_J": cfg["BLOCK_J"],
        "BLOCK_D": cfg["BLOCK_D"],
    }
    sig.update(dict.fromkeys(const, "constexpr"))
    compiled = triton.compile(
        ASTSource(k.msda_bwd_kernel, sig, const), target=TARGET, options={"num_warps": cfg["num_warps"]}
    )
    return {
        "kernel": "bwd",
        "dtype": dt,
        "idx64": idx64,
        "L": levels,
        "P": points,
        **cfg,
        **_ptxas_info(compiled.asm["ptx"]),
    }


def main() -> int:
    assert not k.interpreted(), "run without TRITON_INTERPRET"
    lq = 21760  # Mask DINO R50 encoder at 1024x1024
    variants = [
        lambda: _fwd("fp32", lq, 4, 4, 32, fused=False, lora=False, box=False),
        lambda: _fwd("bf16", lq, 4, 4, 32, fused=False, lora=False, box=False),
        lambda: _fwd("fp16", 300, 5, 8, 24, fused=False, lora=False, box=False),
        lambda: _fwd("fp32", lq, 4, 4, 32, fused=True, lora=True, box=False),
        lambda: _fwd("fp32", 300, 4, 4, 32, fused=True, lora=False, box=True),
        lambda: _bwd("fp32", lq, 4, 4, 32),
        lambda: _bwd("bf16", lq, 4, 4, 32, idx64=True),
        lambda: _bwd("fp16", 300, 5, 8, 24),
    ]
    for make in variants:
        print(json.dumps(make()), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
