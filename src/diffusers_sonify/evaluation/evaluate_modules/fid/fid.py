"""`evaluate` module: FID, computed by `diffusers_sonify.evaluation.fid_from_features`.

Load it from the package: `evaluate.load(diffusers_sonify.evaluation.evaluate_module_path("fid"))`.
"""

import evaluate
import numpy as np

from diffusers_sonify.evaluation import fid_from_features
from diffusers_sonify.evaluation.evaluate_support import paired_metric_info

_DESCRIPTION = """
Fréchet distance between Gaussians fitted to two feature sets (Heusel et al., 2017, arXiv:1706.08500), through
torchmetrics. Features come from the extractor of your choice (e.g.
`diffusers_sonify.evaluation.scorers.InceptionFeatures`). `evaluate` pairs the columns, so pass equally many
generated and real features.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions: generated-image features `(N, d)`.
    references: real-image features `(N, d)` from the same extractor.
Returns:
    {"fid": value}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Fid(evaluate.Metric):
    def _info(self):
        return paired_metric_info(_DESCRIPTION, _KWARGS_DESCRIPTION)

    def _compute(self, predictions, references):
        value = fid_from_features(np.asarray(references), np.asarray(predictions))
        return {"fid": value}
