"""The toy world's vocabulary: sound-source classes, their synthesisers, icons and wordings.

Every class has a saturated colour with its own hue (60 degrees apart) and a distinct filled shape, so the scene
parser can identify it from colour alone even in blurred, noisy generations. Backgrounds are desaturated: a dark
two-tone room (indoor) or a bright sky over ground (outdoor).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.signal import lfilter

SAMPLING_RATE = 16_000
CLIP_SECONDS = 2.0
IMAGE_SIZE = 32
# Icon "radius" in pixels: every shape is scaled to cover about pi * r^2 pixels, so area follows size alone.
MIN_RADIUS = 2.5
MAX_RADIUS = 12.0


@dataclass(frozen=True)
class SourceClass:
    """One sound-source class.

    Attributes:
        name: short identifier (`"bell"`).
        colour: RGB of the icon (saturated).
        shape: icon shape drawn by `render.py`.
        image_names: how an image describer names the pictured object (image side).
        sound_queries: short sound descriptions the describer uses as retrieval queries.
        audio_labels: labels of the audio corpus, worded differently from the image side.
    """

    name: str
    colour: tuple[int, int, int]
    shape: str
    image_names: tuple[str, ...]
    sound_queries: tuple[str, ...]
    audio_labels: tuple[str, ...]


CLASSES: tuple[SourceClass, ...] = (
    SourceClass(
        "bell",
        (235, 30, 30),
        "triangle",
        ("a church bell", "a brass bell", "a hanging bell"),
        ("a church bell chiming", "the clang of a bell", "a bell tolling"),
        ("bell ringing", "ding dong of bells", "chime struck"),
    ),
    SourceClass(
        "drum",
        (230, 220, 25),
        "square",
        ("a bass drum", "a drum kit", "a big drum"),
        ("someone beating a drum", "drum thumps", "a drummer playing"),
        ("percussion beat", "drumming", "drum hits"),
    ),
    SourceClass(
        "bird",
        (30, 215, 30),
        "cross",
        ("a small songbird", "a sparrow", "a bird on a branch"),
        ("a bird singing", "birdsong chirps", "a bird tweeting"),
        ("birds chirping", "tweeting bird call", "songbird singing"),
    ),
    SourceClass(
        "rain",
        (25, 215, 225),
        "drop",
        ("a rain cloud", "a rainstorm", "falling raindrops"),
        ("rain pattering", "the sound of rainfall", "raindrops falling"),
        ("rain shower", "heavy downpour", "rainfall noise"),
    ),
    SourceClass(
        "engine",
        (40, 60, 235),
        "circle",
        ("a car engine", "a motor", "a diesel engine"),
        ("an engine rumbling", "a motor running", "an idling engine"),
        ("engine idling", "motor rumble", "car engine running"),
    ),
    SourceClass(
        "siren",
        (225, 35, 220),
        "diamond",
        ("a police siren", "an ambulance light", "a fire alarm siren"),
        ("a siren wailing", "the wail of a police siren", "an emergency siren"),
        ("siren wail", "ambulance siren", "police siren sound"),
    ),
)

CLASS_NAMES: tuple[str, ...] = tuple(c.name for c in CLASSES)
CLASS_BY_NAME: dict[str, SourceClass] = {c.name: c for c in CLASSES}

# Backgrounds: (upper colour, lower colour, fraction of the height that is upper). Desaturated on purpose.
BACKGROUNDS = {
    "indoor": ((62, 53, 47), (38, 33, 30), 0.68),  # wall over floor, dark
    "outdoor": ((188, 206, 224), (150, 164, 132), 0.55),  # sky over ground, bright
}
SETTINGS = tuple(BACKGROUNDS)
# The acoustic space a describer reports: outdoor scenes are open (dry), rooms differ in size (reverberant).
INDOOR_SPACES = ("medium", "large")


def class_index(name: str) -> int:
    """Index of class `name` in `CLASS_NAMES`, with a clear error for unknown names."""
    if name not in CLASS_BY_NAME:
        raise ValueError(f"Unknown toy-world class {name!r}; expected one of {CLASS_NAMES}.")
    return CLASS_NAMES.index(name)


def prominence_from_radius(radius: float) -> float:
    """Prominence in [0, 1], a strictly increasing function of icon size."""
    return float(np.clip((radius - MIN_RADIUS) / (MAX_RADIUS - MIN_RADIUS), 0.0, 1.0))


def radius_from_prominence(prominence: float) -> float:
    """Inverse of `prominence_from_radius`."""
    return MIN_RADIUS + float(np.clip(prominence, 0.0, 1.0)) * (MAX_RADIUS - MIN_RADIUS)


def distance_from_prominence(prominence: float) -> str:
    """Coarse distance word: big icons are near."""
    return "near" if prominence >= 0.6 else "mid" if prominence >= 0.3 else "far"


# ----------------------------------------------------------------------------------------------- synthesisers
def _time(n: int) -> np.ndarray:
    return np.arange(n) / SAMPLING_RATE


def _bell(rng: np.random.Generator, n: int) -> np.ndarray:
    t = _time(n)
    out = np.zeros(n)
    f0 = rng.uniform(300, 700)
    for onset in np.sort(rng.uniform(0, 0.6 * n / SAMPLING_RATE, rng.integers(1, 3))):
        tt = np.clip(t - onset, 0, None)
        env = (t >= onset) * np.exp(-tt * rng.uniform(1.5, 3.0))
        for ratio, amp in ((1.0, 1.0), (2.76, 0.6), (5.40, 0.35), (8.93, 0.2)):  # inharmonic bell partials
            out += amp * env * np.sin(2 * np.pi * f0 * ratio * tt * rng.uniform(0.99, 1.01))
    return out


def _drum(rng: np.random.Generator, n: int) -> np.ndarray:
    t = _time(n)
    out = np.zeros(n)
    period = rng.uniform(0.2, 0.45)
    f_hi, f_lo = rng.uniform(120, 200), rng.uniform(45, 70)
    for onset in np.arange(rng.uniform(0, 0.1), n / SAMPLING_RATE, period):
        tt = np.clip(t - onset, 0, None)
        on = t >= onset
        freq_phase = 2 * np.pi * (f_lo * tt + (f_hi - f_lo) * (1 - np.exp(-tt * 30)) / 30)  # pitch drops
        out += on * np.exp(-tt * 14) * np.sin(freq_phase)
        out += on * np.exp(-tt * 120) * rng.normal(0, 0.3, n)
    return out


def _siren(rng: np.random.Generator, n: int) -> np.ndarray:
    t = _time(n)
    centre, depth, rate = rng.uniform(800, 1100), rng.uniform(250, 400), rng.uniform(0.6, 1.6)
    freq = centre + depth * np.sin(2 * np.pi * rate * t + rng.uniform(0, 2 * np.pi))
    phase = 2 * np.pi * np.cumsum(freq) / SAMPLING_RATE
    return np.sin(phase) + 0.3 * np.sin(2 * phase) + 0.15 * np.sin(3 * phase)


def _bird(rng: np.random.Generator, n: int) -> np.ndarray:
    out = np.zeros(n)
    onset = rng.uniform(0, 0.1)
    while onset < n / SAMPLING_RATE - 0.1:
        length = rng.uniform(0.04, 0.1)
        m = int(length * SAMPLING_RATE)
        tt = np.arange(m) / SAMPLING_RATE
        f_start, f_end = rng.uniform(2500, 5500, 2)
        freq = f_start + (f_end - f_start) * tt / length
        chirp = np.sin(2 * np.pi * np.cumsum(freq) / SAMPLING_RATE) * np.hanning(m)
        start = int(onset * SAMPLING_RATE)
        out[start : start + m] += chirp[: n - start]
        onset += length + rng.uniform(0.02, 0.2)
    return out


def _rain(rng: np.random.Generator, n: int) -> np.ndarray:
    noise = rng.normal(0, 1, n)
    # one-pole low-pass then a gentle high-pass: a hiss centred in the low kHz
    alpha = rng.uniform(0.3, 0.6)
    low = lfilter([1 - alpha], [1, -alpha], noise)
    out = 0.5 * (low - np.concatenate([[0.0], low[:-1]]) * 0.5)
    for pos in rng.integers(0, n - 200, rng.integers(20, 60)):  # droplets: short decaying clicks
        m = 200
        out[pos : pos + m] += (
            rng.uniform(0.5, 1.5)
            * np.exp(-np.arange(m) / 25)
            * np.sin(2 * np.pi * rng.uniform(1500, 4000) * np.arange(m) / SAMPLING_RATE)
        )
    return out


def _engine(rng: np.random.Generator, n: int) -> np.ndarray:
    t = _time(n)
    f0 = rng.uniform(40, 90) * (1 + 0.03 * np.sin(2 * np.pi * rng.uniform(0.3, 1.0) * t))
    phase = 2 * np.pi * np.cumsum(f0) / SAMPLING_RATE
    out = sum(np.sin(k * phase) / k for k in range(1, 12))  # sawtooth-like buzz
    am = 1 + 0.4 * np.sin(2 * np.pi * rng.uniform(8, 25) * t)  # cylinder firing modulation
    return out * am + 0.05 * rng.normal(0, 1, n)


_SYNTHS = {"bell": _bell, "drum": _drum, "siren": _siren, "bird": _bird, "rain": _rain, "engine": _engine}


def synthesize(name: str, seed: int, seconds: float = CLIP_SECONDS) -> np.ndarray:
    """A clip of class `name`, deterministic from `seed`: mono float32 at 16 kHz, peak-normalised to 0.5.

    Args:
        name (`str`): one of `CLASS_NAMES`.
        seed (`int`): the clip's seed; the same seed always gives the same samples.
        seconds (`float`): duration.

    Returns:
        `np.ndarray` of shape `(round(seconds * 16000),)`.
    """
    class_index(name)
    if seconds <= 0:
        raise ValueError(f"`seconds` must be positive, got {seconds}.")
    rng = np.random.default_rng([seed, class_index(name)])
    n = int(round(seconds * SAMPLING_RATE))
    clip = _SYNTHS[name](rng, n)
    fade = min(n // 2, int(0.01 * SAMPLING_RATE))
    clip[:fade] *= np.linspace(0, 1, fade)
    clip[n - fade :] *= np.linspace(1, 0, fade)
    return (0.5 * clip / (np.abs(clip).max() + 1e-9)).astype(np.float32)
