"""`evaluate` module: IIS (win-rate), computed by `diffusers_sonify.evaluation.image_image_similarity`.

Load it from the package: `evaluate.load(diffusers_sonify.evaluation.evaluate_module_path("iis"))`.
"""

import evaluate
import numpy as np

from diffusers_sonify.evaluation import image_image_similarity
from diffusers_sonify.evaluation.evaluate_support import paired_metric_info

_DESCRIPTION = """
Image-image similarity (AudioToken, SonicDiffusion): for each generated image, the fraction of distractor
references less similar to it than its own sound's reference image. Chance 0.5, perfect 1.0.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions: generated-image features `(N, d)`.
    references: features of each sound's reference image `(N, d)`.
Returns:
    {"iis": value}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Iis(evaluate.Metric):
    def _info(self):
        return paired_metric_info(_DESCRIPTION, _KWARGS_DESCRIPTION)

    def _compute(self, predictions, references):
        value = image_image_similarity(np.asarray(predictions), np.asarray(references))
        return {"iis": value}
