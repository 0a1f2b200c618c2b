"""Swin Transformer as a detectron2 ``Backbone`` (the layout of Mask2Former's D2SwinTransformer).

Key names follow the official checkpoints: ``patch_embed.proj/norm``, ``layers.{i}.blocks.{j}.
{norm1, attn.{relative_position_bias_table, relative_position_index, qkv, proj}, norm2,
mlp.{fc1, fc2}}``, ``layers.{i}.downsample.{reduction, norm}``, output norms ``norm{i}``.
Outputs ``res2..res5`` (strides 4..32, channels embed_dim * 2**i), each (N, C_i, H_i, W_i).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from models.backbones.common import HierarchicalBackbone, PatchProjection
from models.layers import DropPath, Mlp

__all__ = ["SwinTransformer", "build_swin_large"]


def window_partition(x: torch.Tensor, ws: int) -> torch.Tensor:
    """(B, H, W, C) with H, W multiples of ws -> (B * nW, ws, ws, C)."""
    b, h, w, c = x.shape
    x = x.view(b, h // ws, ws, w // ws, ws, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, ws, ws, c)


def window_reverse(windows: torch.Tensor, ws: int, h: int, w: int) -> torch.Tensor:
    """(B * nW, ws, ws, C) -> (B, H, W, C); inverse of :func:`window_partition`."""
    b = windows.shape[0] // ((h // ws) * (w // ws))
    x = windows.view(b, h // ws, w // ws, ws, ws, -1)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(b, h, w, -1)


class WindowAttention(nn.Module):
    """Multi-head self-attention inside ws x ws windows with a learned relative position bias."""

    relative_position_index: torch.Tensor

    def __init__(self, dim: int, window_size: int, num_heads: int) -> None:
        super().__init__()
        self.dim, self.window_size, self.num_heads = dim, window_size, num_heads
        self.scale = (dim // num_heads) ** -0.5
        ws = window_size
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * ws - 1) * (2 * ws - 1), num_heads))
        coords = torch.stack(torch.meshgrid(torch.arange(ws), torch.arange(ws), indexing="ij")).flatten(1)
        rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0)  # (ws*ws, ws*ws, 2)
        index = (rel[:, :, 0] + ws - 1) * (2 * ws - 1) + (rel[:, :, 1] + ws - 1)
        self.register_buffer("relative_position_index", index)
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.proj = nn.Linear(dim, dim)
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """x (B*nW, N, C), mask (nW, N, N) additive or None -> (B*nW, N, C)."""
        b_, n, c = x.shape
        qkv = self.qkv(x).reshape(b_, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0] * self.scale, qkv[1], qkv[2]
        attn = q @ k.transpose(-2, -1)
        bias = self.relative_position_bias_table[self.relative_position_index.reshape(-1)]
        attn = attn + bias.view(n, n, -1).permute(2, 0, 1)[None]
        if mask is not None:
            nw = mask.shape[0]
            attn = attn.view(b_ // nw, nw, self.num_heads, n, n) + mask[None, :, None]
            attn = attn.view(-1, self.num_heads, n, n)
        x = (attn.softmax(-1) @ v).transpose(1, 2).reshape(b_, n, c)
        return self.proj(x)


class SwinBlock(nn.Module):
    """(Shifted-)window attention block: x (B, H*W, C) -> (B, H*W, C)."""

    def __init__(self, dim: int, num_heads: int, window_size: int, shift_size: int, drop_path: float) -> None:
        super().__init__()
        self.window_size, self.shift_size = window_size, shift_size
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, window_size, num_heads)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, dim * 4)

    def forward(self, x: torch.Tensor, h: int, w: int, attn_mask: torch.Tensor) -> torch.Tensor:
        b, _, c = x.shape
        ws = self.window_size
        shortcut = x
        x = self.norm1(x).view(b, h, w, c)
        pad_r, pad_b = (ws - w % ws) % ws, (ws - h % ws) % ws
        x = F.pad(x, (0, 0, 0, pad_r, 0, pad_b))
        hp, wp = x.shape[1], x.shape[2]
        if self.shift_size > 0:
            x = torch.roll(x, shifts=(-self.shift_size, -self.shift_size), dims=(1, 2))
        windows = self.attn(
            window_partition(x, ws).view(-1, ws * ws, c), attn_mask if self.shift_size else None
        )
        x = window_reverse(windows.view(-1, ws, ws, c), ws, hp, wp)
        if self.shift_size > 0:
            x = torch.roll(x, shifts=(self.shift_size, self.shift_size), dims=(1, 2))
        x = x[:, :h, :w, :].reshape(b, h * w, c)
        x = shortcut + self.drop_path(x)
        return x + self.drop_path(self.mlp(self.norm2(x)))


class PatchMerging(nn.Module):
    """2x2 neighbourhood concat + LayerNorm + Linear(4C -> 2C).

    (B, H*W, C) -> (B, ceil(H/2) * ceil(W/2), 2C).
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)
        self.norm = nn.LayerNorm(4 * dim)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        b, _, c = x.shape
        x = x.view(b, h, w, c)
        x = F.pad(x, (0, 0, 0, w % 2, 0, h % 2))
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], -1)
        return self.reduction(self.norm(x.view(b, -1, 4 * c)))


class SwinStage(nn.Module):
    """``depth`` blocks alternating plain / shifted windows, then optional patch merging."""

    def __init__(
        self,
        dim: int,
        depth: int,
        num_heads: int,
        window_size: int,
        drop_path: Sequence[float],
        downsample: bool,
    ) -> None:
        super().__init__()
        self.window_size, self.shift_size = window_size, window_size // 2
        self.blocks = nn.ModuleList(
            SwinBlock(dim, num_heads, window_size, 0 if i % 2 == 0 else window_size // 2, drop_path[i])
            for i in range(depth)
        )
        self.downsample = PatchMerging(dim) if downsample else None

    def _attn_mask(self, h: int, w: int, device: torch.device) -> torch.Tensor:
        """Additive mask (nW, ws*ws, ws*ws): -100 between tokens from different pre-shift regions."""
        ws, s = self.window_size, self.shift_size
        hp, wp = -(-h // ws) * ws, -(-w // ws) * ws
        img = torch.zeros((1, hp, wp, 1), device=device)
        cnt = 0
        for hs in (slice(0, -ws), slice(-ws, -s), slice(-s, None)):
            for wsl in (slice(0, -ws), slice(-ws, -s), slice(-s, None)):
                img[:, hs, wsl, :] = cnt
                cnt += 1
        mw = window_partition(img, ws).view(-1, ws * ws)
        diff = mw[:, None, :] - mw[:, :, None]
        return diff.masked_fill(diff != 0, -100.0).masked_fill(diff == 0, 0.0)

    def forward(self, x: torch.Tensor, h: int, w: int) -> tuple[torch.Tensor, torch.Tensor, int, int]:
        """Returns (stage output before merging, merged tokens, merged H, merged W)."""
        mask = self._attn_mask(h, w, x.device)
        for blk in self.blocks:
            x = blk(x, h, w, mask)
        if self.downsample is None:
            return x, x, h, w
        return x, self.downsample(x, h, w), (h + 1) // 2, (w + 1) // 2


class PatchEmbed(PatchProjection):
    """Non-overlapping patch projection: (B, 3, H, W) -> (B, C, ceil(H/p), ceil(W/p)) (+ LayerNorm)."""

    def __init__(self, patch_size: int, embed_dim: int, patch_norm: bool = True) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(3, embed_dim, kernel_size=patch_size, stride=patch_size)
        self.norm = nn.LayerNorm(embed_dim) if patch_norm else None


class SwinTransformer(HierarchicalBackbone):
    """Swin Transformer backbone with detectron2 output conventions (``res2..res5``)."""

    def __init__(
        self,
        embed_dim: int = 192,
        depths: Sequence[int] = (2, 2, 18, 2),
        num_heads: Sequence[int] = (6, 12, 24, 48),
        window_size: int = 12,
        drop_path_rate: float = 0.3,
        patch_size: int = 4,
        patch_norm: bool = True,
    ) -> None:
        super().__init__()
        self.patch_embed = PatchEmbed(patch_size, embed_dim, patch_norm)
        dpr = torch.linspace(0, drop_path_rate, sum(depths), device="cpu").tolist()
        features = [embed_dim * 2**i for i in range(len(depths))]
        self.layers = nn.ModuleList()
        for i, depth in enumerate(depths):
            start = sum(depths[:i])
            self.layers.append(
                SwinStage(
                    features[i],
                    depth,
                    num_heads[i],
                    window_size,
                    dpr[start : start + depth],
                    downsample=i < len(depths) - 1,
                )
            )
        self.finish_init(embed_dim, len(depths), patch_size)


def build_swin_large() -> SwinTransformer:
    """Swin-L (window 12, 384 pre-training) as in Mask DINO's Swin-L config."""
    return SwinTransformer(
        embed_dim=192, depths=(2, 2, 18, 2), num_heads=(6, 12, 24, 48), window_size=12, drop_path_rate=0.3
    )
