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

from .render import SHAPE_NAMES, SUPERSAMPLE, draw_icon, icon_coverage
from .world import CLASS_NAMES, CLASSES

MIN_SATURATION = 0.45  # backgrounds stay below ~0.3, icons are above ~0.85
MIN_CHROMA = 0.35  # max - min channel: backgrounds ~0.15, icons ~0.8; robust to noise on dark backgrounds
ICON_CHROMA = 0.78  # chroma of a fully covered icon pixel (the class colours: 0.72-0.80)
DEFAULT_MIN_AREA = 6  # pixels; the smallest icon covers ~20 px at 32x32
INDOOR_MAX_VALUE = 0.52  # background brightness: rooms are dark (~0.25), outdoors bright (~0.85)
# shape search around an object's centroid and equal-area radius: clipped or blurred icons shift both a little
_SHIFT_SUBPIXELS = (-4, -2, 0, 2, 4)  # whole supersampled pixels: one drawing slides to each (`match_shape`)
_SHIFTS = tuple(k / SUPERSAMPLE for k in _SHIFT_SUBPIXELS)  # -1 .. 1 pixel
_SCALES = (0.85, 1.0, 1.15)
_REACH = 1.56  # farthest icon vertex from its centre, in radii (the triangle's apex; the others reach <= 1.26)
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
    label, is_object = _class_labels(arr)
    areas = {name: int(((label == k) & is_object).sum()) for k, name in enumerate(CLASS_NAMES)}
    present = sorted((n for n, a in areas.items() if a >= min_area), key=lambda n: -areas[n])
    cmax = arr.max(-1)
    bg = cmax[~is_object] if (~is_object).sum() >= 8 else cmax.ravel()
    value = float(np.median(bg))
    objects = [
        ParsedObject(name, area, x, y, *match_shape(coverage, x, y, area))
        for name, coverage, x, y, area in _regions(arr, label, is_object, min_area)
    ]
    objects.sort(key=lambda o: -o.area)
    return ParsedScene(
        areas,
        present,
        "indoor" if value < INDOOR_MAX_VALUE else "outdoor",
        value,
        objects,
        _background_noise(arr, is_object),
    )


def _class_labels(arr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The nearest class hue of every pixel, and which pixels are saturated enough to be an object."""
    cmax, cmin = arr.max(-1), arr.min(-1)
    r, g, b = arr[..., 0], arr[..., 1], arr[..., 2]
    delta = np.maximum(cmax - cmin, 1e-6)
    hue = np.where(cmax == r, ((g - b) / delta) % 6, np.where(cmax == g, (b - r) / delta + 2, (r - g) / delta + 4)) / 6
    dist = np.abs(hue[..., None] - _CLASS_HUES)
    dist = np.minimum(dist, 1 - dist)
    return dist.argmin(-1), _object_pixels(arr)


def _regions(arr: np.ndarray, label: np.ndarray, is_object: np.ndarray, min_area: int):
    """Connected regions of one hue (8-connected) of at least `min_area` pixels: `(class name, coverage, x, y,
    area)`, the coverage being the pixels' chroma (1 on a fully covered icon pixel) around the region, 0 elsewhere."""
    chroma = np.clip((arr.max(-1) - arr.min(-1)) / ICON_CHROMA, 0.0, 1.0)
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
            yield name, chroma * near, x, y, area


def shape_regions(image, min_area: int = DEFAULT_MIN_AREA) -> list[tuple[str, np.ndarray, float, float, int]]:
    """The regions [`parse_scene`] names a shape for, as [`match_shape`] receives them: `(class name, coverage,
    x, y, area)` per object (`benchmarks/parser.py` times the shape search on them)."""
    arr = _to_array(image)
    return list(_regions(arr, *_class_labels(arr), min_area))


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
    # Each outline is drawn once per scale, supersampled, on a canvas around the object, and slid to every shift:
    # the shifts are whole supersampled pixels, so a shifted window of one drawing is the shifted drawing (to within
    # the rasteriser's rounding of a few edge subpixels; 18 drawings per object instead of 450, ~10x faster). The
    # window holds the region and every outline's reach (clipped to the image, as the renderer clips), so the
    # overlap over it is the overlap over the whole image.
    s, h, w = SUPERSAMPLE, *coverage.shape
    margin = max(abs(k) for k in _SHIFT_SUBPIXELS)  # the largest shift, in supersampled pixels
    reach = int(np.ceil(radius * max(_SCALES) * _REACH + margin / s)) + 1
    ys, xs = np.nonzero(coverage)
    y0, y1 = max(0, min(int(y) - reach, ys.min())), min(h, max(int(y) + reach + 1, ys.max() + 1))
    x0, x1 = max(0, min(int(x) - reach, xs.min())), min(w, max(int(x) + reach + 1, xs.max() + 1))
    window = coverage[y0:y1, x0:x1]
    ch, cw = window.shape
    # pixel i of the outline moved by k supersampled pixels is the drawing's block starting at margin - k + i * s
    starts = margin - np.array(_SHIFT_SUBPIXELS)
    a = np.add.outer(starts, np.arange(ch) * s)[None, :, :, None]  # (1, shift y, ch, 1)
    b = np.add.outer(starts, np.arange(cw) * s)[:, None, None, :]  # (shift x, 1, 1, cw)
    cx, cy = (x - x0) * s + margin, (y - y0) * s + margin
    best, best_iou = SHAPE_NAMES[0], -1.0
    for shape in SHAPE_NAMES:
        for scale in _SCALES:
            canvas = draw_icon(shape, cx, cy, radius * scale * s, (ch * s + 2 * margin, cw * s + 2 * margin))
            # block sums of every shift from one integral image: (shift x, shift y, ch, cw)
            total = np.zeros((canvas.shape[0] + 1, canvas.shape[1] + 1))
            total[1:, 1:] = canvas.cumsum(0, dtype=np.float64).cumsum(1)
            blocks = total[a + s, b + s] - total[a, b + s] - total[a + s, b] + total[a, b]
            templates = blocks / (s * s)
            ious = np.minimum(templates, window).sum((-2, -1)) / np.maximum(templates, window).sum((-2, -1))
            iou = float(ious.max())
            if iou > best_iou:
                best, best_iou = shape, iou
    return best, best_iou


def overlaps_by_redrawing(coverage: np.ndarray, x: float, y: float, area: float) -> dict[str, float]:
    """The search [`match_shape`] makes, written out the slow way: each shifted, scaled outline redrawn on the whole
    image with `render.icon_coverage` (450 drawings per object). The reference its tests and
    `benchmarks/parser.py` compare it with.

    Returns:
        `dict` shape name -> the best overlap (soft IoU) any of its outlines reaches.
    """
    radius = np.sqrt(area / np.pi)
    best = {}
    for shape in SHAPE_NAMES:
        for scale in _SCALES:
            for dx in _SHIFTS:
                for dy in _SHIFTS:
                    template = icon_coverage(shape, x + dx, y + dy, radius * scale, coverage.shape)
                    iou = float(np.minimum(template, coverage).sum() / np.maximum(template, coverage).sum())
                    best[shape] = max(best.get(shape, -1.0), iou)
    return best


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
