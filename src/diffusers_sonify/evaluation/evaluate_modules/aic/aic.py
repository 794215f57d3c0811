"""`evaluate` module: AIC, computed by `diffusers_sonify.evaluation.audio_image_content`.

Load it from the package: `evaluate.load(diffusers_sonify.evaluation.evaluate_module_path("aic"))`.
"""

import evaluate
import numpy as np

from diffusers_sonify.evaluation import audio_image_content
from diffusers_sonify.evaluation.evaluate_support import paired_metric_info

_DESCRIPTION = (
    """Audio-image content (AudioToken): zero-shot class accuracy of generated images against their sounds' labels."""
)

_KWARGS_DESCRIPTION = """
 Args:     predictions: per-image class scores `(N, C)` (classifier logits or zero-shot similarities).
references: the class index of each sound `(N,)`. Returns:     {"aic": value}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Aic(evaluate.Metric):
    def _info(self):
        return paired_metric_info(_DESCRIPTION, _KWARGS_DESCRIPTION, references="label")

    def _compute(self, predictions, references):
        value = audio_image_content(np.asarray(predictions), references)
        return {"aic": value}
