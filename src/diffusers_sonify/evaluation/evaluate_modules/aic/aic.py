"""`evaluate` module: AIC, computed by `diffusers_sonify.evaluation.audio_image_content`.

Load it from the package: `evaluate.load(diffusers_sonify.evaluation.evaluate_module_path("aic"))`.
"""

import datasets
import evaluate
import numpy as np

from diffusers_sonify.evaluation import audio_image_content

_DESCRIPTION = (
    """Audio-image content (AudioToken): zero-shot class accuracy of generated images against their sounds' labels."""
)

_KWARGS_DESCRIPTION = """
 Args:     predictions: per-image class scores `(N, C)` (classifier logits or zero-shot similarities).
references: the class index of each sound `(N,)`. Returns:     {"aic": value}
"""

_CITATION = "diffusers-sonify, src/diffusers_sonify/evaluation/metrics.py (definitions and sources in its docstring)"


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Aic(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": datasets.Sequence(datasets.Value("float64")),
                    "references": datasets.Value("int64"),
                }
            ),
        )

    def _compute(self, predictions, references):
        value = audio_image_content(np.asarray(predictions), references)
        return {"aic": value}
