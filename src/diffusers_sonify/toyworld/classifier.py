"""A small image classifier of toy-world renders: the toy world's stand-in for FID's Inception and for CLIP.

Sound2Scene measured FID with an Inception fine-tuned on its own domain; the toy world does the same with a CNN
trained on toy renders. Its pooled penultimate activations are the features for FID/KID and IIS, its
presence head gives AIC's classes (the highest-scoring class) and the toy world's "class space" for AIS.

Heads (logits): `presence` (6, one sigmoid per class: is it visible) and `indoor` (1 sigmoid: the background
type). Trains in about half a minute on one CPU thread.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from tqdm.auto import tqdm

from ..audio import torch_threads
from .render import render_scene
from .scenes import sample_scene
from .world import CLASS_NAMES, IMAGE_SIZE

logger = logging.getLogger(__name__)

MIN_VISIBLE_PIXELS = 4  # a class counts as present when at least this many pixels show it (icons cover >= ~20)
# Render seeds of the classifier's own training/held-out scenes: far from the demo's corpora (seeds 0, 1, ...).
CLASSIFIER_SEED = 7_000


class ToyImageClassifier(ModelMixin, ConfigMixin):
    """Conv net on `(B, 3, 32, 32)` images in [0, 1].

    Args:
        num_classes: number of toy-world classes.
        channels: widths of the three conv stages (the last two downsample by 2).
        feature_dim: width of the pooled feature vector returned by [`features`].
    """

    @register_to_config
    def __init__(self, num_classes: int = len(CLASS_NAMES), channels: tuple = (16, 32, 64), feature_dim: int = 64):
        super().__init__()
        c1, c2, c3 = channels
        self.conv1 = torch.nn.Conv2d(3, c1, 3, padding=1)
        self.conv2 = torch.nn.Conv2d(c1, c2, 3, stride=2, padding=1)
        self.conv3 = torch.nn.Conv2d(c2, c3, 3, stride=2, padding=1)
        self.proj = torch.nn.Linear(2 * c3, feature_dim)
        self.head = torch.nn.Linear(feature_dim, num_classes + 1)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """`(B, feature_dim)` pooled features of images `(B, 3, H, W)` in [0, 1], each of norm `sqrt(feature_dim)`.

        The fixed norm keeps KID's polynomial kernel `(x.y / d + 1)^3` in its intended range (`x.y / d` is the
        cosine of two images) whatever scale training gave the activations.
        """
        x = images.to(self.conv1.weight.dtype) * 2 - 1
        x = F.relu(self.conv1(x))
        x = F.relu(self.conv2(x))
        x = F.relu(self.conv3(x))
        pooled = torch.cat([x.mean((2, 3)), x.amax((2, 3))], dim=1)  # max pooling sees small icons anywhere
        return self._normalise(F.relu(self.proj(pooled)))

    def _normalise(self, h: torch.Tensor) -> torch.Tensor:
        return F.normalize(h, dim=1, eps=1e-6) * h.shape[1] ** 0.5

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Logits `{"presence": (B, C), "indoor": (B,)}`."""
        out = self.head(self.features(images))
        return {"presence": out[:, :-1], "indoor": out[:, -1]}


@dataclass
class ToyRenderSet:
    """Rendered scenes with what the classifier must read from them."""

    images: torch.Tensor  # (N, 3, 32, 32) in [0, 1]
    presence: torch.Tensor  # (N, C) 0/1
    indoor: torch.Tensor  # (N,) 0/1


def render_training_set(num_images: int, seed: int = CLASSIFIER_SEED) -> ToyRenderSet:
    """`num_images` scenes sampled and rendered like the image corpus, with visible-pixel labels."""
    rng = np.random.default_rng([seed, 11])
    images, presence, indoor = [], [], []
    for _ in range(num_images):
        scene = sample_scene(rng)
        image, labels = render_scene(scene["objects"], scene["setting"], IMAGE_SIZE, return_labels=True)
        counts = np.array([(labels == k).sum() for k in range(len(CLASS_NAMES))])
        images.append(np.asarray(image))
        presence.append(counts >= MIN_VISIBLE_PIXELS)
        indoor.append(scene["setting"] == "indoor")
    return ToyRenderSet(
        torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255.0,
        torch.tensor(np.array(presence), dtype=torch.float32),
        torch.tensor(indoor, dtype=torch.float32),
    )


@torch.no_grad()
def classifier_accuracy(model: ToyImageClassifier, data: ToyRenderSet, batch_size: int = 256) -> dict[str, float]:
    """Held-out accuracies: `presence_exact` (all 6 presence bits right: the classifier's accuracy),
    `presence_bit_accuracy` (per class and image) and `indoor_accuracy`."""
    model.eval()
    outs = [model(data.images[i : i + batch_size]) for i in range(0, len(data.images), batch_size)]
    presence = torch.cat([o["presence"] for o in outs]) > 0
    indoor = torch.cat([o["indoor"] for o in outs]) > 0
    return {
        "presence_exact": float((presence == data.presence.bool()).all(1).float().mean()),
        "presence_bit_accuracy": float((presence == data.presence.bool()).float().mean()),
        "indoor_accuracy": float((indoor == data.indoor.bool()).float().mean()),
    }


def train_toy_classifier(
    num_train: int = 3000,
    num_heldout: int = 500,
    steps: int = 400,
    batch_size: int = 64,
    learning_rate: float = 3e-3,
    seed: int = CLASSIFIER_SEED,
) -> tuple[ToyImageClassifier, dict]:
    """Train a [`ToyImageClassifier`] on fresh renders; returns it (eval mode, frozen) and its held-out report.

    The report holds the held-out accuracies of [`classifier_accuracy`], the sizes and the wall time.
    """
    t0 = time.time()
    # tiny convolutions: one thread is ~6x faster per step than two here (measured on the 2-core machine)
    with torch_threads(1):
        model, report = _train(num_train, num_heldout, steps, batch_size, learning_rate, seed)
    report.update(num_train=num_train, num_heldout=num_heldout, steps=steps, seconds=round(time.time() - t0, 1))
    logger.info("Toy image classifier: %s", report)
    return model, report


def _train(num_train, num_heldout, steps, batch_size, learning_rate, seed):
    train = render_training_set(num_train, seed)
    heldout = render_training_set(num_heldout, seed + 1)
    torch.manual_seed(seed)
    model = ToyImageClassifier()
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=learning_rate, total_steps=steps)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    for _ in tqdm(range(steps), desc="Training the toy image classifier"):
        idx = torch.randint(0, num_train, (batch_size,), generator=generator)
        x = train.images[idx]
        flip = torch.rand(batch_size, generator=generator) < 0.5  # scenes are left-right symmetric in law
        x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        out = model(x)
        loss = F.binary_cross_entropy_with_logits(
            out["presence"], train.presence[idx]
        ) + F.binary_cross_entropy_with_logits(out["indoor"], train.indoor[idx])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
    model.eval().requires_grad_(False)
    return model, classifier_accuracy(model, heldout)
