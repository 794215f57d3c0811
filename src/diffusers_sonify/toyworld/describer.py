"""`ToySceneDescriber`: the toy world's stand-in for the VLM describer.

It reads the image corpus's scene metadata (what a perfect VLM would see) and returns the same columns the VLM
describer returns, so the rest of the builder (retrieval, loudness, reverb, mixing) runs unchanged.
"""

from __future__ import annotations

import json
import zlib

from .world import CLASS_BY_NAME, distance_from_prominence

REQUIRED_COLUMNS = ("objects", "setting", "space")


class ToySceneDescriber:
    """Describe toy scenes from their metadata columns.

    `describe(batch)` needs the image corpus columns `objects`, `setting` and `space` in `batch` (the `image`
    column is ignored: the metadata is the ground truth a VLM would approximate). The sound query of each object
    is one of its class's `sound_queries`, picked deterministically from the object's name and position.
    """

    model_id = "toyworld/scene-metadata"
    prompt_version = "toyworld-1"

    def describe(self, batch: dict) -> dict:
        """Batched: `batch` maps column names to lists. Returns `sound_sources`, `scene`, `description_raw`,
        `skip_reason` (one entry per row)."""
        missing = [c for c in REQUIRED_COLUMNS if c not in batch]
        if missing:
            raise ValueError(
                f"ToySceneDescriber needs the image corpus columns {REQUIRED_COLUMNS}; the batch lacks {missing}. "
                "Keep them when loading the toy image corpus (do not remove_columns them)."
            )
        out = {"sound_sources": [], "scene": [], "description_raw": [], "skip_reason": []}
        for objects, setting, space in zip(batch["objects"], batch["setting"], batch["space"]):
            sources = []
            for obj in objects:
                queries = CLASS_BY_NAME[obj["class"]].sound_queries
                key = f"{obj['name']}|{obj['x']:.4f}|{obj['y']:.4f}".encode()
                prominence = round(float(obj["prominence"]), 4)
                sources.append(
                    {
                        "name": obj["name"],
                        "sound": queries[zlib.crc32(key) % len(queries)],
                        "prominence": prominence,
                        "distance": distance_from_prominence(prominence),
                    }
                )
            scene = {"setting": setting, "space": space}
            out["sound_sources"].append(sources)
            out["scene"].append(scene)
            out["description_raw"].append(json.dumps({"sound_sources": sources, "scene": scene}))
            out["skip_reason"].append(None)
        return out
