"""FocalNet (focal modulation networks, Yang et al. 2022) as a detectron2 ``Backbone``.

The layout of the FocalNet detection/segmentation backbone used by X-Decoder and SEEM: a patch
embedding (a 7x7 stride-4 convolution with ``use_conv_embed``, else a 4x4 patchify), four stages of
focal-modulation blocks separated by patch embeddings (3x3 stride-2 convolution or 2x2 patchify,
channels doubled), and one LayerNorm per output stage.

Key names follow the official checkpoints: ``patch_embed.{proj,norm}``,
``layers.{i}.blocks.{j}.{norm1, modulation.{f, h, proj, focal_layers.{k}.0}, norm2, mlp.{fc1, fc2},
gamma_1, gamma_2}``, ``layers.{i}.downsample.{proj,norm}``, ``norm{i}``; the ``focal_dw`` variant
(SEEM's Focal-T) adds ``dw1``/``dw2`` depth-wise 3x3 convolutions per block.

Outputs ``res2..res5`` (strides 4..32, channels ``embed_dim * 2**i``), each (N, C_i, H_i, W_i).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from models.backbones.common import HierarchicalBackbone, PatchProjection
from models.layers import DropPath, Mlp

__all__ = [
    "FocalModulation",
    "FocalModulationBlock",
    "FocalNet",
    "FOCAL_BUILDERS",
    "build_focal_tiny",
    "build_focal_large",
    "build_focal_backbone",
]


class FocalModulation(nn.Module):
    """Focal modulation of (B, H, W, C) tokens.

    ``f`` projects each token to a query (C), a context (C) and ``focal_level + 1`` gates;
    ``focal_level`` depth-wise convolutions (kernel ``focal_factor * k + focal_window``, GELU)
    aggregate the context hierarchically, a global average adds the last level; the gated sum,
    mixed by the 1x1 convolution ``h``, multiplies the query; ``proj`` maps back.
    ``normalize_modulator`` divides the aggregate by ``focal_level + 1`` (SCALING_MODULATOR).
    """

    def __init__(
        self,
        dim: int,
        focal_window: int = 3,
        focal_level: int = 2,
        focal_factor: int = 2,
        proj_drop: float = 0.0,
        use_postln_in_modulation: bool = False,
        normalize_modulator: bool = False,
    ) -> None:
        super().__init__()
        self.dim = dim
        self.focal_level = focal_level
        self.normalize_modulator = normalize_modulator
        self.f = nn.Linear(dim, 2 * dim + focal_level + 1, bias=True)
        self.h = nn.Conv2d(dim, dim, kernel_size=1, bias=True)
        self.act = nn.GELU()
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        self.focal_layers = nn.ModuleList()
        for k in range(focal_level):
            ks = focal_factor * k + focal_window
            self.focal_layers.append(
                nn.Sequential(
                    nn.Conv2d(dim, dim, kernel_size=ks, groups=dim, padding=ks // 2, bias=False), nn.GELU()
                )
            )
        self.ln = nn.LayerNorm(dim) if use_postln_in_modulation else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, H, W, C) -> (B, H, W, C)."""
        c = x.shape[-1]
        x = self.f(x).permute(0, 3, 1, 2)
        q, ctx, gates = torch.split(x, [c, c, self.focal_level + 1], 1)
        ctx_all: torch.Tensor = torch.zeros_like(ctx)
        for level, layer in enumerate(self.focal_layers):
            ctx = layer(ctx)
            ctx_all = ctx_all + ctx * gates[:, level : level + 1]
        ctx_global = self.act(ctx.mean((2, 3), keepdim=True))
        ctx_all = ctx_all + ctx_global * gates[:, self.focal_level :]
        if self.normalize_modulator:
            ctx_all = ctx_all / (self.focal_level + 1)
        out = (q * self.h(ctx_all)).permute(0, 2, 3, 1)
        if self.ln is not None:
            out = self.ln(out)
        return self.proj_drop(self.proj(out))


class FocalModulationBlock(nn.Module):
    """Pre-norm (or post-norm with ``use_postln``) block: focal modulation + MLP, optional layer
    scale (``gamma_1``/``gamma_2``). ``use_dw_conv`` selects X-Decoder's ``focal_dw`` block:
    depth-wise 3x3 residual convolutions (``dw1``/``dw2``) before each half, and post-LN applied
    after the residual sums instead of to the branch outputs.
    forward(x (B, H*W, C), H, W) -> (B, H*W, C)."""

    def __init__(
        self,
        dim: int,
        mlp_ratio: float = 4.0,
        drop_path: float = 0.0,
        focal_level: int = 2,
        focal_window: int = 3,
        use_postln: bool = False,
        use_postln_in_modulation: bool = False,
        normalize_modulator: bool = False,
        use_layerscale: bool = False,
        layerscale_value: float = 1e-4,
        use_dw_conv: bool = False,
    ) -> None:
        super().__init__()
        self.use_postln = use_postln
        self.dw1 = nn.Conv2d(dim, dim, 3, padding=1, groups=dim) if use_dw_conv else None
        self.norm1 = nn.LayerNorm(dim)
        self.modulation = FocalModulation(
            dim,
            focal_window,
            focal_level,
            use_postln_in_modulation=use_postln_in_modulation,
            normalize_modulator=normalize_modulator,
        )
        self.drop_path = DropPath(drop_path)
        self.dw2 = nn.Conv2d(dim, dim, 3, padding=1, groups=dim) if use_dw_conv else None
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.gamma_1: nn.Parameter | None = None
        self.gamma_2: nn.Parameter | None = None
        if use_layerscale:
            self.gamma_1 = nn.Parameter(layerscale_value * torch.ones(dim))
            self.gamma_2 = nn.Parameter(layerscale_value * torch.ones(dim))

    @staticmethod
    def _dw(conv: nn.Conv2d, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        b, _, c = x.shape
        x2 = x.transpose(1, 2).reshape(b, c, h, w)
        return x + conv(x2).flatten(2).transpose(1, 2)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        b, _, c = x.shape

        def scale(y: torch.Tensor, gamma: nn.Parameter | None) -> torch.Tensor:
            return y if gamma is None else gamma * y

        if self.dw1 is None:
            # FocalNet: with post-LN the norms wrap the branch outputs, before the residual sums
            y = x if self.use_postln else self.norm1(x)
            y = self.modulation(y.view(b, h, w, c)).view(b, h * w, c)
            if self.use_postln:
                y = self.norm1(y)
            x = x + self.drop_path(scale(y, self.gamma_1))
            y = self.norm2(self.mlp(x)) if self.use_postln else self.mlp(self.norm2(x))
            return x + self.drop_path(scale(y, self.gamma_2))
        # focal_dw: depth-wise residual convolutions; with post-LN the norms follow the residual sums
        assert self.dw2 is not None
        x = self._dw(self.dw1, x, h, w)
        y = x if self.use_postln else self.norm1(x)
        y = self.modulation(y.view(b, h, w, c)).view(b, h * w, c)
        x = x + self.drop_path(scale(y, self.gamma_1))
        if self.use_postln:
            x = self.norm1(x)
        x = self._dw(self.dw2, x, h, w)
        if self.use_postln:
            return self.norm2(x + self.drop_path(scale(self.mlp(x), self.gamma_2)))
        return x + self.drop_path(scale(self.mlp(self.norm2(x)), self.gamma_2))


class PatchEmbed(PatchProjection):
    """(B, C_in, H, W) -> (B, C_out, H', W') (+ LayerNorm over channels).

    ``use_conv_embed``: overlapping convolution (stem: 7x7 stride 4 padding ``stem_padding``, 2 in
    FocalNet, 3 in ``focal_dw``; later: 3x3 stride 2 padding 1); otherwise a ``patch_size``
    patchify. Inputs are zero-padded to a multiple of ``patch_size`` first.
    """

    def __init__(
        self,
        patch_size: int,
        in_chans: int,
        embed_dim: int,
        norm: bool,
        use_conv_embed: bool,
        is_stem: bool,
        stem_padding: int = 2,
    ) -> None:
        super().__init__()
        self.patch_size = patch_size
        if use_conv_embed:
            k, s, p = (7, 4, stem_padding) if is_stem else (3, 2, 1)
            self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=k, stride=s, padding=p)
        else:
            self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)
        self.norm = nn.LayerNorm(embed_dim) if norm else None


class FocalStage(nn.Module):
    """``depth`` blocks, then an optional downsampling patch embedding (channels doubled)."""

    def __init__(
        self,
        dim: int,
        depth: int,
        drop_path: Sequence[float],
        downsample: bool,
        use_conv_embed: bool,
        patch_norm: bool,
        **block_kwargs: object,
    ) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            FocalModulationBlock(dim, drop_path=drop_path[i], **block_kwargs)  # type: ignore[arg-type]
            for i in range(depth)
        )
        self.downsample = (
            PatchEmbed(2, dim, 2 * dim, patch_norm, use_conv_embed, is_stem=False) if downsample else None
        )

    def forward(self, x: torch.Tensor, h: int, w: int) -> tuple[torch.Tensor, torch.Tensor, int, int]:
        """x (B, H*W, C) -> (stage output, next-stage tokens, next H, next W)."""
        for blk in self.blocks:
            x = blk(x, h, w)
        if self.downsample is None:
            return x, x, h, w
        b, _, c = x.shape
        down = self.downsample(x.transpose(1, 2).reshape(b, c, h, w))
        return x, down.flatten(2).transpose(1, 2), down.shape[2], down.shape[3]


class FocalNet(HierarchicalBackbone):
    """FocalNet backbone with detectron2 output conventions (``res2..res5``)."""

    def __init__(
        self,
        embed_dim: int = 96,
        depths: Sequence[int] = (2, 2, 6, 2),
        focal_levels: Sequence[int] = (2, 2, 2, 2),
        focal_windows: Sequence[int] = (3, 3, 3, 3),
        mlp_ratio: float = 4.0,
        drop_path_rate: float = 0.3,
        patch_size: int = 4,
        patch_norm: bool = True,
        use_conv_embed: bool = False,
        use_postln: bool = False,
        use_postln_in_modulation: bool = False,
        normalize_modulator: bool = False,
        use_layerscale: bool = False,
        use_dw_conv: bool = False,
    ) -> None:
        super().__init__()
        n = len(depths)
        if not (len(focal_levels) == len(focal_windows) == n):
            raise ValueError("focal_levels and focal_windows need one entry per stage")
        self.patch_embed = PatchEmbed(
            patch_size,
            3,
            embed_dim,
            patch_norm,
            use_conv_embed,
            is_stem=True,
            stem_padding=3 if use_dw_conv else 2,
        )
        dpr = torch.linspace(0, drop_path_rate, sum(depths), device="cpu").tolist()
        features = [embed_dim * 2**i for i in range(n)]
        self.layers = nn.ModuleList()
        for i, depth in enumerate(depths):
            start = sum(depths[:i])
            self.layers.append(
                FocalStage(
                    features[i],
                    depth,
                    dpr[start : start + depth],
                    downsample=i < n - 1,
                    use_conv_embed=use_conv_embed,
                    patch_norm=patch_norm,
                    mlp_ratio=mlp_ratio,
                    focal_level=focal_levels[i],
                    focal_window=focal_windows[i],
                    use_postln=use_postln,
                    use_postln_in_modulation=use_postln_in_modulation,
                    normalize_modulator=normalize_modulator,
                    use_layerscale=use_layerscale,
                    use_dw_conv=use_dw_conv,
                )
            )
        self.finish_init(embed_dim, n, patch_size)


# what SEEM's Focal-T and Focal-L configs share: window 3, conv embedding, scaled modulator,
# post-LN, layer scale, drop path 0.3
_SEEM_FOCAL_COMMON: dict[str, object] = dict(
    focal_windows=(3, 3, 3, 3),
    drop_path_rate=0.3,
    use_conv_embed=True,
    normalize_modulator=True,
    use_postln=True,
    use_layerscale=True,
)


def build_focal_tiny(**overrides: object) -> FocalNet:
    """SEEM's Focal-T (``focalt_unicl_lang``: ``focal_dw``, embed 96, depths 2-2-6-2, focal level 3,
    window 3, conv embedding, scaled modulator, post-LN, layer scale, drop path 0.3)."""
    kwargs = {
        **_SEEM_FOCAL_COMMON,
        "embed_dim": 96,
        "depths": (2, 2, 6, 2),
        "focal_levels": (3, 3, 3, 3),
        "use_dw_conv": True,
        **overrides,
    }
    return FocalNet(**kwargs)  # type: ignore[arg-type]


def build_focal_large(**overrides: object) -> FocalNet:
    """SEEM's Focal-L (``focall_unicl_lang``: embed 192, depths 2-2-18-2, focal level 4, window 3,
    conv embedding, scaled modulator, post-LN, layer scale, drop path 0.3)."""
    kwargs = {
        **_SEEM_FOCAL_COMMON,
        "embed_dim": 192,
        "depths": (2, 2, 18, 2),
        "focal_levels": (4, 4, 4, 4),
        **overrides,
    }
    return FocalNet(**kwargs)  # type: ignore[arg-type]


FOCAL_BUILDERS = {"focal_tiny": build_focal_tiny, "focal_large": build_focal_large, "focal": FocalNet}


def build_focal_backbone(name: str, **kwargs: object) -> FocalNet:
    """``focal_tiny`` / ``focal_large`` (paper configs, kwargs override fields) or ``focal``
    (plain :class:`FocalNet` kwargs, e.g. a narrow CPU-sized network). The same names are in
    :data:`models.backbones.BACKBONES`."""
    return FOCAL_BUILDERS[name](**kwargs)  # type: ignore[operator,no-any-return]
