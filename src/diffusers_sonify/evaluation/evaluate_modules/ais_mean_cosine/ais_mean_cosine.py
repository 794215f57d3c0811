"""`evaluate` module: AIS (mean cosine, MACS),
computed by `diffusers_sonify.evaluation.audio_image_similarity_mean_cosine`.

Load it from the package: `evaluate.load(diffusers_sonify.evaluation.evaluate_module_path("ais_mean_cosine"))`.
"""

import evaluate
import numpy as np

from diffusers_sonify.evaluation import audio_image_similarity_mean_cosine
from diffusers_sonify.evaluation.evaluate_support import paired_metric_info

_DESCRIPTION = """
The mean-cosine AIS variant that MACS (arXiv:2503.10287) reports under the name AIS: mean cosine of each image with
its own sound; `zscore=True` standardises each against the image's distractor cosines. Not on the win-rate scale.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions: generated-image embeddings `(N, d)` in a joint audio-image space.
    references: embeddings of their sounds `(N, d)`.
Returns:
    {"ais_mean_cosine": value}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class AisMeanCosine(evaluate.Metric):
    def _info(self):
        return paired_metric_info(_DESCRIPTION, _KWARGS_DESCRIPTION)

    def _compute(self, predictions, references, zscore=False):
        value = audio_image_similarity_mean_cosine(np.asarray(predictions), np.asarray(references), zscore=zscore)
        return {"ais_mean_cosine": value}
