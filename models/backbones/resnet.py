"""ResNet backbones built from detectron2's ResNet classes (FrozenBN, official key names).

- :func:`build_resnet50` -- the torchvision-style ResNet-50 of Mask DINO (``STRIDE_IN_1X1: False``,
  ``FREEZE_AT: 0``, FrozenBN): keys ``stem.conv1.*``, ``res2.0.conv1.*`` ... as in detectron2.
- :func:`build_tiny_resnet` -- a narrow 4-stage ResNet (one BasicBlock per stage) for CPU tests.

Both return a detectron2 ``Backbone`` producing ``res2..res5`` at strides 4, 8, 16, 32.
"""

from __future__ import annotations

from collections.abc import Sequence

from detectron2.modeling.backbone.resnet import BasicBlock, BasicStem, ResNet

__all__ = ["build_resnet50", "build_tiny_resnet"]

_OUT_FEATURES = ["res2", "res3", "res4", "res5"]


def build_resnet50(norm: str = "FrozenBN", freeze_at: int = 0) -> ResNet:
    """ResNet-50 as configured by Mask DINO (torchvision weights layout: stride in the 3x3 conv)."""
    stem = BasicStem(in_channels=3, out_channels=64, norm=norm)
    stages = ResNet.make_default_stages(depth=50, stride_in_1x1=False, norm=norm)
    return ResNet(stem, stages, out_features=_OUT_FEATURES, freeze_at=freeze_at)


def build_tiny_resnet(widths: Sequence[int] = (16, 32, 64, 128), norm: str = "FrozenBN") -> ResNet:
    """A narrow ResNet: stem of ``widths[0]`` channels, one BasicBlock per stage."""
    if len(widths) != 4:
        raise ValueError(f"tiny ResNet needs 4 stage widths, got {list(widths)}")
    stem = BasicStem(in_channels=3, out_channels=widths[0], norm=norm)
    stages = []
    in_ch = widths[0]
    for i, out_ch in enumerate(widths):
        stages.append(
            ResNet.make_stage(
                block_class=BasicBlock,
                num_blocks=1,
                stride_per_block=[1 if i == 0 else 2],
                in_channels=in_ch,
                out_channels=out_ch,
                norm=norm,
            )
        )
        in_ch = out_ch
    return ResNet(stem, stages, out_features=_OUT_FEATURES, freeze_at=0)
