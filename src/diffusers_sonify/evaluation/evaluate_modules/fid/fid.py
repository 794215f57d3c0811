"""`evaluate` module: FID, computed by `diffusers_sonify.evaluation.fid_from_features`.

Load it from the package: `evaluate.load(diffusers_sonify.evaluation.evaluate_module_path("fid"))`.
"""

import datasets
import evaluate
import numpy as np

from diffusers_sonify.evaluation import fid_from_features

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

_CITATION = "diffusers-sonify, src/diffusers_sonify/evaluation/metrics.py (definitions and sources in its docstring)"


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Fid(evaluate.Metric):
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
        value = fid_from_features(np.asarray(references), np.asarray(predictions))
        return {"fid": value}
