"""What every `evaluate` module in `evaluate_modules/` shares: its `MetricInfo` over paired columns."""

from __future__ import annotations

CITATION = "diffusers-sonify, src/diffusers_sonify/evaluation/metrics.py (definitions and sources in its docstring)"


def paired_metric_info(description: str, inputs_description: str, references: str = "vector"):
    """`evaluate.MetricInfo` for `predictions` (one feature vector per row) against `references` (`"vector"`: one
    vector per row; `"label"`: one integer class per row)."""
    import datasets
    import evaluate

    vector = datasets.Sequence(datasets.Value("float64"))
    reference = {"vector": vector, "label": datasets.Value("int64")}[references]
    return evaluate.MetricInfo(
        description=description,
        citation=CITATION,
        inputs_description=inputs_description,
        features=datasets.Features({"predictions": vector, "references": reference}),
    )
