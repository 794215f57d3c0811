"""The build report: counts, skipped rows with reasons, clip reuse, which processes did the work."""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path


def reason_category(reason: str) -> str:
    """`"corrupt image (photo.jpg): OSError: ..."` -> `"corrupt image"`: the part before the first colon, without
    the file name."""
    return re.sub(r"\s*\(.*$", "", reason.split(":", 1)[0]).strip()


@dataclass
class BuildReport:
    """What a build did. Saved as `build_report.json` next to the data and summarised in the dataset card."""

    num_images: int = 0
    num_rows: int = 0
    skipped: list[dict] = field(default_factory=list)  # {"image_id", "source" (file name or None), "reason"}
    num_clips: int = 0
    invalid_clips: list[dict] = field(default_factory=list)  # {"clip_id", "source", "reason"}
    ignored_audio_files: list[dict] = field(default_factory=list)  # {"file", "reason"}: `audiofolder:` non-audio
    dropped_sources: int = 0
    unmatched_sources: int = 0
    distinct_clips_used: int = 0
    max_clip_uses: int = 0
    limited_rows: int = 0  # rows whose loudness the true-peak limiter changed
    max_limiter_lu: float = 0.0  # the largest such change (LU, <= 0)
    describe_workers: dict = field(default_factory=dict)  # rank -> {"pid", "shards"}
    stage_seconds: dict = field(default_factory=dict)
    cached_stages: list[str] = field(default_factory=list)

    @property
    def num_skipped(self) -> int:
        return len(self.skipped)

    def skip_counts(self) -> dict[str, int]:
        return dict(Counter(reason_category(s["reason"]) for s in self.skipped).most_common())

    def to_dict(self) -> dict:
        out = asdict(self)
        out["num_skipped"] = self.num_skipped
        out["skip_counts"] = self.skip_counts()
        return out

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True))
