"""`evaluate` module: KID, computed by `diffusers_sonify.evaluation.kid_from_features`.

Load it from the package: `evaluate.load(diffusers_sonify.evaluation.evaluate_module_path("kid"))`.
"""

import evaluate
import numpy as np

from diffusers_sonify.evaluation import kid_from_features
from diffusers_sonify.evaluation.evaluate_support import paired_metric_info

_DESCRIPTION = """
Kernel Inception Distance (Bińkowski et al., 2018, arXiv:1801.01401): unbiased MMD^2 with a cubic polynomial kernel
over random subsets, through torchmetrics.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions: generated-image features `(N, d)`.
    references: real-image features `(N, d)`.
Returns:
    {"kid_mean": mean, "kid_std": std}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Kid(evaluate.Metric):
    def _info(self):
        return paired_metric_info(_DESCRIPTION, _KWARGS_DESCRIPTION)

    def _compute(self, predictions, references, subset_size=None, subsets=100, seed=0):
        mean, std = kid_from_features(
            np.asarray(references), np.asarray(predictions), subset_size=subset_size, subsets=subsets, seed=seed
        )
        return {"kid_mean": mean, "kid_std": std}
