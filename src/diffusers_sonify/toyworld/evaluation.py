"""Held-out evaluation sounds and the metrics computed from scene-parser outputs.

Every evaluation clip is synthesised from seeds disjoint from the audio corpus (`eval_clip_seed`), so the model
is tested on sounds it never heard.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np
from scipy.stats import spearmanr

from .corpora import eval_clip_seed
from .parser import ParsedScene
from .render import SHAPE_NAMES
from .sonify import RT60_BY_SPACE, apply_reverb, mix, set_loudness
from .world import CLASS_NAMES, synthesize

DEFAULT_LOUDNESS_LEVELS = (-40.0, -35.0, -30.0, -25.0, -22.0)
SINGLE_LUFS = -26.0  # loud enough to picture a large icon, inside LUFS_RANGE
# each source of a two-source mixture: the level of a 2-object scene's largest icon (radius 8: -30.4 LUFS; its
# middle radius is heard at -36 LUFS, where fewer mixtures come out with both sources: RECIPE.md, d34)
MIX_LUFS = -30.0
SWEEP_WEIGHTS = (0.0, 0.15, 0.3, 0.45, 0.55, 0.7, 0.85, 1.0)


@dataclass
class EvalSound:
    """One held-out evaluation sound and what a correct picture of it shows.

    Attributes:
        kind: `"single"`, `"mixture"`, `"loudness"`, `"reverb"` or `"sweep"`.
        audio: mono float32 clip at 16 kHz.
        classes: the source classes in the clip (sweep: `[A, B]`).
        setting: the acoustic space the clip implies: `"indoor"` (reverberant) or `"outdoor"` (dry).
        lufs: the level the (first) source was set to.
        group: sounds that belong together (a loudness series or a sweep share a group id).
        weight: sweep position (0: only A, 1: only B); 0 otherwise.
    """

    kind: str
    audio: np.ndarray
    classes: list[str]
    setting: str = "outdoor"
    lufs: float = SINGLE_LUFS
    group: int = 0
    weight: float = 0.0
    meta: dict = field(default_factory=dict)


class _Clips:
    def __init__(self, seed: int):
        self.seed, self.index = seed, 0

    def __call__(self, name: str) -> np.ndarray:
        clip = synthesize(name, eval_clip_seed(self.seed, self.index))
        self.index += 1
        return clip


def make_eval_sounds(
    seed: int = 0,
    singles_per_class: int = 8,
    mixtures_per_pair: int = 3,
    loudness_series_per_class: int = 2,
    loudness_levels: tuple[float, ...] = DEFAULT_LOUDNESS_LEVELS,
    reverb_pairs_per_class: int = 2,
    num_sweeps: int = 4,
    sweep_weights: tuple[float, ...] = SWEEP_WEIGHTS,
    indoor_space: str = "large",
) -> list[EvalSound]:
    """The held-out evaluation set (defaults: 48 singles, 45 mixtures, 60 loudness, 24 reverb, 32 sweep = 209).

    * singles: one dry source at `SINGLE_LUFS` -> expect its class (outdoor);
    * mixtures: two dry sources of different classes, each at `MIX_LUFS` -> expect both;
    * loudness: one dry clip at each of `loudness_levels` (one group per series) -> expect area to rise;
    * reverb: the same clip dry (expect outdoor) and reverberated with `indoor_space`'s RT60 (expect indoor);
    * sweep: clips A and B mixed with gains `(1 - w, w)` over `sweep_weights` -> class-B area fraction rises.
    """
    rng = np.random.default_rng([seed, 3])
    clips = _Clips(seed)
    out: list[EvalSound] = []
    for name in CLASS_NAMES:
        for _ in range(singles_per_class):
            out.append(EvalSound("single", set_loudness(clips(name), SINGLE_LUFS), [name]))
    for a, b in itertools.combinations(CLASS_NAMES, 2):
        for _ in range(mixtures_per_pair):
            audio = mix([set_loudness(clips(a), MIX_LUFS), set_loudness(clips(b), MIX_LUFS)])
            out.append(EvalSound("mixture", audio, [a, b], lufs=MIX_LUFS))
    group = 0
    for name in CLASS_NAMES:
        for _ in range(loudness_series_per_class):
            clip = clips(name)
            for level in loudness_levels:
                out.append(EvalSound("loudness", set_loudness(clip, level), [name], lufs=level, group=group))
            group += 1
    rt60 = RT60_BY_SPACE[indoor_space]
    for name in CLASS_NAMES:
        for _ in range(reverb_pairs_per_class):
            dry = set_loudness(clips(name), SINGLE_LUFS)
            out.append(EvalSound("reverb", dry, [name], "outdoor", group=group))
            wet = set_loudness(apply_reverb(dry, rt60, int(rng.integers(2**31))), SINGLE_LUFS)
            out.append(EvalSound("reverb", wet, [name], "indoor", group=group))
            group += 1
    pairs = list(itertools.combinations(CLASS_NAMES, 2))
    for k in rng.permutation(len(pairs))[:num_sweeps]:
        a, b = pairs[k]
        clip_a, clip_b = set_loudness(clips(a), SINGLE_LUFS), set_loudness(clips(b), SINGLE_LUFS)
        for w in sweep_weights:
            audio = mix([(1 - w) * clip_a, w * clip_b])
            out.append(EvalSound("sweep", audio, [a, b], group=group, weight=float(w)))
        group += 1
    return out


# ----------------------------------------------------------------------------------------------- metrics
def class_accuracy(parsed: list[ParsedScene], expected: list[str]) -> float:
    """Fraction of images whose dominant (largest present) class is the expected one."""
    _same_length(parsed, expected)
    return float(np.mean([p.dominant == e for p, e in zip(parsed, expected)]))


def shape_accuracy(parsed: list[ParsedScene], expected: list[str]) -> float:
    """Fraction of images whose largest object has the expected class's icon shape, whatever its colour."""
    _same_length(parsed, expected)
    shapes = [SHAPE_NAMES[CLASS_NAMES.index(e)] for e in expected]
    return float(np.mean([p.shape == s for p, s in zip(parsed, shapes)]))


def exactly_one_rate(parsed: list[ParsedScene]) -> float:
    """Fraction of images that show exactly one object."""
    if not parsed:
        raise ValueError("No parsed images; pass at least one.")
    return float(np.mean([p.count == 1 for p in parsed]))


def background_noise(parsed: list[ParsedScene]) -> float:
    """Mean background noise (std of background pixels around their row median, [0, 1] scale) over images."""
    if not parsed:
        raise ValueError("No parsed images; pass at least one.")
    return float(np.mean([p.background_noise for p in parsed]))


def mixing_both_present(parsed: list[ParsedScene], expected_pairs: list[tuple[str, str]]) -> float:
    """Fraction of two-source images in which both expected classes are present."""
    _same_length(parsed, expected_pairs)
    return float(np.mean([a in p.present and b in p.present for p, (a, b) in zip(parsed, expected_pairs)]))


def loudness_area_spearman(lufs: list[float], parsed: list[ParsedScene], classes: list[str]) -> float:
    """Spearman correlation between input loudness and the generated area of the sound's class."""
    _same_length(parsed, lufs)
    _same_length(parsed, classes)
    areas = [p.areas.get(c, 0) for p, c in zip(parsed, classes)]
    if np.std(areas) == 0 or np.std(lufs) == 0:
        return 0.0
    return float(spearmanr(lufs, areas).statistic)


def reverb_background_accuracy(parsed: list[ParsedScene], expected_settings: list[str]) -> float:
    """Fraction of images whose background type matches the setting implied by the reverb."""
    _same_length(parsed, expected_settings)
    return float(np.mean([p.background == s for p, s in zip(parsed, expected_settings)]))


def class_b_fraction(parsed: ParsedScene, class_a: str, class_b: str) -> float:
    """Area of B over the area of A and B (0.5 when neither is drawn)."""
    a, b = parsed.areas.get(class_a, 0), parsed.areas.get(class_b, 0)
    return 0.5 if a + b == 0 else b / (a + b)


def interpolation_inversions(fractions) -> int:
    """Number of steps where the class-B fraction falls along a sweep.

    Args:
        fractions: `(steps,)` for one sweep, or `(sweeps, steps)`: then the mean curve over sweeps is checked.
    """
    curve = np.asarray(fractions, dtype=np.float64)
    if curve.ndim == 2:
        curve = curve.mean(axis=0)
    if curve.ndim != 1 or len(curve) < 2:
        raise ValueError(f"`fractions` must be `(steps,)` or `(sweeps, steps)` with >= 2 steps, got {curve.shape}.")
    return int((np.diff(curve) < 0).sum())


def pairing_accuracy(pictured_classes: list[list[str]], retrieved_classes: list[list[str]]) -> float:
    """Fraction of built sound sources whose retrieved clip's class equals the pictured object's class.

    Args:
        pictured_classes: per dataset row, the class of each described object (in source order).
        retrieved_classes: per row, the audio-corpus `category` of the clip retrieved for each source.
    """
    _same_length(pictured_classes, retrieved_classes)
    hits = total = 0
    for row, (pictured, retrieved) in enumerate(zip(pictured_classes, retrieved_classes)):
        if len(pictured) != len(retrieved):
            raise ValueError(f"Row {row}: {len(pictured)} pictured objects but {len(retrieved)} retrieved clips.")
        hits += sum(p == r for p, r in zip(pictured, retrieved))
        total += len(pictured)
    if total == 0:
        raise ValueError("No sound sources to score: `pictured_classes` is empty.")
    return hits / total


def retrieved_in_picture(pictured_classes: list[set[str]], retrieved_classes: list[list[str]]) -> float:
    """Fraction of built sound sources whose retrieved clip's class is pictured in the row's image: the pairing
    accuracy of a describer that may name objects wrongly (a VLM), where [`pairing_accuracy`] assumes every named
    object is the pictured one.

    Args:
        pictured_classes: per dataset row, the classes of the objects in its image (scene metadata).
        retrieved_classes: per row, the audio-corpus `category` of the clip retrieved for each source.
    """
    _same_length(pictured_classes, retrieved_classes)
    hits = sum(c in set(pictured) for pictured, row in zip(pictured_classes, retrieved_classes) for c in row)
    total = sum(len(row) for row in retrieved_classes)
    if total == 0:
        raise ValueError("No sound sources to score: `retrieved_classes` is empty.")
    return hits / total


def evaluate_parsed(sounds: list[EvalSound], parsed: list[ParsedScene]) -> dict:
    """All generation metrics for `make_eval_sounds` outputs and the parsed images generated from them."""
    _same_length(sounds, parsed)
    by_kind: dict[str, list[int]] = {}
    for i, s in enumerate(sounds):
        by_kind.setdefault(s.kind, []).append(i)
    metrics: dict = {}
    if "single" in by_kind:
        idx = by_kind["single"]
        singles, expected = [parsed[i] for i in idx], [sounds[i].classes[0] for i in idx]
        metrics["class_accuracy"] = class_accuracy(singles, expected)
        metrics["shape_accuracy"] = shape_accuracy(singles, expected)
        metrics["exactly_one_rate"] = exactly_one_rate(singles)
    if "mixture" in by_kind:
        idx = by_kind["mixture"]
        metrics["mixing_both_present"] = mixing_both_present(
            [parsed[i] for i in idx], [tuple(sounds[i].classes) for i in idx]
        )
    if "loudness" in by_kind:
        idx = by_kind["loudness"]
        metrics["loudness_area_spearman"] = loudness_area_spearman(
            [sounds[i].lufs for i in idx], [parsed[i] for i in idx], [sounds[i].classes[0] for i in idx]
        )
    if "reverb" in by_kind:
        idx = by_kind["reverb"]
        metrics["reverb_background_accuracy"] = reverb_background_accuracy(
            [parsed[i] for i in idx], [sounds[i].setting for i in idx]
        )
    if "sweep" in by_kind:
        groups: dict[int, list[int]] = {}
        for i in by_kind["sweep"]:
            groups.setdefault(sounds[i].group, []).append(i)
        curves = [
            [class_b_fraction(parsed[i], *sounds[i].classes) for i in sorted(g, key=lambda i: sounds[i].weight)]
            for g in groups.values()
        ]
        metrics["interpolation_inversions"] = interpolation_inversions(curves)
        metrics["interpolation_curve"] = [float(v) for v in np.mean(curves, axis=0)]
    metrics["background_noise"] = background_noise(parsed)
    metrics["num_eval_images"] = len(sounds)
    return metrics


def _same_length(a, b) -> None:
    if len(a) != len(b):
        raise ValueError(f"Got {len(a)} parsed images for {len(b)} expectations; pass one per image.")
