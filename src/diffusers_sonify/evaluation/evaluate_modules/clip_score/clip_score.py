"""`evaluate` module: CLIP score, computed by `diffusers_sonify.evaluation.clip_score`.

Load it from the package: `evaluate.load(diffusers_sonify.evaluation.evaluate_module_path("clip_score"))`.
"""

import evaluate
import numpy as np

from diffusers_sonify.evaluation import clip_score
from diffusers_sonify.evaluation.evaluate_support import paired_metric_info

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


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class ClipScore(evaluate.Metric):
    def _info(self):
        return paired_metric_info(_DESCRIPTION, _KWARGS_DESCRIPTION)

    def _compute(self, predictions, references):
        value = clip_score(np.asarray(predictions), np.asarray(references))
        return {"clip_score": value}
