"""Measure a (generated) toy-world image: which classes are present, their areas, the objects' shapes and count,
the background type and how flat the background is.

Classes are recognised by hue among saturated pixels (every class has its own hue, backgrounds are desaturated),
which keeps the parser robust to the blur, colour drift and noise of small diffusion models. Shapes are recognised
independently of hue: each object (a connected region of one hue) is matched against the renderer's own icon
outlines (`render.icon_coverage`) at the object's position and size, and the best (soft) overlap with the region's
chroma names the shape.
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass, field

import numpy as np
import PIL.Image
from scipy import ndimage

from .render import SHAPE_NAMES, icon_coverage
from .world import CLASS_NAMES, CLASSES

MIN_SATURATION = 0.45  # backgrounds stay below ~0.3, icons are above ~0.85
MIN_CHROMA = 0.35  # max - min channel: backgrounds ~0.15, icons ~0.8; robust to noise on dark backgrounds
ICON_CHROMA = 0.78  # chroma of a fully covered icon pixel (the class colours: 0.72-0.80)
DEFAULT_MIN_AREA = 6  # pixels; the smallest icon covers ~20 px at 32x32
INDOOR_MAX_VALUE = 0.52  # background brightness: rooms are dark (~0.25), outdoors bright (~0.85)
# shape search around an object's centroid and equal-area radius: clipped or blurred icons shift both a little
_SHIFTS = (-1.0, -0.5, 0.0, 0.5, 1.0)
_SCALES = (0.85, 1.0, 1.15)
_CLASS_HUES = np.array([colorsys.rgb_to_hsv(*(np.array(c.colour) / 255.0))[0] for c in CLASSES])


@dataclass
class ParsedObject:
    """One object: a connected region of one class's hue.

    Attributes:
        name: the class its hue names.
        area: pixel count.
        x, y: centroid, in pixels.
        shape: the icon shape whose outline overlaps the region best (hue ignored), e.g. `"circle"`.
        shape_iou: that overlap (intersection over union, in [0, 1]).
    """

    name: str
    area: int
    x: float
    y: float
    shape: str
    shape_iou: float


@dataclass
class ParsedScene:
    """What the parser measured in one image.

    Attributes:
        areas: pixel count per class name (every class, zeros included).
        present: classes whose area is at least the minimum area, largest first.
        background: `"indoor"` or `"outdoor"`.
        background_value: median brightness of the background pixels, in [0, 1].
        objects: the objects (connected regions of one hue of at least the minimum area), largest first.
        background_noise: standard deviation of the background pixels around their row's median, pooled over the
            RGB channels, in [0, 1] (rows, because the backgrounds are two-tone horizontal bands; pixels touching an
            object are left out). Renders: ~0.001; grain makes it grow.
    """

    areas: dict[str, int] = field(default_factory=dict)
    present: list[str] = field(default_factory=list)
    background: str = "outdoor"
    background_value: float = 0.0
    objects: list[ParsedObject] = field(default_factory=list)
    background_noise: float = 0.0

    @property
    def count(self) -> int:
        """Number of objects."""
        return len(self.objects)

    @property
    def shape(self) -> str | None:
        """Shape of the largest object, or None when there is no object."""
        return self.objects[0].shape if self.objects else None

    @property
    def dominant(self) -> str | None:
        """The largest present class, or None when nothing is present."""
        return self.present[0] if self.present else None


def _to_array(image) -> np.ndarray:
    if isinstance(image, PIL.Image.Image):
        arr = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    else:
        arr = np.asarray(image, dtype=np.float32)
        if arr.ndim != 3 or arr.shape[-1] != 3:
            raise ValueError(f"`image` must be a PIL image or an `(H, W, 3)` array in [0, 1], got shape {arr.shape}.")
        if arr.max() > 1.5:
            raise ValueError("`image` array looks like 0-255 values; pass floats in [0, 1] (divide by 255).")
    return np.clip(arr, 0.0, 1.0)


def _object_pixels(arr: np.ndarray) -> np.ndarray:
    cmax, cmin = arr.max(-1), arr.min(-1)
    sat = (cmax - cmin) / np.maximum(cmax, 1e-6)
    return (sat >= MIN_SATURATION) & (cmax - cmin >= MIN_CHROMA)


def object_pixels(image) -> np.ndarray:
    """Where the parser sees objects: a boolean `(H, W)` array, True on object pixels, False on the background.

    Args:
        image (`PIL.Image.Image` or `np.ndarray` `(H, W, 3)` in [0, 1]): the image.
    """
    return _object_pixels(_to_array(image))


def parse_scene(image, min_area: int = DEFAULT_MIN_AREA) -> ParsedScene:
    """Parse one image.

    Args:
        image (`PIL.Image.Image` or `np.ndarray` `(H, W, 3)` in [0, 1]): the image.
        min_area (`int`): a class counts as present when at least this many pixels have its colour.

    Returns:
        [`ParsedScene`].
    """
    if min_area < 1:
        raise ValueError(f"`min_area` must be >= 1 pixel, got {min_area}.")
    arr = _to_array(image)
    cmax, cmin = arr.max(-1), arr.min(-1)
    r, g, b = arr[..., 0], arr[..., 1], arr[..., 2]
    delta = np.maximum(cmax - cmin, 1e-6)
    hue = np.where(cmax == r, ((g - b) / delta) % 6, np.where(cmax == g, (b - r) / delta + 2, (r - g) / delta + 4)) / 6
    is_object = _object_pixels(arr)
    dist = np.abs(hue[..., None] - _CLASS_HUES)
    dist = np.minimum(dist, 1 - dist)
    label = dist.argmin(-1)
    areas = {name: int(((label == k) & is_object).sum()) for k, name in enumerate(CLASS_NAMES)}
    present = sorted((n for n, a in areas.items() if a >= min_area), key=lambda n: -areas[n])
    bg = cmax[~is_object] if (~is_object).sum() >= 8 else cmax.ravel()
    value = float(np.median(bg))
    objects = _objects(label, is_object, np.clip((cmax - cmin) / ICON_CHROMA, 0.0, 1.0), min_area)
    return ParsedScene(
        areas,
        present,
        "indoor" if value < INDOOR_MAX_VALUE else "outdoor",
        value,
        objects,
        _background_noise(arr, is_object),
    )


def _objects(label: np.ndarray, is_object: np.ndarray, coverage: np.ndarray, min_area: int) -> list[ParsedObject]:
    """Connected regions of one hue (8-connected), each with its best-matching icon shape, largest first."""
    out = []
    for k, name in enumerate(CLASS_NAMES):
        regions, n = ndimage.label((label == k) & is_object, structure=np.ones((3, 3)))
        for j in range(1, n + 1):
            mask = regions == j
            area = int(mask.sum())
            if area < min_area:
                continue
            ys, xs = np.nonzero(mask)
            x, y = float(xs.mean()) + 0.5, float(ys.mean()) + 0.5  # pixel centres
            near = ndimage.binary_dilation(mask, structure=np.ones((3, 3)), iterations=2)
            shape, iou = match_shape(coverage * near, x, y, area)
            out.append(ParsedObject(name, area, x, y, shape, iou))
    return sorted(out, key=lambda o: -o.area)


def match_shape(coverage: np.ndarray, x: float, y: float, area: float) -> tuple[str, float]:
    """The icon shape whose outline best overlaps a region, and that overlap (soft IoU).

    Args:
        coverage (`np.ndarray` `(H, W)` in [0, 1]): how much of each pixel the region covers (0 outside it).
        x, y (`float`): its centroid in pixels (the icons are drawn so that their centroid is their centre).
        area (`float`): its area in pixels.

    Returns:
        `(shape, iou)`: the outline (`render.icon_coverage`) is searched over small shifts and scales around the
        centroid and the radius of the circle with the region's area; the overlap is `sum(min) / sum(max)`.
    """
    if area <= 0 or not coverage.any():
        raise ValueError("The region is empty; pass a region with at least one covered pixel.")
    radius = np.sqrt(area / np.pi)
    best, best_iou = SHAPE_NAMES[0], -1.0
    for shape in SHAPE_NAMES:
        for scale in _SCALES:
            for dx in _SHIFTS:
                for dy in _SHIFTS:
                    template = icon_coverage(shape, x + dx, y + dy, radius * scale, coverage.shape)
                    iou = float(np.minimum(template, coverage).sum() / np.maximum(template, coverage).sum())
                    if iou > best_iou:
                        best, best_iou = shape, iou
    return best, best_iou


def _background_noise(arr: np.ndarray, is_object: np.ndarray) -> float:
    """Std of background pixels around their row's per-channel median (objects grown by one pixel left out)."""
    background = ~ndimage.binary_dilation(is_object, structure=np.ones((3, 3)))
    residuals = []
    for row in range(arr.shape[0]):
        pixels = arr[row][background[row]]
        if len(pixels) >= 4:
            residuals.append(pixels - np.median(pixels, axis=0))
    if not residuals:
        return 0.0
    return float(np.concatenate(residuals).std())


def parse_scenes(images, min_area: int = DEFAULT_MIN_AREA) -> list[ParsedScene]:
    """[`parse_scene`] over a list of images (or an `(N, H, W, 3)` array)."""
    return [parse_scene(im, min_area=min_area) for im in images]
