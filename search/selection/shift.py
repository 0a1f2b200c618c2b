"""Domain shift: a distance between backbone feature distributions of two image sets.

The paper's lesson is that the right amount of adaptation depends on how far a target domain is
from what the base model saw in pretraining. We measure "how far" in the base model's own feature
space: every image goes through ``model.backbone`` (detectron2 convention, a dict of feature maps
``res2``..``res5``), each level is globally average-pooled, and the pooled levels are concatenated
into one vector per image. Two distances over these vectors are reported:

* the Fréchet distance between Gaussian fits (the FID formula):
  ``|mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a S_b)^{1/2})``;
* the unbiased squared kernel MMD with a Gaussian (RBF) kernel whose bandwidth is the median
  pairwise distance of the pooled sample (the usual median heuristic).

Contracts: features are float64 numpy arrays ``(n, d)``; :class:`FeatureStats` keeps the mean,
the covariance and a bounded random subsample (for MMD and for later neighbour search) so it can
be stored compactly and compared without the images.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.linalg

from models.errors import UserError

if TYPE_CHECKING:  # torch is heavy; import it lazily in the functions that need it
    import torch

__all__ = [
    "FeatureStats",
    "ShiftResult",
    "feature_stats",
    "frechet_distance",
    "mmd_rbf",
    "measure_shift",
    "pooled_backbone_features",
    "load_coco_images",
]


@dataclass(frozen=True)
class FeatureStats:
    """Summary of one domain's pooled backbone features.

    ``mean`` (d,), ``cov`` (d, d) (unbiased, n-1), ``count`` images, ``sample`` (m, d) with
    m <= count a seeded random subsample of the raw feature vectors (MMD needs samples),
    ``levels`` the backbone feature names that were pooled, in concatenation order.
    """

    mean: np.ndarray
    cov: np.ndarray
    count: int
    sample: np.ndarray
    levels: tuple[str, ...] = field(default_factory=tuple)

    @property
    def dim(self) -> int:
        return int(self.mean.shape[0])

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Plain arrays for ``np.savez`` (see :meth:`from_arrays`)."""
        return {
            "mean": self.mean,
            "cov": self.cov,
            "count": np.asarray(self.count, dtype=np.int64),
            "sample": self.sample,
            "levels": np.asarray(json.dumps(list(self.levels))),
        }

    @classmethod
    def from_arrays(cls, arrays: Any) -> FeatureStats:
        """Inverse of :meth:`to_arrays` (accepts a dict or an ``NpzFile``)."""
        levels = tuple(json.loads(str(arrays["levels"]))) if "levels" in arrays else ()
        return cls(
            mean=np.asarray(arrays["mean"], dtype=np.float64),
            cov=np.asarray(arrays["cov"], dtype=np.float64),
            count=int(arrays["count"]),
            sample=np.asarray(arrays["sample"], dtype=np.float64),
            levels=levels,
        )


@dataclass(frozen=True)
class ShiftResult:
    """Distances from a reference domain (the base model's pretraining data) to a target."""

    frechet: float
    mmd: float
    n_reference: int
    n_target: int
    dim: int

    def to_dict(self) -> dict[str, float | int]:
        return {
            "frechet": self.frechet,
            "mmd": self.mmd,
            "n_reference": self.n_reference,
            "n_target": self.n_target,
            "dim": self.dim,
        }


def feature_stats(
    features: np.ndarray, *, max_sample: int = 256, seed: int = 0, levels: Sequence[str] = ()
) -> FeatureStats:
    """Fit mean/covariance to ``features`` (n, d) and keep a subsample of at most ``max_sample``."""
    feats = np.asarray(features, dtype=np.float64)
    if feats.ndim != 2 or feats.shape[0] < 2:
        raise UserError(f"features: need at least 2 feature vectors of shape (n, d), got {feats.shape}")
    mean = feats.mean(axis=0)
    cov = np.atleast_2d(np.cov(feats, rowvar=False))
    rng = np.random.default_rng(seed)
    if feats.shape[0] > max_sample:
        idx = np.sort(rng.choice(feats.shape[0], size=max_sample, replace=False))
        sample = feats[idx]
    else:
        sample = feats.copy()
    return FeatureStats(mean=mean, cov=cov, count=int(feats.shape[0]), sample=sample, levels=tuple(levels))


def _psd_sqrt(m: np.ndarray) -> np.ndarray:
    """Symmetric square root of a PSD matrix (negative rounding eigenvalues clipped to 0)."""
    w, v = scipy.linalg.eigh((m + m.T) / 2.0)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def frechet_distance(a: FeatureStats, b: FeatureStats) -> float:
    """Fréchet (2-Wasserstein between Gaussians) distance squared, as in FID.

    ``tr((S_a S_b)^{1/2})`` is computed as ``tr((S_a^{1/2} S_b S_a^{1/2})^{1/2})`` (the same
    value: the two matrices are similar) with symmetric eigendecompositions only. Unlike a general
    ``scipy.linalg.sqrtm`` of the non-symmetric product this stays real and accurate when the
    covariances are rank-deficient, which they are whenever a domain has fewer images than
    feature dimensions (the common case here).
    """
    if a.dim != b.dim:
        raise UserError(f"feature stats: dimensions differ ({a.dim} vs {b.dim}); same backbone needed")
    diff = a.mean - b.mean
    root_a = _psd_sqrt(a.cov)
    inner = root_a @ b.cov @ root_a
    tr_covmean = float(np.sqrt(np.clip(scipy.linalg.eigvalsh((inner + inner.T) / 2.0), 0.0, None)).sum())
    value = float(diff @ diff + np.trace(a.cov) + np.trace(b.cov) - 2.0 * tr_covmean)
    # The true value is >= 0; rounding on identical inputs can give -1e-12.
    return max(value, 0.0)


def _sq_dists(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    d = (x * x).sum(1)[:, None] + (y * y).sum(1)[None, :] - 2.0 * x @ y.T
    return np.maximum(d, 0.0)


def mmd_rbf(x: np.ndarray, y: np.ndarray, bandwidth: float | None = None) -> float:
    """Unbiased squared MMD between samples ``x`` (n, d) and ``y`` (m, d), Gaussian kernel.

    ``k(u, v) = exp(-|u - v|^2 / (2 bandwidth^2))``; ``bandwidth=None`` takes the median pairwise
    distance of the pooled sample. The unbiased estimate can be slightly negative when the two
    distributions are equal; it is returned as is (clipping would bias it).
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.shape[0] < 2 or y.shape[0] < 2:
        raise UserError("features: MMD needs at least 2 samples per domain")
    if bandwidth is None:
        z = np.concatenate([x, y])
        d = np.sqrt(_sq_dists(z, z))
        off = d[~np.eye(len(z), dtype=bool)]
        bandwidth = float(np.median(off)) if off.size else 1.0
        if bandwidth <= 0:
            bandwidth = 1.0
    gamma = 1.0 / (2.0 * bandwidth**2)
    kxx = np.exp(-gamma * _sq_dists(x, x))
    kyy = np.exp(-gamma * _sq_dists(y, y))
    kxy = np.exp(-gamma * _sq_dists(x, y))
    n, m = x.shape[0], y.shape[0]
    sxx = (kxx.sum() - np.trace(kxx)) / (n * (n - 1))
    syy = (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
    return float(sxx + syy - 2.0 * kxy.mean())


def measure_shift(reference: FeatureStats, target: FeatureStats) -> ShiftResult:
    """Fréchet distance and MMD^2 from ``reference`` (pretraining data) to ``target``."""
    return ShiftResult(
        frechet=frechet_distance(reference, target),
        mmd=mmd_rbf(reference.sample, target.sample),
        n_reference=reference.count,
        n_target=target.count,
        dim=reference.dim,
    )


def _batches(items: Iterable[torch.Tensor], size: int) -> Iterator[list[torch.Tensor]]:
    batch: list[torch.Tensor] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def pooled_backbone_features(
    model: Any,
    images: Iterable[torch.Tensor],
    *,
    image_size: int | None = 128,
    batch_size: int = 8,
    levels: Sequence[str] | None = None,
) -> tuple[np.ndarray, tuple[str, ...]]:
    """Per-image pooled multi-level backbone features of ``model``.

    ``images``: uint8 (or float 0..255) tensors (C, H, W) in the model's ``input_format``.
    They are resized to ``image_size`` x ``image_size`` (None: keep; then all must share a size)
    and normalised with the model's ``pixel_mean`` / ``pixel_std`` buffers when it has them,
    exactly as the model would before its backbone. Each requested level (default: every map the
    backbone returns, sorted by name so res2..res5) is global-average-pooled; levels are
    concatenated. Returns ``(features (n, d) float64, levels)``.
    """
    import torch
    import torch.nn.functional as F

    backbone = getattr(model, "backbone", None)
    if backbone is None:
        raise UserError("model: has no .backbone; domain shift needs a detectron2-style backbone")
    param = next(iter(model.parameters()), None)
    device = param.device if param is not None else torch.device("cpu")
    mean = getattr(model, "pixel_mean", None)
    std = getattr(model, "pixel_std", None)
    was_training = bool(model.training)
    model.eval()
    rows: list[np.ndarray] = []
    used: tuple[str, ...] = ()
    try:
        with torch.no_grad():
            for batch in _batches(images, batch_size):
                tensors = []
                for img in batch:
                    t = img.to(device=device, dtype=torch.float32)
                    if image_size is not None and tuple(t.shape[-2:]) != (image_size, image_size):
                        t = F.interpolate(
                            t[None], size=(image_size, image_size), mode="bilinear", align_corners=False
                        )[0]
                    tensors.append(t)
                x = torch.stack(tensors)
                if mean is not None and std is not None:
                    x = (x - mean.view(1, -1, 1, 1).to(x)) / std.view(1, -1, 1, 1).to(x)
                feats = backbone(x)
                if not isinstance(feats, dict):
                    raise UserError("model: backbone must return a dict of feature maps")
                names = tuple(sorted(feats)) if levels is None else tuple(levels)
                missing = [n for n in names if n not in feats]
                if missing:
                    raise UserError(f"levels: backbone has no feature map {missing[0]!r}")
                used = names
                pooled = [feats[n].float().mean(dim=(-2, -1)) for n in names]
                rows.append(torch.cat(pooled, dim=1).double().cpu().numpy())
    finally:
        model.train(was_training)
    if not rows:
        raise UserError("images: no images to compute features from")
    return np.concatenate(rows), used


def load_coco_images(
    data_json: str | Path, images_dir: str | Path, *, limit: int | None = None, input_format: str = "RGB"
) -> Iterator[torch.Tensor]:
    """Yield the images of a COCO json as uint8 (C, H, W) tensors (``input_format`` RGB or BGR).

    Images are taken in the json's order (sorted by id), at most ``limit``. Missing image files
    raise :class:`UserError` naming the file.
    """
    import torch
    from PIL import Image

    data_json = Path(data_json)
    images_dir = Path(images_dir)
    try:
        coco = json.loads(data_json.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise UserError(f"{data_json}: cannot read COCO json ({exc})") from exc
    entries = coco.get("images") if isinstance(coco, dict) else None
    if not isinstance(entries, list) or not entries:
        raise UserError(f"{data_json}: no 'images' list")
    entries = sorted(entries, key=lambda e: e.get("id", 0))
    if limit is not None:
        entries = entries[:limit]
    for entry in entries:
        path = images_dir / str(entry.get("file_name", ""))
        try:
            with Image.open(path) as im:
                arr = np.asarray(im.convert("RGB"), dtype=np.uint8)
        except OSError as exc:
            raise UserError(f"{path}: cannot read image ({exc})") from exc
        if input_format.upper() == "BGR":
            arr = arr[:, :, ::-1]
        yield torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous()  # PIL arrays are read-only
