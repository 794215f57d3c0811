"""The field's audio-to-image metrics as functions of already-loaded models and tensors.

Training validation, the CLI (`python -m diffusers_sonify.evaluation`) and the `evaluate` modules all call these.
Every function validates its inputs and says what is wrong before any model runs.

Definitions and sources:

* **FID** (Heusel et al., 2017, arXiv:1706.08500): Fréchet distance between Gaussians fitted to the features of
  two image sets, `|mu_r - mu_g|^2 + Tr(S_r + S_g - 2 (S_r S_g)^(1/2))`, computed by torchmetrics'
  `FrechetInceptionDistance` on features from an injectable extractor (default: the standard FID InceptionV3,
  see `scorers.InceptionFeatures`).
* **KID** (Bińkowski et al., 2018, arXiv:1801.01401): unbiased MMD^2 with the cubic polynomial kernel
  `k(x, y) = (x.y / d + 1)^3`, averaged over random subsets (torchmetrics' `KernelInceptionDistance`).
* **CLIP score** (Hessel et al., 2021, arXiv:2104.08718, torchmetrics convention): `100 * max(cos(E_img, E_txt), 0)`
  averaged over images, with the text being the sound's label or caption.
* **AIS** (audio-image similarity), win-rate form of AudioToken (Yariv et al., 2023, arXiv:2305.13050) and
  SonicDiffusion (Biner et al., 2024, arXiv:2405.00878): for each generated image, the fraction of distractor
  sounds (every other sound of the set) whose audio-image similarity in a joint space is *below* that of the
  sound the image was generated from; averaged over images. Chance is 0.5, perfect is 1.0.
* **AIS, mean-cosine form** (`ais_mean_cosine`): MACS (Zhou et al., AAAI 2026, arXiv:2503.10287) reports under the
  name AIS the mean cosine similarity of each generated image with its own sound in a joint space; with
  `zscore=True` each true-pair cosine is standardised against the image's distractor cosines first
  (`(cos_true - mean(cos_other)) / std(cos_other)`). A different scale from the win-rate AIS: always report which.
* **IIS** (image-image similarity, AudioToken / SonicDiffusion): the win-rate above with image-image similarity
  between each generated image and the reference image of its own sound (the video frame, or here the render of
  the scene), against the other references as distractors.
* **AIC** (audio-image content, AudioToken): zero-shot class accuracy of the generated image against the sound's
  label: the fraction of images whose highest-scoring class is the sound's class.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence

import numpy as np
import PIL.Image
import torch

ImageFeatureFn = Callable[[torch.Tensor], torch.Tensor]


# ----------------------------------------------------------------------------------------------- validation
def images_to_tensor(images, arg: str = "images") -> torch.Tensor:
    """A batch of images as a float tensor `(N, 3, H, W)` in [0, 1], validated.

    Args:
        images: a list of `PIL.Image.Image` (all the same size and mode, `RGB` or `L`), a float array/tensor
            `(N, H, W, 3)` or `(N, 3, H, W)` in [0, 1], or a `uint8` array/tensor in [0, 255].
        arg: the argument name, for error messages.
    """
    if images is None or len(images) == 0:
        raise ValueError(f"`{arg}` is empty; pass at least one image.")
    if isinstance(images, (list, tuple)) and isinstance(images[0], PIL.Image.Image):
        sizes = {im.size for im in images}
        modes = {im.mode for im in images}
        if len(sizes) > 1:
            raise ValueError(f"`{arg}` has images of different sizes {sorted(sizes)}; resize them to one size first.")
        if len(modes) > 1:
            raise ValueError(f"`{arg}` has images of different modes {sorted(modes)}; convert them all to RGB first.")
        (mode,) = modes
        if mode not in ("RGB", "L"):
            raise ValueError(f"`{arg}` has {mode} images; convert them to RGB first.")
        arr = np.stack([np.asarray(im.convert("RGB")) for im in images])
        return torch.from_numpy(arr).permute(0, 3, 1, 2).float() / 255.0
    if isinstance(images, (list, tuple)):
        raise ValueError(f"`{arg}` must be a list of PIL images or one array/tensor, got a list of {type(images[0])}.")
    t = torch.as_tensor(np.asarray(images)) if not isinstance(images, torch.Tensor) else images
    if t.ndim != 4 or 3 not in (t.shape[1], t.shape[-1]):
        raise ValueError(f"`{arg}` must be `(N, 3, H, W)` or `(N, H, W, 3)`, got shape {tuple(t.shape)}.")
    if t.shape[1] != 3:
        t = t.permute(0, 3, 1, 2)
    if t.dtype == torch.uint8:
        return t.float() / 255.0
    t = t.float()
    if t.min() < -1e-3 or t.max() > 1 + 1e-3:
        raise ValueError(f"`{arg}` float values must lie in [0, 1], got [{t.min():.3g}, {t.max():.3g}].")
    return t.clamp(0, 1)


def _check_embeds(a: torch.Tensor, b: torch.Tensor, names: tuple[str, str], min_n: int = 2):
    a, b = torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64)
    for t, name in ((a, names[0]), (b, names[1])):
        if t.ndim != 2:
            raise ValueError(f"`{name}` must be 2-D `(N, dim)`, got shape {tuple(t.shape)}.")
        if len(t) < min_n:
            raise ValueError(f"`{name}` has {len(t)} rows; this metric needs at least {min_n}.")
    if len(a) != len(b):
        raise ValueError(f"`{names[0]}` has {len(a)} rows but `{names[1]}` has {len(b)}; pass one per image.")
    if a.shape[1] != b.shape[1]:
        raise ValueError(
            f"`{names[0]}` ({a.shape[1]}-d) and `{names[1]}` ({b.shape[1]}-d) are not in one space; embed both with "
            "the same joint model."
        )
    return a, b


@torch.no_grad()
def extract_features(feature_fn: ImageFeatureFn, images, batch_size: int = 32, arg: str = "images") -> torch.Tensor:
    """`(N, d)` float64 features of `images` (see [`images_to_tensor`]) by `feature_fn`, in batches."""
    x = images_to_tensor(images, arg)
    feats = [torch.as_tensor(feature_fn(x[i : i + batch_size])) for i in range(0, len(x), batch_size)]
    out = torch.cat(feats).double()
    if out.ndim != 2:
        raise ValueError(f"The feature extractor must return `(N, d)` features, got shape {tuple(out.shape)}.")
    return out


# ----------------------------------------------------------------------------------------------- FID / KID
class _PrecomputedFeatures(torch.nn.Module):
    """Identity 'extractor' so torchmetrics' FID/KID run on features computed once."""

    def __init__(self, num_features: int):
        super().__init__()
        self.num_features = num_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def _check_feature_sets(real: torch.Tensor, fake: torch.Tensor, min_n: int = 2):
    real, fake = torch.as_tensor(real, dtype=torch.float64), torch.as_tensor(fake, dtype=torch.float64)
    for t, name in ((real, "real_features"), (fake, "fake_features")):
        if t.ndim != 2:
            raise ValueError(f"`{name}` must be `(N, d)`, got shape {tuple(t.shape)}.")
        if len(t) < min_n:
            raise ValueError(f"`{name}` has {len(t)} rows; FID/KID need at least {min_n} images per set.")
    if real.shape[1] != fake.shape[1]:
        raise ValueError(f"Real ({real.shape[1]}-d) and fake ({fake.shape[1]}-d) features differ in width.")
    return real, fake


def fid_from_features(real_features, fake_features) -> float:
    """FID between two feature sets `(N_r, d)` and `(N_g, d)` (torchmetrics `FrechetInceptionDistance`)."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    real, fake = _check_feature_sets(real_features, fake_features)
    metric = FrechetInceptionDistance(feature=_PrecomputedFeatures(real.shape[1]))
    metric.update(real, real=True)
    metric.update(fake, real=False)
    return max(float(metric.compute()), 0.0)  # tiny negative values are round-off of an exact 0


def kid_from_features(
    real_features, fake_features, subset_size: int | None = None, subsets: int = 100, seed: int = 0
) -> tuple[float, float]:
    """KID `(mean, std)` between two feature sets (torchmetrics `KernelInceptionDistance`).

    Args:
        subset_size: images per random subset; default `min(1000, N_r, N_g)` (1000 is the paper's size).
        subsets: number of random subsets.
        seed: seeds the subset draws, so the same inputs always give the same number.
    """
    from torchmetrics.image.kid import KernelInceptionDistance

    real, fake = _check_feature_sets(real_features, fake_features)
    size = subset_size or min(1000, len(real), len(fake))
    if size > min(len(real), len(fake)):
        raise ValueError(f"`subset_size` {size} exceeds the smaller set ({min(len(real), len(fake))} images).")
    with warnings.catch_warnings():  # "will save all extracted features": these are already features, in memory
        warnings.filterwarnings("ignore", message=".*will save all extracted features.*")
        metric = KernelInceptionDistance(
            feature=_PrecomputedFeatures(real.shape[1]), subsets=subsets, subset_size=size
        )
    metric.update(real, real=True)
    metric.update(fake, real=False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        mean, std = metric.compute()
    return float(mean), float(std)


def fid_score(real_images, fake_images, feature_fn: ImageFeatureFn | None = None, batch_size: int = 32) -> float:
    """FID between two image sets.

    Args:
        real_images, fake_images: see [`images_to_tensor`]; the two sets may differ in count and size.
        feature_fn: maps `(B, 3, H, W)` in [0, 1] to `(B, d)`; default the standard FID InceptionV3
            ([`scorers.InceptionFeatures`], needs `pip install diffusers-sonify[fid]`).
    """
    if feature_fn is None:
        from .scorers import InceptionFeatures

        feature_fn = InceptionFeatures()
    real = extract_features(feature_fn, real_images, batch_size, "real_images")
    fake = extract_features(feature_fn, fake_images, batch_size, "fake_images")
    return fid_from_features(real, fake)


def kid_score(real_images, fake_images, feature_fn: ImageFeatureFn | None = None, batch_size: int = 32, **kwargs):
    """KID `(mean, std)` between two image sets; see [`fid_score`] and [`kid_from_features`]."""
    if feature_fn is None:
        from .scorers import InceptionFeatures

        feature_fn = InceptionFeatures()
    real = extract_features(feature_fn, real_images, batch_size, "real_images")
    fake = extract_features(feature_fn, fake_images, batch_size, "fake_images")
    return kid_from_features(real, fake, **kwargs)


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """The Fréchet distance of two Gaussians by `scipy.linalg.sqrtm` (the reference formula, for checks)."""
    from scipy.linalg import sqrtm

    covmean = sqrtm(sigma1 @ sigma2)
    covmean = np.real(covmean)
    return float(((mu1 - mu2) ** 2).sum() + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


# ----------------------------------------------------------------------------------------------- CLIP score
def clip_score(image_embeds, text_embeds) -> float:
    """CLIP score: mean over images of `100 * max(cos(image, text), 0)`.

    Args:
        image_embeds (`(N, d)`): image embeddings of a CLIP-like model ([`scorers.ClipScorer.image_embeds`]).
        text_embeds (`(N, d)`): text embeddings of each image's label/caption from the same model.
    """
    img, txt = _check_embeds(image_embeds, text_embeds, ("image_embeds", "text_embeds"), min_n=1)
    cos = torch.nn.functional.cosine_similarity(img, txt, dim=-1)
    return float((100 * cos.clamp(min=0)).mean())


# ----------------------------------------------------------------------------------------------- AIS / IIS / AIC
def _cosine_matrix(queries: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    q = torch.nn.functional.normalize(queries, dim=-1)
    k = torch.nn.functional.normalize(keys, dim=-1)
    return q @ k.T


def win_rates(query_embeds, target_embeds) -> torch.Tensor:
    """Per query `i`: the fraction of distractors `j != i` with `cos(q_i, t_j) < cos(q_i, t_i)` (ties count 1/2).

    Args:
        query_embeds (`(N, d)`): e.g. generated-image embeddings.
        target_embeds (`(N, d)`): row `i` is query `i`'s true match (its sound, or its reference image); every
            other row is a distractor.

    Returns:
        `(N,)` float64 tensor in [0, 1].
    """
    q, t = _check_embeds(query_embeds, target_embeds, ("query_embeds", "target_embeds"))
    sim = _cosine_matrix(q, t)
    true = sim.diagonal().unsqueeze(1)
    off = ~torch.eye(len(q), dtype=torch.bool)
    # ties within float64 round-off of the true similarity count half (identical distractors are no evidence)
    below = (sim < true - 1e-12).double() + 0.5 * ((sim - true).abs() <= 1e-12).double()
    return (below * off).sum(1) / (len(q) - 1)


def audio_image_similarity(image_embeds, audio_embeds) -> float:
    """AIS, win-rate form (AudioToken / SonicDiffusion): mean of [`win_rates`] of each image against its own sound
    versus every other sound of the set, in a joint audio-image space. Chance 0.5, perfect 1.0.

    Args:
        image_embeds (`(N, d)`): generated images in the joint space.
        audio_embeds (`(N, d)`): the sounds they were generated from, same space, same order.
    """
    return float(win_rates(image_embeds, audio_embeds).mean())


def audio_image_similarity_mean_cosine(image_embeds, audio_embeds, zscore: bool = False) -> float:
    """AIS, mean-cosine form (MACS): mean cosine of each generated image with its own sound in a joint space.

    Args:
        zscore: standardise each true-pair cosine against that image's cosines with the other sounds first.
    """
    img, aud = _check_embeds(image_embeds, audio_embeds, ("image_embeds", "audio_embeds"), min_n=3 if zscore else 1)
    sim = _cosine_matrix(img, aud)
    true = sim.diagonal()
    if not zscore:
        return float(true.mean())
    off = sim[~torch.eye(len(img), dtype=torch.bool)].reshape(len(img), len(img) - 1)
    return float(((true - off.mean(1)) / off.std(1).clamp(min=1e-12)).mean())


def image_image_similarity(generated_embeds, reference_embeds) -> float:
    """IIS (AudioToken / SonicDiffusion): mean [`win_rates`] of each generated image against the reference image of
    its own sound versus the other references, in an image feature space. Chance 0.5, perfect 1.0."""
    return float(win_rates(generated_embeds, reference_embeds).mean())


def zero_shot_logits(image_embeds, class_embeds) -> torch.Tensor:
    """Cosine similarities `(N, C)` of images to class embeddings (e.g. CLIP text embeddings of class names)."""
    img = torch.as_tensor(image_embeds, dtype=torch.float64)
    cls = torch.as_tensor(class_embeds, dtype=torch.float64)
    if img.ndim != 2 or cls.ndim != 2 or img.shape[1] != cls.shape[1]:
        raise ValueError(
            f"`image_embeds` {tuple(img.shape)} and `class_embeds` {tuple(cls.shape)} must be `(N, d)` and `(C, d)`."
        )
    return _cosine_matrix(img, cls)


def audio_image_content(class_logits, labels: Sequence[int]) -> float:
    """AIC (AudioToken): fraction of generated images whose highest-scoring class is their sound's class.

    Args:
        class_logits (`(N, C)`): per image, a score per class (a classifier's logits or [`zero_shot_logits`]).
        labels (`(N,)` ints in `[0, C)`): the class of the sound each image was generated from.
    """
    logits = torch.as_tensor(class_logits, dtype=torch.float64)
    labels = torch.as_tensor(np.asarray(labels), dtype=torch.long)
    if logits.ndim != 2 or len(logits) == 0:
        raise ValueError(f"`class_logits` must be a non-empty `(N, C)`, got shape {tuple(logits.shape)}.")
    if labels.shape != (len(logits),):
        raise ValueError(f"`labels` has shape {tuple(labels.shape)} for {len(logits)} images; pass one per image.")
    if labels.min() < 0 or labels.max() >= logits.shape[1]:
        raise ValueError(f"`labels` must be class indices in [0, {logits.shape[1]}), got {labels.tolist()}.")
    return float((logits.argmax(1) == labels).double().mean())


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman rank correlation; 0.0 when either side is constant (no ordering to agree with)."""
    from scipy.stats import spearmanr

    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if len(x) != len(y) or len(x) < 2:
        raise ValueError(f"Spearman needs two equal-length sequences of >= 2 values, got {len(x)} and {len(y)}.")
    if np.std(x) == 0 or np.std(y) == 0:
        return 0.0
    value = float(spearmanr(x, y).statistic)
    return 0.0 if math.isnan(value) else value
