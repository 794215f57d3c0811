"""The toy world: a procedural, seed-deterministic world where every part of the system runs and learning is
measurable on a CPU (the embedded default behind `make demo`).

* `world`: sound-source classes, synthesisers, icon colours/shapes, wordings;
* `scenes` / `render`: scene sampling and drawing; `corpora`: the unpaired image and audio corpora;
* `describer`: [`ToySceneDescriber`], the VLM stand-in; `parser`: [`parse_scene`] measures generated images;
* `sonify`: loudness / reverb / mixing for soundtracks and evaluation sounds; `evaluation`: held-out sounds and
  metrics; `components`: the toy pipeline components of the recipe (see RECIPE.md).
"""

from .corpora import (
    corpus_clip_seed,
    eval_clip_seed,
    image_corpus_rows,
    make_audio_corpus,
    make_image_corpus,
)
from .describer import ToySceneDescriber
from .evaluation import (
    EvalSound,
    class_accuracy,
    evaluate_parsed,
    interpolation_inversions,
    loudness_area_spearman,
    make_eval_sounds,
    mixing_both_present,
    pairing_accuracy,
    reverb_background_accuracy,
)
from .parser import ParsedScene, parse_scene, parse_scenes
from .render import render_scene
from .scenes import sample_scene
from .world import (
    CLASS_NAMES,
    CLASSES,
    SAMPLING_RATE,
    SourceClass,
    prominence_from_radius,
    radius_from_prominence,
    synthesize,
)

__all__ = [
    "CLASS_NAMES",
    "CLASSES",
    "EvalSound",
    "ParsedScene",
    "SAMPLING_RATE",
    "SourceClass",
    "ToySceneDescriber",
    "class_accuracy",
    "corpus_clip_seed",
    "eval_clip_seed",
    "evaluate_parsed",
    "image_corpus_rows",
    "interpolation_inversions",
    "loudness_area_spearman",
    "make_audio_corpus",
    "make_eval_sounds",
    "make_image_corpus",
    "mixing_both_present",
    "pairing_accuracy",
    "parse_scene",
    "parse_scenes",
    "prominence_from_radius",
    "radius_from_prominence",
    "render_scene",
    "reverb_background_accuracy",
    "sample_scene",
    "synthesize",
]
