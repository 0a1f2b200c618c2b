"""Small building blocks shared by the Mask DINO and SEEM models.

- :class:`MLP` -- the DETR-style multi-layer perceptron (``layers.i`` keys, ReLU between layers).
- :class:`AdapterSite` -- where PEFT adapters plug into an attention block without adding
  state_dict keys while empty (see the team contract, "Adapter sites").
- :class:`PositionEmbeddingSine` -- the normalised 2-d sine position embedding of DETR/Mask2Former.
- :func:`sine_embed_for_boxes` -- DINO's sine embedding of reference points / boxes.
- :func:`inverse_sigmoid` -- the clamped logit used for box refinement.
- :func:`register_fpn_level` -- one FPN level of the pixel decoders (GroupNorm 1x1 lateral, 3x3 output).
- :class:`DropPath` / :class:`Mlp` -- stochastic depth and the GELU MLP of the transformer
  backbones (Swin, FocalNet; keys ``fc1``/``fc2``).
"""

from __future__ import annotations

import math

import fvcore.nn.weight_init as weight_init
import torch
import torch.nn.functional as F
from detectron2.layers import Conv2d
from torch import nn

__all__ = [
    "MLP",
    "AdapterSite",
    "PositionEmbeddingSine",
    "sine_embed_for_boxes",
    "inverse_sigmoid",
    "DropPath",
    "Mlp",
    "register_fpn_level",
]


class MLP(nn.Module):
    """``num_layers`` Linear layers with ReLU in between (none after the last).

    Input (..., input_dim) -> output (..., output_dim). Keys ``layers.{i}.weight/bias``.
    """

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int, num_layers: int) -> None:
        super().__init__()
        self.num_layers = num_layers
        dims_in = [input_dim] + [hidden_dim] * (num_layers - 1)
        dims_out = [hidden_dim] * (num_layers - 1) + [output_dim]
        self.layers = nn.ModuleList(nn.Linear(i, o) for i, o in zip(dims_in, dims_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < self.num_layers - 1:
                x = F.relu(x)
        return x


class AdapterSite(nn.Module):
    """An attachment point for PEFT adapters right after an attention block.

    Transformer layers call ``out = site(attn_output, attn_input)`` before the residual add and
    norm (``src = norm(src + dropout(out))``). ``attn_input`` is the block input that the residual
    connection adds back (``src`` / ``tgt``, without position embedding), ``attn_output`` the
    attention's output; both have the same shape (..., d).

    Empty (``len(self.adapters) == 0``): returns ``attn_output`` itself (the same tensor object) and
    owns no parameters, so base state_dict keys never change.

    With adapters ``a_1 .. a_R`` (each maps (..., d) -> a delta of shape (..., d); see
    ``models.peft.adapter.layer.BottleneckAdapter``), ``residual`` picks what the first adapter reads:

    - ``"kappa"``: ``h_0 = attn_input`` (the attention's input),
    - ``"lambda"``: ``h_0 = attn_output`` (its output),
    - ``"kappa+lambda"``: ``h_0 = attn_input + attn_output``.

    Repetitions are stacked sequentially, ``h_i = h_{i-1} + a_i(h_{i-1})``, and the site returns
    ``attn_output + sum_i a_i(h_{i-1})``: only the adapters' deltas are added, never the layer
    input a second time, so the layer computes ``norm(src + attn + deltas)``. An adapter with a
    zero-initialised up-projection returns exact zeros, so inserting adapters leaves the model's
    output bit-for-bit unchanged at initialisation.
    """

    RESIDUALS = ("kappa", "lambda", "kappa+lambda")

    def __init__(self, residual: str = "kappa+lambda") -> None:
        super().__init__()
        self.adapters = nn.ModuleList()
        self.residual = residual

    def forward(self, attn_output: torch.Tensor, attn_input: torch.Tensor) -> torch.Tensor:
        if len(self.adapters) == 0:
            return attn_output
        if self.residual == "kappa":
            h = attn_input
        elif self.residual == "lambda":
            h = attn_output
        elif self.residual == "kappa+lambda":
            h = attn_input + attn_output
        else:
            raise ValueError(f"AdapterSite.residual must be one of {self.RESIDUALS}, got {self.residual!r}")
        if h.shape != attn_output.shape:
            raise ValueError(f"adapter input {tuple(h.shape)} != attention output {tuple(attn_output.shape)}")
        total: torch.Tensor | None = None
        for adapter in self.adapters:
            delta = adapter(h)
            h = h + delta
            total = delta if total is None else total + delta
        assert total is not None
        return attn_output + total

    def extra_repr(self) -> str:
        return f"residual={self.residual!r}"


class PositionEmbeddingSine(nn.Module):
    """Normalised sine embedding of pixel positions (DETR / Mask2Former convention).

    forward(x (N, C, H, W)) -> (N, 2 * num_pos_feats, H, W); channel order (y features, x features).
    Only the shape of ``x`` is used (no padding masks: Mask DINO runs without them).
    """

    def __init__(self, num_pos_feats: int = 128, temperature: float = 10000.0) -> None:
        super().__init__()
        self.num_pos_feats = num_pos_feats
        self.temperature = temperature
        self.scale = 2 * math.pi

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        eps = 1e-6
        y_embed = torch.arange(1, h + 1, dtype=torch.float32, device=x.device)[:, None].expand(h, w)
        x_embed = torch.arange(1, w + 1, dtype=torch.float32, device=x.device)[None, :].expand(h, w)
        y_embed = y_embed / (h + eps) * self.scale
        x_embed = x_embed / (w + eps) * self.scale
        dim_t = torch.arange(self.num_pos_feats, dtype=torch.float32, device=x.device)
        dim_t = self.temperature ** (2 * torch.div(dim_t, 2, rounding_mode="floor") / self.num_pos_feats)
        pos_x = _interleave_sin_cos(x_embed[:, :, None] / dim_t)
        pos_y = _interleave_sin_cos(y_embed[:, :, None] / dim_t)
        pos = torch.cat((pos_y, pos_x), dim=2).permute(2, 0, 1)
        return pos[None].expand(n, -1, -1, -1)


def _interleave_sin_cos(t: torch.Tensor) -> torch.Tensor:
    """(..., F) -> (..., F): sin of even, cos of odd features, interleaved as in DETR."""
    return torch.stack((t[..., 0::2].sin(), t[..., 1::2].cos()), dim=-1).flatten(-2)


def sine_embed_for_boxes(boxes: torch.Tensor, d_model: int) -> torch.Tensor:
    """DINO's sine embedding of reference boxes.

    boxes (..., 2 | 4) in [0, 1] as (cx, cy[, w, h]) -> (..., d_model) for 2-d or (..., 2 * d_model)
    for 4-d; feature order (y, x[, w, h]), each d_model // 2 wide.
    """
    half = d_model // 2
    dim_t = torch.arange(half, dtype=torch.float32, device=boxes.device)
    dim_t = 10000 ** (2 * torch.div(dim_t, 2, rounding_mode="floor") / half)
    scale = 2 * math.pi

    def embed(coord: torch.Tensor) -> torch.Tensor:
        return _interleave_sin_cos((coord * scale)[..., None] / dim_t)

    parts = [embed(boxes[..., 1]), embed(boxes[..., 0])]
    if boxes.shape[-1] == 4:
        parts += [embed(boxes[..., 2]), embed(boxes[..., 3])]
    elif boxes.shape[-1] != 2:
        raise ValueError(f"boxes last dim must be 2 or 4, got {boxes.shape[-1]}")
    return torch.cat(parts, dim=-1)


def inverse_sigmoid(x: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """logit(x) with x clamped to [0, 1] and both x and 1 - x clamped to >= eps."""
    x = x.clamp(min=0, max=1)
    return torch.log(x.clamp(min=eps) / (1 - x).clamp(min=eps))


class DropPath(nn.Module):
    """Stochastic depth: zero whole samples of the residual branch with probability ``p`` in training."""

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
        return x * mask / keep


class Mlp(nn.Module):
    """fc1 -> GELU -> fc2 on (..., dim)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


def register_fpn_level(
    owner: nn.Module, level: int, in_channels: int | None, conv_dim: int, gn_groups: int
) -> tuple[Conv2d | None, Conv2d]:
    """Build one FPN level of a Mask2Former-style pixel decoder and register it on ``owner`` under
    the upstream names ``adapter_{level}`` (lateral) and ``layer_{level}`` (output); returns both.

    lateral: 1x1 conv ``in_channels -> conv_dim`` without bias + GroupNorm (None when
    ``in_channels`` is None: a level that needs no lateral); output: 3x3 conv + GroupNorm + ReLU.
    Both are c2-Xavier initialised after both are built (the upstream order of random draws).
    """
    lateral = (
        Conv2d(in_channels, conv_dim, 1, bias=False, norm=nn.GroupNorm(gn_groups, conv_dim))
        if in_channels is not None
        else None
    )
    output = Conv2d(
        conv_dim,
        conv_dim,
        3,
        padding=1,
        bias=False,
        norm=nn.GroupNorm(gn_groups, conv_dim),
        activation=F.relu,
    )
    if lateral is not None:
        weight_init.c2_xavier_fill(lateral)
        owner.add_module(f"adapter_{level}", lateral)
    weight_init.c2_xavier_fill(output)
    owner.add_module(f"layer_{level}", output)
    return lateral, output
