"""Seeded synthetic instance-segmentation domains, generated on the fly.

The suite mirrors the difficulty gradient of the paper's target sets with one shared shape
vocabulary (``disk``, ``box``, ``triangle``, ``blob``), so a base model pretrained on ``source``
has something to transfer:

- ``source``  : 4 classes, 2-4 opaque coloured shapes on a smooth gradient (pretraining domain).
- ``street``  : nearest (like Cityscapes): same 4 classes, the source's colour field laid out
  sky-over-road, slightly smaller and more numerous objects, slightly duller colours.
- ``clean``   : moderate shift (like NDD20): 1 class, 1-2 large light-grey blobs on calm, flat
  water whose colour is drawn from the source's colour range (fewer, larger objects).
- ``clutter`` : larger shift (like ZeroWaste): 4 classes, 8-14 strongly deformed, translucent,
  overlapping shapes on a busy high-contrast texture.
- ``xray``    : largest shift (like WIXray): 3 classes, grayscale additive attenuation in a dark
  bag, small overlapping objects that stay visible through each other (masks may overlap).

The designed order of domain shift, street < clean < clutter < xray, is measured (Fréchet
distance of pooled features of a backbone pretrained on ``source``) in
``tests/select/test_shift_ordering.py``. ``source`` itself must not change: that test's
fixture backbone was pretrained on it.

Contract: :func:`generate_sample` is a pure function of ``(domain, seed, index, image_size)``;
every image draws from its own ``numpy.random.default_rng([seed, index, domain_id])`` so any
subset can be generated independently and repeats bit for bit. Masks are modal (what is visible)
except in ``xray``, where attenuation makes every object visible and masks overlap.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from models.errors import UserError

__all__ = [
    "DOMAINS",
    "SHAPES",
    "DomainSpec",
    "SyntheticInstance",
    "SyntheticSample",
    "domain_spec",
    "generate_sample",
    "generate_samples",
]

SHAPES: tuple[str, ...] = ("disk", "box", "triangle", "blob")


@dataclass(frozen=True)
class DomainSpec:
    """Parameters of one synthetic domain. Sizes are fractions of the image side."""

    name: str
    classes: tuple[str, ...]
    num_objects: tuple[int, int]  # inclusive range
    radius: tuple[float, float]  # object radius range, fraction of image side
    deform: float  # radial perturbation amplitude (0 = clean geometric shape)
    alpha: tuple[float, float]  # opacity range (1 = opaque)
    background: str  # "gradient" | "street" | "water" | "texture" | "xray"
    grayscale: bool = False
    overlapping_masks: bool = False  # True: masks are amodal and may overlap (x-ray look)
    min_visible: float = 0.35  # drop an instance whose visible area falls below this share
    noise: float = 4.0  # pixel noise std (0-255 scale)


DOMAINS: dict[str, DomainSpec] = {
    "source": DomainSpec("source", SHAPES, (2, 4), (0.10, 0.22), 0.0, (1.0, 1.0), "gradient"),
    "street": DomainSpec("street", SHAPES, (3, 6), (0.07, 0.17), 0.05, (1.0, 1.0), "street"),
    "clean": DomainSpec("clean", ("blob",), (1, 2), (0.24, 0.38), 0.12, (1.0, 1.0), "water", noise=3.0),
    "clutter": DomainSpec(
        "clutter", SHAPES, (8, 14), (0.08, 0.18), 0.40, (0.4, 0.75), "texture", min_visible=0.3, noise=8.0
    ),
    "xray": DomainSpec(
        "xray",
        ("disk", "box", "triangle"),
        (5, 9),
        (0.04, 0.09),
        0.08,
        (0.35, 0.7),
        "xray",
        grayscale=True,
        overlapping_masks=True,
        noise=5.0,
    ),
}
_DOMAIN_IDS = {name: i for i, name in enumerate(DOMAINS)}


@dataclass(frozen=True)
class SyntheticInstance:
    """One object: its 0-based class index in the domain's ``classes`` and its (H, W) bool mask."""

    category: int
    mask: np.ndarray


@dataclass(frozen=True)
class SyntheticSample:
    """One generated image (H, W, 3) uint8 RGB and its instances (non-empty masks only)."""

    image: np.ndarray
    instances: tuple[SyntheticInstance, ...]


def domain_spec(name: str) -> DomainSpec:
    """The spec of a named domain; unknown name -> UserError listing the valid ones."""
    try:
        return DOMAINS[name]
    except KeyError:
        raise UserError(
            f"domain: unknown synthetic domain {name!r} (choose from {', '.join(DOMAINS)})"
        ) from None


def _polygon(
    shape: str, cx: float, cy: float, r: float, rng: np.random.Generator, deform: float
) -> np.ndarray:
    """Vertices (V, 2) of a shape centred at (cx, cy) with radius r, randomly rotated/deformed."""
    theta0 = rng.uniform(0, 2 * math.pi)
    if shape == "disk":
        n = 40
        aspect = rng.uniform(0.75, 1.0)
        t = np.linspace(0, 2 * math.pi, n, endpoint=False)
        pts = np.stack([np.cos(t), aspect * np.sin(t)], 1)
    elif shape == "box":
        aspect = rng.uniform(0.55, 1.0)
        pts = np.array([[-1, -aspect], [1, -aspect], [1, aspect], [-1, aspect]], dtype=np.float64) * 0.85
        pts = _densify(pts, 10)
    elif shape == "triangle":
        t = np.array([0.0, 2 * math.pi / 3, 4 * math.pi / 3]) + rng.uniform(-0.2, 0.2, 3)
        pts = _densify(np.stack([np.cos(t), np.sin(t)], 1), 13)
    elif shape == "blob":
        n = 48
        t = np.linspace(0, 2 * math.pi, n, endpoint=False)
        # A lobed outline (sum of low harmonics) distinguishes blobs from ellipses.
        rad = 1.0 + 0.22 * np.sin(3 * t + rng.uniform(0, 6.3)) + 0.12 * np.sin(5 * t + rng.uniform(0, 6.3))
        pts = np.stack([rad * np.cos(t), rad * np.sin(t)], 1) / 1.2
    else:  # pragma: no cover - SHAPES is closed
        raise AssertionError(shape)
    if deform > 0:
        # Smooth radial warp: two random harmonics, amplitude `deform` (the "deformable" look).
        ang = np.arctan2(pts[:, 1], pts[:, 0])
        k1, k2 = rng.integers(2, 5), rng.integers(4, 8)
        warp = 1.0 + deform * (
            0.6 * np.sin(k1 * ang + rng.uniform(0, 6.3)) + 0.4 * np.sin(k2 * ang + rng.uniform(0, 6.3))
        )
        pts = pts * warp[:, None]
    c, s = math.cos(theta0), math.sin(theta0)
    rot = np.array([[c, -s], [s, c]])
    return pts @ rot.T * r + np.array([cx, cy])


def _densify(pts: np.ndarray, per_edge: int) -> np.ndarray:
    """Insert points along each polygon edge so radial deformation bends straight edges."""
    out = []
    for i in range(len(pts)):
        a, b = pts[i], pts[(i + 1) % len(pts)]
        for j in range(per_edge):
            out.append(a + (b - a) * (j / per_edge))
    return np.asarray(out)


def _rasterize(poly: np.ndarray, size: int) -> np.ndarray:
    img = Image.new("L", (size, size), 0)
    ImageDraw.Draw(img).polygon([(float(x), float(y)) for x, y in poly], fill=1)
    return np.asarray(img, dtype=bool)


def _background(kind: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """(H, W, 3) float background in [0, 255]."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) / max(size - 1, 1)
    if kind == "gradient":
        c0, c1 = rng.uniform(60, 200, 3), rng.uniform(60, 200, 3)
        ang = rng.uniform(0, 2 * math.pi)
        t = (np.cos(ang) * xx + np.sin(ang) * yy + 1.5) / 3.0
        return c0 * (1 - t[..., None]) + c1 * t[..., None]
    if kind == "street":
        # The source's two-colour field with the same colour range, but laid out as a scene: the
        # gradient runs top (sky) to bottom (road) within +-0.4 rad. A mild change by design.
        sky, road = rng.uniform(60, 200, 3), rng.uniform(60, 200, 3)
        ang = math.pi / 2 + rng.uniform(-0.4, 0.4)
        t = (np.cos(ang) * xx + np.sin(ang) * yy + 1.5) / 3.0
        return sky * (1 - t[..., None]) + road * t[..., None]
    if kind == "water":
        # Calm water: one flat colour from the source's colour range, faint long swell.
        base = np.sort(rng.uniform(60, 200, 3))  # R <= G <= B: bluish, source's colour range
        waves = 3.0 * np.sin(2 * math.pi * (rng.uniform(1, 3) * yy + 0.3 * np.sin(6 * xx)))
        return base + waves[..., None]
    if kind == "texture":
        img = np.zeros((size, size, 3))
        for _ in range(8):  # random sinusoid sum = busy, high-contrast clutter texture
            f = rng.uniform(4, 24, 2) * rng.choice([-1, 1], 2)
            ph = rng.uniform(0, 2 * math.pi)
            amp = rng.uniform(13, 32, 3)
            img += amp * np.sin(2 * math.pi * (f[0] * xx + f[1] * yy) + ph)[..., None]
        return img + rng.uniform(90, 150, 3)
    if kind == "xray":
        return np.full((size, size, 3), 1.0)  # transmitted-intensity field, see _render_xray
    raise AssertionError(kind)  # pragma: no cover


def generate_sample(domain: str, seed: int, index: int, image_size: int = 128) -> SyntheticSample:
    """Generate image ``index`` of ``domain`` for ``seed`` (deterministic, independent per index)."""
    spec = domain_spec(domain)
    if image_size < 32:
        raise UserError(f"image_size: must be >= 32, got {image_size}")
    rng = np.random.default_rng([int(seed), int(index), _DOMAIN_IDS[domain]])
    size = image_size
    canvas = _background(spec.background, size, rng)
    n = int(rng.integers(spec.num_objects[0], spec.num_objects[1] + 1))
    masks: list[np.ndarray] = []
    cats: list[int] = []
    full_areas: list[int] = []
    attenuation = np.zeros((size, size))
    for _ in range(n):
        cat = int(rng.integers(0, len(spec.classes)))
        r = rng.uniform(*spec.radius) * size
        if spec.grayscale:
            # Items packed in a bag in the middle of the scan: overlaps are the norm.
            cx, cy = rng.uniform(0.25 * size, 0.75 * size, 2)
        else:
            cx, cy = rng.uniform(r * 0.6, size - r * 0.6, 2)
        mask = _rasterize(_polygon(spec.classes[cat], cx, cy, r, rng, spec.deform), size)
        if mask.sum() < 12:
            continue
        alpha = rng.uniform(*spec.alpha)
        if spec.grayscale:
            # Per-class attenuation coefficient (+ jitter): material is what identifies the class.
            mu = (0.5 + 0.5 * cat) * alpha + rng.uniform(-0.1, 0.1)
            attenuation += mask * max(mu, 0.15)
        else:
            color = _object_color(spec, rng)
            # Shading across the object so it is not a flat stamp.
            shade = 1.0 + 0.15 * np.sin(np.linspace(0, math.pi, size))[None, :] * rng.choice([-1, 1])
            obj = color[None, None, :] * shade[..., None]
            canvas = np.where(mask[..., None], (1 - alpha) * canvas + alpha * obj, canvas)
            if not spec.overlapping_masks:
                # Occlusion: later objects remove what they cover from earlier modal masks.
                masks = [m & ~mask for m in masks]
        masks.append(mask)
        cats.append(cat)
        full_areas.append(int(mask.sum()))
    if spec.grayscale:
        # Additive attenuation (Beer-Lambert): I = I0 * exp(-sum mu * thickness).
        bag = np.zeros((size, size))
        lo, hi = int(0.15 * size), int(0.85 * size)
        bag[lo:hi, lo:hi] = 0.6  # the bag itself: a uniform attenuator (dark scan)
        trans = np.exp(-(attenuation + bag))
        gray = 235.0 * trans + 10.0 + rng.normal(0, spec.noise, trans.shape)  # one noise field: stays gray
        canvas = np.repeat(gray[..., None], 3, axis=2)
    else:
        canvas = canvas + rng.normal(0, spec.noise, canvas.shape)
    image = np.clip(np.rint(canvas), 0, 255).astype(np.uint8)
    instances = tuple(
        SyntheticInstance(c, m)
        for c, m, a in zip(cats, masks, full_areas)
        if m.sum() >= max(8, spec.min_visible * a)
    )
    return SyntheticSample(image=image, instances=instances)


def _object_color(spec: DomainSpec, rng: np.random.Generator) -> np.ndarray:
    if spec.name == "street":
        # The source's palette, a little duller (lower saturation/value).
        return _hsv_to_rgb(rng.uniform(0, 1), rng.uniform(0.5, 0.92), rng.uniform(0.5, 0.92)) * 255.0
    if spec.name == "clean":
        return np.full(3, rng.uniform(120, 220)) + rng.uniform(-10, 10, 3)  # light grey fins
    hue = rng.uniform(0, 1)
    return _hsv_to_rgb(hue, rng.uniform(0.6, 1.0), rng.uniform(0.6, 1.0)) * 255.0


def _hsv_to_rgb(h: float, s: float, v: float) -> np.ndarray:
    i = int(h * 6) % 6
    f = h * 6 - int(h * 6)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    return np.array([(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i])


def generate_samples(
    domain: str, seed: int, indices: Sequence[int] | range, image_size: int = 128
) -> list[SyntheticSample]:
    """Generate several images; ``generate_samples(d, s, range(n))[i] == generate_sample(d, s, i)``."""
    return [generate_sample(domain, seed, i, image_size) for i in indices]
