"""What the hierarchical transformer backbones (Swin, FocalNet) share.

- :class:`PatchProjection`: pad to a multiple of ``patch_size``, project with ``self.proj``
  (a Conv2d the subclass builds), LayerNorm over channels with ``self.norm`` (or None). Keys
  ``proj``/``norm`` as in the official checkpoints.
- :class:`HierarchicalBackbone`: a detectron2 ``Backbone`` made of ``patch_embed``, ``layers``
  (stages called as ``stage(x (B, H*W, C), H, W) -> (stage output, next tokens, next H, next W)``)
  and one output LayerNorm ``norm{i}`` per stage. The subclass builds ``patch_embed`` and
  ``layers`` and then calls :meth:`HierarchicalBackbone.finish_init`; outputs are ``res2..res5``
  (strides ``patch_size * 2**i``, channels ``embed_dim * 2**i``), each (N, C_i, H_i, W_i).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from detectron2.modeling import Backbone, ShapeSpec
from torch import nn

__all__ = ["PatchProjection", "HierarchicalBackbone"]


class PatchProjection(nn.Module):
    """(B, C_in, H, W) -> (B, C_out, H', W'); the subclass sets ``patch_size``, ``proj``, ``norm``."""

    patch_size: int
    proj: nn.Conv2d
    norm: nn.LayerNorm | None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.patch_size
        x = F.pad(x, (0, (p - x.shape[3] % p) % p, 0, (p - x.shape[2] % p) % p))
        x = self.proj(x)
        if self.norm is not None:
            n, c, h, w = x.shape
            x = self.norm(x.flatten(2).transpose(1, 2)).transpose(1, 2).reshape(n, c, h, w)
        return x


class HierarchicalBackbone(Backbone):
    """Patch embedding + stages + per-stage output norms; see the module docstring."""

    patch_embed: nn.Module
    layers: nn.ModuleList
    num_features: list[int]

    def finish_init(self, embed_dim: int, num_stages: int, patch_size: int) -> None:
        """Output norms, detectron2 output metadata and the truncated-normal weight init."""
        self.num_features = [embed_dim * 2**i for i in range(num_stages)]
        for i, nf in enumerate(self.num_features):
            self.add_module(f"norm{i}", nn.LayerNorm(nf))
        self._out_features = [f"res{i + 2}" for i in range(num_stages)]
        self._out_feature_channels = {f"res{i + 2}": nf for i, nf in enumerate(self.num_features)}
        self._out_feature_strides = {f"res{i + 2}": patch_size * 2**i for i in range(num_stages)}
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.constant_(m.bias, 0)
        elif isinstance(m, nn.LayerNorm):
            nn.init.constant_(m.bias, 0)
            nn.init.constant_(m.weight, 1.0)

    @property
    def size_divisibility(self) -> int:
        return 32

    def output_shape(self) -> dict[str, ShapeSpec]:
        return {
            k: ShapeSpec(channels=self._out_feature_channels[k], stride=self._out_feature_strides[k])
            for k in self._out_features
        }

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """x (N, 3, H, W) -> {"res2": (N, C, H/4, W/4), ..., "res5": (N, 8C, H/32, W/32)}."""
        x = self.patch_embed(x)
        h, w = x.shape[2], x.shape[3]
        x = x.flatten(2).transpose(1, 2)
        outs: dict[str, torch.Tensor] = {}
        for i, stage in enumerate(self.layers):
            x_out, x, h_next, w_next = stage(x, h, w)
            y = getattr(self, f"norm{i}")(x_out)
            outs[f"res{i + 2}"] = y.view(-1, h, w, self.num_features[i]).permute(0, 3, 1, 2).contiguous()
            h, w = h_next, w_next
        return outs
