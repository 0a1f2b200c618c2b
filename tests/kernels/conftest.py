"""Kernel tests: the Triton interpreter on the CPU, compiled Triton on a CUDA machine.

Why ``TRITON_INTERPRET`` is set here, at import time: ``@triton.jit`` decides when it decorates a
function whether it is compiled for a GPU or run by the interpreter, reading the variable at that
moment -- for Triton's own helpers (``tl.sum``, ``tl.cdiv``) when ``triton.language`` is first
imported, for our kernels when ``kernels.triton_msda`` is first imported. So it must be set before
anything imports triton. pytest imports this conftest while collecting ``tests/kernels/``, before
any test runs, and nothing collected before it imports triton (``import torch`` and ``import
kernels`` do not; checked for the whole suite's collection); tests that import triton at run time
(tests/test_foundation.py) come later. Should triton nevertheless be imported earlier, the
``triton_device`` fixture fails saying so (the remedy: set the variable in tests/conftest.py)
instead of letting the kernels fail obscurely. Without a GPU, Triton can only run through the
interpreter, so the variable changes nothing for other tests (torch's CPU inductor does not use
Triton). On a CUDA machine it is not set and the same tests run compiled kernels on CUDA tensors.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from typing import Any

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


@pytest.fixture(scope="session")
def triton_device() -> torch.device:
    """Where the Triton kernels run in this session: CUDA when present, else the CPU interpreter."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    import kernels.triton_msda as mod

    if not mod.triton_language_interpreted():
        pytest.fail("triton was imported before tests/kernels/conftest.py set TRITON_INTERPRET=1")
    if not mod.interpreted():  # built for the GPU by an earlier import in this process: rebuild
        importlib.reload(mod)
    assert mod.interpreted(), "the Triton kernels could not be built for the interpreter"
    return torch.device("cpu")


def _make_case(
    n: int = 1,
    lq: int = 5,
    m: int = 2,
    d: int = 8,
    shapes: list[tuple[int, int]] | None = None,
    p: int = 2,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
    margin: int = 2,
    seed: int = 0,
) -> dict[str, Any]:
    """Random MSDA inputs.

    Sampling points lie up to ``margin`` pixels outside each level's map, and their pixel
    coordinates (``loc * size - 0.5``) stay at least 0.02 from an integer: the location gradient of
    bilinear sampling jumps at integer pixel coordinates, where two correct implementations that
    round differently by one ulp may legitimately disagree.
    """
    gen = torch.Generator().manual_seed(seed)
    shapes = shapes or [(3, 4), (2, 2)]
    spatial = torch.tensor(shapes, dtype=torch.long)
    sizes = spatial[:, 0] * spatial[:, 1]
    lsi = torch.cat([sizes.new_zeros(1), sizes.cumsum(0)[:-1]])
    s, levels = int(sizes.sum()), len(shapes)
    value = torch.randn(n, s, m, d, generator=gen)
    wh = spatial.flip(-1).to(torch.float64)  # (L, 2) as (W, H), matching the (x, y) order
    cells = torch.floor(
        torch.rand(n, lq, m, levels, p, 2, generator=gen, dtype=torch.float64) * (wh[:, None, :] + 2 * margin)
    )
    frac = torch.rand(n, lq, m, levels, p, 2, generator=gen, dtype=torch.float64) * 0.96 + 0.02
    locs = (cells - margin + frac + 0.5) / wh[:, None, :]
    weights = torch.rand(n, lq, m, levels, p, generator=gen)
    weights = weights / weights.sum((-1, -2), keepdim=True)
    return {
        "value": value.to(device=device, dtype=dtype),
        "spatial_shapes": spatial.to(device),
        "level_start_index": lsi.to(device),
        "sampling_locations": locs.to(device=device, dtype=dtype),
        "attention_weights": weights.to(device=device, dtype=dtype),
    }


@pytest.fixture
def make_case() -> Callable[..., dict[str, Any]]:
    """Factory of random MSDA inputs (see ``_make_case``)."""
    return _make_case
