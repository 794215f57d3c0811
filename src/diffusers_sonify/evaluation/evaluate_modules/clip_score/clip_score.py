"""`evaluate` module: CLIP score, computed by `diffusers_sonify.evaluation.clip_score`.

Load it from the package: `evaluate.load(diffusers_sonify.evaluation.evaluate_module_path("clip_score"))`.
"""

import datasets
import evaluate
import numpy as np

from diffusers_sonify.evaluation import clip_score

_DESCRIPTION = """
CLIP score (Hessel et al., 2021, arXiv:2104.08718; torchmetrics convention): mean of 100 * max(cos(image, text),
0).
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions: CLIP image embeddings `(N, d)`.
    references: CLIP text embeddings of each image's label or caption `(N, d)`.
Returns:
    {"clip_score": value}
"""

_CITATION = "diffusers-sonify, src/diffusers_sonify/evaluation/metrics.py (definitions and sources in its docstring)"


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class ClipScore(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": datasets.Sequence(datasets.Value("float64")),
                    "references": datasets.Sequence(datasets.Value("float64")),
                }
            ),
        )

    def _compute(self, predictions, references):
        value = clip_score(np.asarray(predictions), np.asarray(references))
        return {"clip_score": value}
