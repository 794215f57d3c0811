"""`make demo` runs end to end and leaves its report."""

from __future__ import annotations

import json

from PIL import Image

from diffusers_sonify import demo


def test_demo_writes_report_grid_and_metrics(tmp_path):
    metrics = demo.main(["--output_dir", str(tmp_path), "--steps", "2"])
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved == metrics and saved["num_eval_images"] == 9 and saved["trained"] is False
    assert "RANDOM weights" in (tmp_path / "report.md").read_text()
    assert Image.open(tmp_path / "grid.png").size == (4 * 32 * 4, 2 * 32 * 4)
