"""MSDA dispatch and the deformable-attention module.

Backends: ``torch`` (grid_sample reference, any device), ``native`` (the compiled Deformable-DETR
operator of ``torch-ms-deform-attn``, where installed: :mod:`kernels.native`), ``triton`` (the
kernels of :mod:`kernels.triton_msda`: CUDA tensors, or CPU tensors under the Triton interpreter),
``auto`` (Triton for CUDA tensors, else ``native`` where it is built for the device, else
``torch``). Triton is only imported when it is about to be used.

Mixed precision (``MSDeformAttn`` under autocast, as bf16 training on CUDA runs it): the value and
the attention logits come out of their projections in bf16 and the Triton kernels sample bf16
values with fp32 accumulation; what decides *where* to sample stays fp32 -- the sampling offsets
and locations (a bf16 location at x = 0.9 is off by up to 1/512, a quarter pixel at 128 px) and
the softmax. The grid_sample and native paths sample in fp32.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import nn

from kernels.lora import fused_lora_terms, is_plain_linear
from kernels.native import ms_deform_attn_native, native_available
from kernels.reference import ms_deform_attn_torch, sampling_locations_torch

__all__ = ["Backend", "MSDeformAttn", "ms_deform_attn", "resolve_backend"]

Backend = Literal["auto", "torch", "native", "triton"]


def resolve_backend(backend: str, device: torch.device, channels_per_head: int = 8) -> str:
    """``"torch"``, ``"native"`` or ``"triton"`` for tensors on ``device``; raises for an unusable
    explicit choice.

    ``auto`` picks Triton for CUDA tensors whose channels per head are a multiple of 8 (the kernels'
    requirement), else the compiled operator where it is built for the device (on the CPU it is
    3-7x faster than grid_sample on the op), else the grid_sample path.
    """
    if backend not in ("auto", "torch", "native", "triton"):
        raise ValueError(f"backend must be 'auto', 'torch', 'native' or 'triton', got {backend!r}")
    if backend == "auto":
        if device.type == "cuda" and channels_per_head % 8 == 0:
            return "triton"
        return "native" if native_available(device.type) else "torch"
    if backend == "triton":
        from kernels.triton_ops import check_triton_usable

        check_triton_usable(device)
    if backend == "native" and not native_available(device.type):
        raise RuntimeError(
            f"backend='native' needs torch-ms-deform-attn built for {device.type}: "
            "run `bash kernels/fetch_reference_sdist.sh --build`"
        )
    return backend


def ms_deform_attn(
    value: torch.Tensor,
    spatial_shapes: torch.Tensor,
    level_start_index: torch.Tensor,
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
    backend: Backend = "auto",
) -> torch.Tensor:
    """MSDA with Deformable-DETR semantics; see :func:`kernels.reference.ms_deform_attn_torch`.

    Differentiable w.r.t. value, sampling_locations and attention_weights on every backend.
    ``auto`` runs Triton on CUDA tensors and the compiled operator (or grid_sample) on the CPU;
    ``triton`` on CPU tensors needs ``TRITON_INTERPRET=1`` set before the first Triton use in the
    process (RuntimeError otherwise). The Triton path needs D (channels per head) to be a multiple
    of 8. The level metadata is checked against the value length before a kernel reads through it.
    """
    resolved = resolve_backend(backend, value.device, value.shape[-1])
    if resolved == "triton":
        from kernels.triton_ops import ms_deform_attn_triton

        return ms_deform_attn_triton(
            value, spatial_shapes, level_start_index, sampling_locations, attention_weights
        )
    if resolved == "native":
        return ms_deform_attn_native(
            value, spatial_shapes, level_start_index, sampling_locations, attention_weights
        )
    return ms_deform_attn_torch(
        value, spatial_shapes, level_start_index, sampling_locations, attention_weights
    )


class MSDeformAttn(nn.Module):
    """Multi-scale deformable attention module (Deformable DETR), parameter names as upstream.

    Submodules (their names are the official state_dict keys): ``sampling_offsets``,
    ``attention_weights``, ``value_proj``, ``output_proj``. Any of them may be replaced by a
    :class:`kernels.LoRALinear` (same keys plus ``lora_A``/``lora_B``) or a peft layer.

    Triton path (``backend`` resolves to ``triton``): the sampling offsets -- including an unmerged
    LoRA term of ``sampling_offsets`` -- and the sampling locations are computed inside the sampling
    kernel, so the (N, Lq, M, L, P, 2) offsets/locations are not materialised in the forward; a
    merged LoRALinear or a plain Linear runs the same kernel without the LoRA term; an adapter the
    kernel cannot fuse (DoRA, LoHa, IA3, ...) computes the offsets itself and only the sampling runs
    in Triton (:func:`kernels.lora.fused_lora_terms`, :func:`kernels.lora.is_plain_linear`). Torch path: the
    unfused composition (projection, locations, grid_sample). Both give the same numbers.
    """

    def __init__(
        self,
        d_model: int = 256,
        n_levels: int = 4,
        n_heads: int = 8,
        n_points: int = 4,
        backend: Backend = "auto",
    ) -> None:
        super().__init__()
        if d_model % n_heads != 0:
            raise ValueError(f"d_model ({d_model}) must be divisible by n_heads ({n_heads})")
        self.d_model, self.n_levels, self.n_heads, self.n_points = d_model, n_levels, n_heads, n_points
        self.backend: Backend = backend
        self.sampling_offsets = nn.Linear(d_model, n_heads * n_levels * n_points * 2)
        self.attention_weights = nn.Linear(d_model, n_heads * n_levels * n_points)
        self.value_proj = nn.Linear(d_model, d_model)
        self.output_proj = nn.Linear(d_model, d_model)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.constant_(self.sampling_offsets.weight, 0.0)
        thetas = torch.arange(self.n_heads, dtype=torch.float32) * (2.0 * math.pi / self.n_heads)
        grid = torch.stack([thetas.cos(), thetas.sin()], -1)
        grid = (grid / grid.abs().max(-1, keepdim=True)[0]).view(self.n_heads, 1, 1, 2)
        grid = grid.repeat(1, self.n_levels, self.n_points, 1)
        for i in range(self.n_points):
            grid[:, :, i, :] *= i + 1
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(grid.view(-1))
        nn.init.constant_(self.attention_weights.weight, 0.0)
        nn.init.constant_(self.attention_weights.bias, 0.0)
        nn.init.xavier_uniform_(self.value_proj.weight)
        nn.init.constant_(self.value_proj.bias, 0.0)
        nn.init.xavier_uniform_(self.output_proj.weight)
        nn.init.constant_(self.output_proj.bias, 0.0)

    def forward(
        self,
        query: torch.Tensor,
        reference_points: torch.Tensor,
        input_flatten: torch.Tensor,
        input_spatial_shapes: torch.Tensor,
        input_level_start_index: torch.Tensor,
        input_padding_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Args:
        query: (N, Lq, C); reference_points: (N, Lq, L, 2) in [0, 1] or (N, Lq, L, 4) boxes (cx, cy, w, h);
        input_flatten: (N, S, C); input_spatial_shapes: (L, 2) (H, W); input_level_start_index: (L,);
        input_padding_mask: (N, S), True where padded.
        Returns (N, Lq, C).
        """
        n, lq, _ = query.shape
        _, s, _ = input_flatten.shape
        m, lv, p = self.n_heads, self.n_levels, self.n_points
        if reference_points.shape[-1] not in (2, 4):
            raise ValueError(f"reference_points last dim must be 2 or 4, got {reference_points.shape[-1]}")
        device_type = query.device.type
        amp = torch.is_autocast_enabled(device_type)
        # value_proj: a LoRALinear composes x W^T + b + s (dropout(x) A^T) B^T with the low-rank
        # product accumulated in place into the base GEMM's output (kernels.lora.lora_linear).
        # Under autocast the value (and the logits below) come out in bf16.
        value = self.value_proj(input_flatten)
        if input_padding_mask is not None:
            value = value.masked_fill(input_padding_mask[..., None], 0.0)
        value = value.view(n, s, m, self.d_model // m)
        logits = self.attention_weights(query).view(n, lq, m, lv, p)
        if reference_points.dtype in (torch.float16, torch.bfloat16):
            reference_points = reference_points.float()  # where to sample: never in half precision
        backend = resolve_backend(self.backend, query.device, self.d_model // m)
        if backend == "triton":
            # the LoRA factors of the offsets in fp32 under autocast: they move sampling locations
            with torch.autocast(device_type, enabled=False):
                terms = fused_lora_terms(self.sampling_offsets, query.float() if amp else query)
            if terms is not None or is_plain_linear(self.sampling_offsets):
                # offsets, locations and the softmax of the logits all inside the kernel, in fp32
                out = self._fused_sampling(
                    query,
                    reference_points,
                    value,
                    input_spatial_shapes,
                    input_level_start_index,
                    logits,
                    terms,
                )
            else:
                # an adapter on sampling_offsets the kernel cannot fuse (e.g. DoRA, LoHa): the
                # module computes the locations, the sampling and the softmax run in Triton
                from kernels.triton_ops import ms_deform_attn_triton

                locations = self._locations(query, reference_points, input_spatial_shapes, amp)
                out = ms_deform_attn_triton(
                    value, input_spatial_shapes, input_level_start_index, locations, logits, softmax=True
                )
        else:
            locations = self._locations(query, reference_points, input_spatial_shapes, amp)
            flat = logits.flatten(-2)
            half = flat.dtype in (torch.float16, torch.bfloat16)
            weights = (flat.float() if half else flat).softmax(-1).view(n, lq, m, lv, p)
            if amp:
                # grid_sample and the compiled operator sample in fp32 (the operator computes half
                # precision in fp32 anyway); output_proj casts back under autocast
                value, weights = value.float(), weights.float()
            else:
                weights = weights.to(value.dtype)
            out = ms_deform_attn(
                value, input_spatial_shapes, input_level_start_index, locations, weights,
                backend="native" if backend == "native" else "torch",
            )  # fmt: skip
        return self.output_proj(out)

    def _locations(
        self, query: torch.Tensor, reference_points: torch.Tensor, spatial_shapes: torch.Tensor, amp: bool
    ) -> torch.Tensor:
        """Sampling locations (N, Lq, M, L, P, 2) from ``sampling_offsets(query)``; fp32 under autocast."""
        n, lq, _ = query.shape
        with torch.autocast(query.device.type, enabled=False):
            offsets = self.sampling_offsets(query.float() if amp else query)
        offsets = offsets.view(n, lq, self.n_heads, self.n_levels, self.n_points, 2)
        return sampling_locations_torch(reference_points, offsets, spatial_shapes, self.n_points)

    def _fused_sampling(
        self,
        query: torch.Tensor,
        reference_points: torch.Tensor,
        value: torch.Tensor,
        spatial_shapes: torch.Tensor,
        level_start_index: torch.Tensor,
        logits: torch.Tensor,
        terms: tuple[torch.Tensor, torch.Tensor, float] | None,
    ) -> torch.Tensor:
        """Triton path: sampling offsets (with an unmerged LoRA term), locations and the softmax of
        the attention ``logits`` computed in-kernel.

        ``terms``: :func:`kernels.lora.fused_lora_terms` of ``sampling_offsets`` (None: plain linear).
        """
        from kernels.triton_ops import ms_deform_attn_fused_triton

        proj = self.sampling_offsets
        lora_hidden = lora_b = None
        scaling = 1.0
        if terms is not None:
            lora_hidden, lora_b, scaling = terms
        return ms_deform_attn_fused_triton(
            value,
            spatial_shapes,
            level_start_index,
            query,
            proj.weight,
            proj.bias,
            reference_points,
            logits,
            lora_hidden=lora_hidden,
            lora_b=lora_b,
            scaling=scaling,
            softmax=True,
        )
