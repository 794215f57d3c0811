"""`evaluate` module: AIS (win-rate), computed by `diffusers_sonify.evaluation.audio_image_similarity`.

Load it from the package: `evaluate.load(diffusers_sonify.evaluation.evaluate_module_path("ais"))`.
"""

import evaluate
import numpy as np

from diffusers_sonify.evaluation import audio_image_similarity
from diffusers_sonify.evaluation.evaluate_support import paired_metric_info

_DESCRIPTION = """
Audio-image similarity as AudioToken (arXiv:2305.13050) and SonicDiffusion (arXiv:2405.00878) compute it: for each
image, the fraction of distractor sounds (the other sounds of the set) less similar to it than its own sound.
Chance 0.5, perfect 1.0.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions: generated-image embeddings `(N, d)` in a joint audio-image space.
    references: embeddings of the sounds they were generated from `(N, d)`, same space and order.
Returns:
    {"ais": value}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Ais(evaluate.Metric):
    def _info(self):
        return paired_metric_info(_DESCRIPTION, _KWARGS_DESCRIPTION)

    def _compute(self, predictions, references):
        value = audio_image_similarity(np.asarray(predictions), np.asarray(references))
        return {"ais": value}
