"""Measure a (generated) toy-world image: which classes are present, their areas, and the background type.

Classes are recognised by hue among saturated pixels (every class has its own hue, backgrounds are desaturated),
which keeps the parser robust to the blur, colour drift and noise of small diffusion models.
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass, field

import numpy as np
import PIL.Image

from .world import CLASS_NAMES, CLASSES

MIN_SATURATION = 0.45  # backgrounds stay below ~0.3, icons are above ~0.85
MIN_CHROMA = 0.35  # max - min channel: backgrounds ~0.15, icons ~0.8; robust to noise on dark backgrounds
DEFAULT_MIN_AREA = 6  # pixels; the smallest icon covers ~20 px at 32x32
INDOOR_MAX_VALUE = 0.52  # background brightness: rooms are dark (~0.25), outdoors bright (~0.85)
_CLASS_HUES = np.array([colorsys.rgb_to_hsv(*(np.array(c.colour) / 255.0))[0] for c in CLASSES])


@dataclass
class ParsedScene:
    """What the parser measured in one image.

    Attributes:
        areas: pixel count per class name (every class, zeros included).
        present: classes whose area is at least the minimum area, largest first.
        background: `"indoor"` or `"outdoor"`.
        background_value: median brightness of the background pixels, in [0, 1].
    """

    areas: dict[str, int] = field(default_factory=dict)
    present: list[str] = field(default_factory=list)
    background: str = "outdoor"
    background_value: float = 0.0

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
    return ParsedScene(areas, present, "indoor" if value < INDOOR_MAX_VALUE else "outdoor", value)


def parse_scenes(images, min_area: int = DEFAULT_MIN_AREA) -> list[ParsedScene]:
    """[`parse_scene`] over a list of images (or an `(N, H, W, 3)` array)."""
    return [parse_scene(im, min_area=min_area) for im in images]
