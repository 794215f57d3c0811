"""Draw toy-world scenes: icons whose size reflects prominence, on an indoor or outdoor background."""

from __future__ import annotations

import math

import numpy as np
import PIL.Image
import PIL.ImageDraw

from .world import BACKGROUNDS, CLASS_BY_NAME, CLASS_NAMES, CLASSES, IMAGE_SIZE

SUPERSAMPLE = 4  # draw at 4x and downsample: anti-aliased edges like a real (blurry) image
SHAPE_NAMES = tuple(c.shape for c in CLASSES)  # one icon shape per class, in class order


def _polygon(shape: str, cx: float, cy: float, r: float) -> list[tuple[float, float]] | None:
    """Vertices of `shape`, scaled so the filled area is about pi * r^2 (None: draw an ellipse)."""
    if shape == "circle":
        return None
    if shape == "square":
        h = r * math.sqrt(math.pi) / 2
        return [(cx - h, cy - h), (cx + h, cy - h), (cx + h, cy + h), (cx - h, cy + h)]
    if shape == "diamond":
        h = r * math.sqrt(math.pi / 2)
        return [(cx, cy - h), (cx + h, cy), (cx, cy + h), (cx - h, cy)]
    if shape in ("triangle", "drop"):
        side = r * math.sqrt(4 * math.pi / math.sqrt(3))  # equilateral with area pi r^2
        height = side * math.sqrt(3) / 2
        sign = 1 if shape == "triangle" else -1  # triangle points up, the drop points down
        top, base = cy - sign * 2 * height / 3, cy + sign * height / 3
        return [(cx, top), (cx + side / 2, base), (cx - side / 2, base)]
    if shape == "cross":
        a = r * math.sqrt(math.pi / 5) / 2 * 1.0  # 5 squares of side 2a cover pi r^2
        arm = 3 * a
        return [
            (cx - a, cy - arm),
            (cx + a, cy - arm),
            (cx + a, cy - a),
            (cx + arm, cy - a),
            (cx + arm, cy + a),
            (cx + a, cy + a),
            (cx + a, cy + arm),
            (cx - a, cy + arm),
            (cx - a, cy + a),
            (cx - arm, cy + a),
            (cx - arm, cy - a),
            (cx - a, cy - a),
        ]
    raise ValueError(f"Unknown icon shape {shape!r}.")


def icon_coverage(shape: str, x: float, y: float, radius: float, size: tuple[int, int]) -> np.ndarray:
    """Fraction of each pixel an icon covers, drawn exactly as `render_scene` draws it.

    Args:
        shape (`str`): one of `SHAPE_NAMES`.
        x, y (`float`): centre in pixels of the output grid (not in [0, 1]).
        radius (`float`): radius in pixels of the output grid.
        size (`tuple[int, int]`): `(height, width)` of the output grid.

    Returns:
        `np.ndarray` `(height, width)` float32 in [0, 1].
    """
    h, w = size
    s = SUPERSAMPLE
    canvas = draw_icon(shape, x * s, y * s, radius * s, (h * s, w * s))
    return canvas.reshape(h, s, w, s).mean(axis=(1, 3))


def draw_icon(shape: str, cx: float, cy: float, r: float, size: tuple[int, int]) -> np.ndarray:
    """An icon drawn at full strength on a blank canvas, in the canvas's own pixels (no supersampling).

    [`icon_coverage`] is this at `SUPERSAMPLE` times the output grid, averaged back down; the parser draws on a
    small supersampled canvas around one object and slides it to try shifted outlines.

    Returns:
        `np.ndarray` `size` = `(height, width)` float32, 1 inside the icon and 0 outside.
    """
    if shape not in SHAPE_NAMES:
        raise ValueError(f"Unknown icon shape {shape!r}; expected one of {SHAPE_NAMES}.")
    canvas = PIL.Image.new("L", (size[1], size[0]), 0)
    draw = PIL.ImageDraw.Draw(canvas)
    poly = _polygon(shape, cx, cy, r)
    if poly is None:
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=1)
    else:
        draw.polygon(poly, fill=1)
    return np.asarray(canvas, dtype=np.float32)


def render_scene(objects: list[dict], setting: str, size: int = IMAGE_SIZE, return_labels: bool = False):
    """Render one scene.

    Args:
        objects (`list[dict]`): each with `"class"` (a class name), `"radius"` (pixels at `size`=32 scale),
            `"x"`, `"y"` (centre, in [0, 1] of the width/height). Drawn in order: later objects occlude earlier.
        setting (`str`): `"indoor"` or `"outdoor"`.
        size (`int`): output width and height in pixels.
        return_labels (`bool`): also return a `(size, size)` int map: -1 background, else the class index of the
            visible object (majority over the supersampled pixels).

    Returns:
        `PIL.Image.Image` (RGB), or `(image, labels)` when `return_labels`.
    """
    if setting not in BACKGROUNDS:
        raise ValueError(f"`setting` must be one of {tuple(BACKGROUNDS)}, got {setting!r}.")
    s = size * SUPERSAMPLE
    upper, lower, split = BACKGROUNDS[setting]
    canvas = np.empty((s, s, 3), dtype=np.uint8)
    cut = int(round(split * s))
    canvas[:cut] = upper
    canvas[cut:] = lower
    image = PIL.Image.fromarray(canvas)
    labels = PIL.Image.new("L", (s, s), 255)
    draw, draw_labels = PIL.ImageDraw.Draw(image), PIL.ImageDraw.Draw(labels)
    scale = s / IMAGE_SIZE
    for obj in objects:
        spec = CLASS_BY_NAME.get(obj["class"])
        if spec is None:
            raise ValueError(f"Unknown class {obj['class']!r} in `objects`; expected one of {CLASS_NAMES}.")
        cx, cy, r = obj["x"] * s, obj["y"] * s, obj["radius"] * scale
        poly = _polygon(spec.shape, cx, cy, r)
        for d, fill in ((draw, spec.colour), (draw_labels, CLASS_NAMES.index(spec.name))):
            if poly is None:
                d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
            else:
                d.polygon(poly, fill=fill)
    out = image.resize((size, size), PIL.Image.Resampling.BOX)
    if not return_labels:
        return out
    lab = (
        np.asarray(labels).reshape(size, SUPERSAMPLE, size, SUPERSAMPLE).transpose(0, 2, 1, 3).reshape(size, size, -1)
    )
    counts = np.stack([(lab == k).sum(-1) for k in range(len(CLASS_NAMES))] + [(lab == 255).sum(-1)], axis=-1)
    arg = counts.argmax(-1)
    return out, np.where(arg == len(CLASS_NAMES), -1, arg)
