"""Sample toy-world scenes (the metadata a VLM would describe) deterministically from a seed."""

from __future__ import annotations

import numpy as np

from .world import CLASS_NAMES, INDOOR_SPACES, MAX_RADIUS, MIN_RADIUS, prominence_from_radius

# Largest icon radius by object count, so that 2-3 icons fit side by side in 32x32 without hiding each other.
MAX_RADIUS_BY_COUNT = {1: MAX_RADIUS, 2: 8.0, 3: 6.5}
OBJECT_COUNT_PROBS = (0.5, 0.3, 0.2)  # 1, 2, 3 objects


def sample_scene(rng: np.random.Generator, num_objects: int | None = None) -> dict:
    """One scene: `{"objects": [{"class", "radius", "prominence", "x", "y"}], "setting", "space"}`.

    Objects have distinct classes; positions avoid heavy overlap (centres at least 0.9 x the sum of radii apart
    when possible). Prominence is a strictly increasing function of radius.
    """
    if num_objects is None:
        num_objects = int(rng.choice([1, 2, 3], p=OBJECT_COUNT_PROBS))
    if num_objects not in MAX_RADIUS_BY_COUNT:
        raise ValueError(f"`num_objects` must be 1, 2 or 3, got {num_objects}.")
    classes = rng.choice(len(CLASS_NAMES), size=num_objects, replace=False)
    max_r = MAX_RADIUS_BY_COUNT[num_objects]
    objects: list[dict] = []
    for k in classes:
        radius = float(rng.uniform(MIN_RADIUS, max_r))
        for _ in range(50):
            lo, hi = (radius * 0.8) / 32, 1 - (radius * 0.8) / 32
            x, y = rng.uniform(lo, hi, 2)
            if all(np.hypot((x - o["x"]) * 32, (y - o["y"]) * 32) >= 0.9 * (radius + o["radius"]) for o in objects):
                break
        objects.append(
            {
                "class": CLASS_NAMES[k],
                "radius": radius,
                "prominence": prominence_from_radius(radius),
                "x": float(x),
                "y": float(y),
            }
        )
    setting = "indoor" if rng.random() < 0.5 else "outdoor"
    space = str(rng.choice(INDOOR_SPACES)) if setting == "indoor" else "open"
    return {"objects": objects, "setting": setting, "space": space}
