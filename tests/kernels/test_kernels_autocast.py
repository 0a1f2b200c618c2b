"""MSDA under autocast (bf16 training): the kernels sample bf16 values with fp32 accumulation, the
sampling locations and the softmax stay fp32, and Mask DINO's pixel decoder and decoder layers no
longer force the whole attention to fp32. Run with CPU autocast (the Triton interpreter) here and
CUDA autocast on a GPU machine."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch
from torch import nn

import kernels.triton_ops as ops
from kernels import LoRALinear, MSDeformAttn


def _module(seed: int = 0) -> MSDeformAttn:
    torch.manual_seed(seed)
    mod = MSDeformAttn(d_model=32, n_levels=2, n_heads=2, n_points=3)
    with torch.no_grad():
        for prm in mod.parameters():
            prm.add_(torch.randn_like(prm) * 0.3)
    mod.sampling_offsets = LoRALinear.wrap(mod.sampling_offsets, rank=4, alpha=4.0)
    mod.value_proj = LoRALinear.wrap(mod.value_proj, rank=4, alpha=4.0)
    for sub in (mod.sampling_offsets, mod.value_proj):
        nn.init.normal_(sub.lora_B, std=0.3)
    return mod


def _inputs(device: torch.device, seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    shapes = torch.tensor([[5, 4], [3, 2]])
    return {
        "query": torch.randn(2, 9, 32, generator=gen).to(device),
        "reference_points": torch.rand(2, 9, 2, 2, generator=gen).to(device),
        "input_flatten": torch.randn(2, 26, 32, generator=gen).to(device),
        "input_spatial_shapes": shapes.to(device),
        "input_level_start_index": torch.tensor([0, 20]).to(device),
    }


def _spy(monkeypatch: pytest.MonkeyPatch, name: str) -> list[dict[str, Any]]:
    """Record the dtypes the kernel entry point ``name`` of kernels.triton_ops receives."""
    seen: list[dict[str, Any]] = []
    real = getattr(ops, name)

    def spy(value: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        tensors = [a for a in args if isinstance(a, torch.Tensor) and a.is_floating_point()]
        seen.append({"value": value.dtype, "floats": [t.dtype for t in tensors], **kwargs})
        return real(value, *args, **kwargs)

    monkeypatch.setattr(ops, name, spy)
    return seen


@pytest.mark.parametrize("fused", [True, False])
def test_triton_path_samples_bf16_values_under_autocast(triton_device, monkeypatch, fused) -> None:
    mod = _module().to(triton_device)
    mod.backend = "triton"
    if not fused:  # an adapter the kernel cannot fuse: the module writes fp32 locations itself
        monkeypatch.setattr("kernels.msda.fused_lora_terms", lambda module, x: None)
        monkeypatch.setattr("kernels.msda.is_plain_linear", lambda module: False)
    x = _inputs(triton_device)
    with torch.no_grad():
        expected = copy.deepcopy(mod)(**x)  # fp32
    seen = _spy(monkeypatch, "ms_deform_attn_fused_triton" if fused else "ms_deform_attn_triton")
    for k in ("query", "input_flatten"):
        x[k].requires_grad_(True)
    with torch.autocast(triton_device.type, dtype=torch.bfloat16):
        out = mod(**x)
    assert len(seen) == 1 and seen[0]["value"] == torch.bfloat16 and seen[0]["softmax"] is True
    if not fused:
        # (locations, logits): the locations fp32, the logits as the projection made them (bf16)
        assert seen[0]["floats"] == [torch.float32, torch.bfloat16]
    assert out.dtype == torch.bfloat16  # output_proj under autocast
    err = (out.float() - expected).norm() / expected.norm()
    assert err < 3e-2, err.item()  # bf16 rounding of the projections and the value, nothing more
    out.float().sum().backward()
    for name in (
        "sampling_offsets.lora_A",
        "sampling_offsets.lora_B",
        "value_proj.lora_A",
        "value_proj.lora_B",
    ):
        grad = mod.get_parameter(name).grad
        assert grad is not None and grad.dtype == torch.float32 and torch.isfinite(grad).all(), name
    assert x["query"].grad is not None and torch.isfinite(x["query"].grad).all()


@pytest.mark.parametrize("backend", ["torch", "native"])
def test_reference_paths_sample_in_fp32_under_autocast(monkeypatch, backend) -> None:
    from kernels import msda, native

    if backend == "native" and not native.native_available("cpu"):
        pytest.skip("torch-ms-deform-attn is not installed")
    seen: list[tuple[torch.dtype, ...]] = []
    name = "ms_deform_attn_torch" if backend == "torch" else "ms_deform_attn_native"
    real = getattr(msda, name)

    def spy(value, shapes, starts, locations, weights):
        seen.append((value.dtype, locations.dtype, weights.dtype))
        return real(value, shapes, starts, locations, weights)

    monkeypatch.setattr(msda, name, spy)
    mod = _module()
    mod.backend = backend  # type: ignore[assignment]
    x = _inputs(torch.device("cpu"))
    with torch.no_grad():
        expected = mod(**x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = mod(**x)
    assert seen[-1] == (torch.float32, torch.float32, torch.float32)
    assert out.dtype == torch.bfloat16
    assert (out.float() - expected).norm() / expected.norm() < 3e-2


def test_mask_dino_pixel_decoder_and_decoder_run_msda_under_the_callers_autocast(triton_device, monkeypatch):
    # upstream forced the pixel decoder and the decoder layers to fp32 ("deformable detr does not
    # support half precision"); now the MSDA inside them sees autocast and samples bf16 values
    pytest.importorskip("detectron2")
    from detectron2.layers import ShapeSpec

    from models.maskdino.decoder import DeformableDecoderLayer
    from models.maskdino.pixel_decoder import MaskDINOPixelDecoder

    torch.manual_seed(0)
    strides = {"res2": (8, 4), "res3": (16, 8), "res4": (32, 16), "res5": (64, 32)}
    pixel = MaskDINOPixelDecoder(
        {k: ShapeSpec(channels=c, stride=st) for k, (c, st) in strides.items()},
        in_features=tuple(strides),
        transformer_in_features=("res3", "res4", "res5"),
        total_num_feature_levels=4,
        conv_dim=32,
        mask_dim=32,
        nheads=2,
        enc_layers=1,
        dim_feedforward=64,
        dropout=0.0,
        n_points=2,
        common_stride=4,
        gn_groups=8,
    ).to(triton_device)
    dec = DeformableDecoderLayer(32, 64, 0.0, 4, 2, 2).to(triton_device).eval()
    for sub in [*pixel.modules(), dec.cross_attn]:
        if isinstance(sub, MSDeformAttn):
            sub.backend = "triton"
    features = {
        k: torch.randn(1, c, 64 // st, 64 // st, device=triton_device) for k, (c, st) in strides.items()
    }
    seen = _spy(monkeypatch, "ms_deform_attn_fused_triton")
    with torch.autocast(triton_device.type, dtype=torch.bfloat16):
        _, levels = pixel(features)
        shapes = torch.tensor([lv.shape[-2:] for lv in levels], device=triton_device)
        sizes = shapes.prod(1)
        starts = torch.cat([sizes.new_zeros(1), sizes.cumsum(0)[:-1]])
        memory = torch.cat([lv.flatten(2).transpose(1, 2) for lv in levels], 1)
        boxes = torch.rand(1, 5, 4, 4, device=triton_device) * 0.5 + 0.25
        tgt = torch.randn(1, 5, 32, device=triton_device)
        out = dec(tgt, torch.zeros_like(tgt), boxes, memory, shapes, starts)
    assert [s["value"] for s in seen] == [torch.bfloat16, torch.bfloat16]  # encoder layer, decoder layer
    assert torch.isfinite(out.float()).all()


def test_without_autocast_the_reference_path_keeps_fp64(monkeypatch) -> None:
    # the fp32 rules are for autocast only: an fp64 module must stay fp64 end to end (gradcheck
    # fails on any silent fp32 rounding of the locations or the softmax)
    from kernels import msda

    monkeypatch.setattr(msda, "native_available", lambda device_type="cpu": False)  # grid_sample
    torch.manual_seed(0)
    mod = MSDeformAttn(d_model=8, n_levels=2, n_heads=2, n_points=2).double()
    with torch.no_grad():
        for prm in mod.parameters():
            prm.add_(torch.randn_like(prm) * 0.3)
    gen = torch.Generator().manual_seed(1)
    query = torch.randn(1, 3, 8, generator=gen, dtype=torch.float64, requires_grad=True)
    ref = (torch.rand(1, 3, 2, 2, generator=gen, dtype=torch.float64) * 0.6 + 0.2).requires_grad_(True)
    src = torch.randn(1, 6, 8, generator=gen, dtype=torch.float64, requires_grad=True)
    shapes, starts = torch.tensor([[2, 2], [1, 2]]), torch.tensor([0, 4])
    out = mod(query, ref, src, shapes, starts)
    assert out.dtype == torch.float64
    assert torch.autograd.gradcheck(lambda q, r, x: mod(q, r, x, shapes, starts), (query, ref, src))
