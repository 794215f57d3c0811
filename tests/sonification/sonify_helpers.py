"""Tiny corpora and components for the sonification tests (real classes, generated data)."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from PIL import Image, ImageDraw

SR = 16_000
REPO = Path(__file__).resolve().parents[2]
PROMPT = str(REPO / "dataset_builder" / "prompts" / "describe_v1.txt")
# 20 audio labels and 3 differently phrased descriptions of each (60 queries)
LABEL_QUERIES = {
    "dog bark": ["a dog barking in the yard", "a puppy yapping loudly", "a hound woofing at the mailman"],
    "cat meow": ["a kitten mewing for food", "a cat meowing on the sofa", "a house cat calling out"],
    "rain": ["raindrops falling on the roof", "a heavy downpour outside", "steady rainfall on leaves"],
    "thunder": ["a thunderstorm rumbling overhead", "thunder clapping in the distance", "a loud thunderclap"],
    "car horn": ["a car honking in traffic", "a driver beeping the horn", "an automobile horn blaring"],
    "church bells": ["bells ringing in a church tower", "a cathedral bell tolling", "chiming church bells"],
    "birds chirping": ["songbirds singing in the trees", "sparrows tweeting at dawn", "birdsong in the garden"],
    "ocean waves": [
        "waves crashing on the beach",
        "the sea surf rolling onto the shore",
        "breakers hitting the coast",
    ],
    "crowd applause": [
        "an audience clapping",
        "people applauding after a show",
        "a crowd giving an ovation with applause",
    ],
    "baby crying": ["an infant wailing", "a newborn crying in its crib", "a toddler sobbing loudly"],
    "footsteps": ["someone walking on a wooden floor", "steps echoing in a hallway", "a person's footsteps on gravel"],
    "door knock": ["knocking on a wooden door", "a knock at the front door", "someone rapping on the door"],
    "telephone ringing": ["a phone ringing on the desk", "an old telephone ring", "the landline is ringing"],
    "siren": ["an ambulance siren wailing", "a police car siren", "a fire truck siren passing by"],
    "wind": ["a strong gust of wind blowing", "wind howling over the hills", "a breeze whistling through trees"],
    "fire crackling": ["a campfire crackling", "logs burning in a fireplace", "crackle of flames in the hearth"],
    "clock ticking": ["a wall clock ticking", "the tick-tock of a clock", "a grandfather clock ticking steadily"],
    "train passing": ["a train rushing past", "a locomotive going by on the rails", "a railway train passing through"],
    "helicopter": ["a helicopter flying overhead", "chopper rotor blades whirring", "a helicopter hovering above"],
    "typing keyboard": [
        "someone typing on a computer keyboard",
        "fingers clicking on keys",
        "rapid keyboard typing at a desk",
    ],
}
LABELS = list(LABEL_QUERIES)


def png_bytes(seed: int, size: int = 32) -> bytes:
    rng = np.random.default_rng(seed)
    image = Image.new("RGB", (size, size), tuple(int(v) for v in rng.integers(0, 255, 3)))
    draw = ImageDraw.Draw(image)
    x0, y0 = (int(v) for v in rng.integers(0, size // 2, 2))
    draw.ellipse([x0, y0, x0 + size // 3, y0 + size // 3], fill=tuple(int(v) for v in rng.integers(0, 255, 3)))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def wav_bytes(wave: np.ndarray, sr: int = SR) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, wave, sr, format="WAV", subtype="FLOAT")
    return buffer.getvalue()


def clip(seed: int, seconds: float = 0.5, sr: int = SR) -> np.ndarray:
    rng = np.random.default_rng(1000 + seed)
    t = np.arange(int(seconds * sr)) / sr
    tone = np.sin(2 * np.pi * (150 + 60 * seed) * t) * (0.5 + 0.5 * np.sin(2 * np.pi * (2 + seed) * t))
    return (0.3 * tone + 0.05 * rng.standard_normal(t.shape)).astype(np.float32)


def scene_description(i: int) -> str:
    """Canned JSON in the prompt's format for image i: two sources, a scene from a fixed cycle."""
    first, second = LABELS[i % len(LABELS)], LABELS[(3 * i + 5) % len(LABELS)]
    scenes = [("indoor", "small"), ("indoor", "large"), ("outdoor", "open"), ("outdoor", "medium")]
    setting, space = scenes[i % len(scenes)]
    return json.dumps(
        {
            "sound_sources": [
                {
                    "name": first.split()[0],
                    "sound": LABEL_QUERIES[first][i % 3],
                    "prominence": 0.9,
                    "distance": "near",
                },
                {
                    "name": second.split()[0],
                    "sound": LABEL_QUERIES[second][(i + 1) % 3],
                    "prominence": 0.4,
                    "distance": "far",
                },
            ],
            "scene": {"setting": setting, "space": space},
        }
    )


def make_corpora(root, num_images: int = 12, num_clips: int = 20, bad_rows: bool = True):
    """Save an image corpus and an audio corpus (`save_to_disk`) under `root`; return their paths.

    With `bad_rows`: image 3 is corrupt bytes, image 5's metadata gives unparsable text, image 7 asks for a sound
    nothing in the corpus resembles; clip 4 is corrupt bytes and clip 9 is silent.
    """
    from datasets import Audio, ClassLabel, Dataset, Features, Value
    from datasets import Image as ImageFeature

    images, descriptions = [], []
    for i in range(num_images):
        images.append({"bytes": b"not an image" if bad_rows and i == 3 else png_bytes(i), "path": None})
        text = scene_description(i)
        if bad_rows and i == 5:
            text = "I see a nice picture but cannot say."
        if bad_rows and i == 7:
            text = json.dumps(
                {
                    "sound_sources": [{"name": "xq", "sound": "zzgx qwv plmk", "prominence": 0.5, "distance": "mid"}],
                    "scene": {"setting": "indoor", "space": "small"},
                }
            )
        descriptions.append(text)
    image_ds = Dataset.from_dict(
        {"image": images, "photo_id": [f"img{i:03d}" for i in range(num_images)], "metadata": descriptions},
        features=Features({"image": ImageFeature(), "photo_id": Value("string"), "metadata": Value("string")}),
    )
    clips, labels = [], []
    for j in range(num_clips):
        wave = clip(j)
        if bad_rows and j == 9:
            wave = np.zeros_like(wave)
        clips.append({"bytes": b"RIFF garbage" if bad_rows and j == 4 else wav_bytes(wave), "path": None})
        labels.append(j % len(LABELS))
    audio_ds = Dataset.from_dict(
        {"audio": clips, "label": labels, "clip_name": [f"clip{j:02d}" for j in range(num_clips)]},
        features=Features({"audio": Audio(), "label": ClassLabel(names=LABELS), "clip_name": Value("string")}),
    )
    image_path, audio_path = str(root / "images"), str(root / "audio")
    image_ds.save_to_disk(image_path)
    audio_ds.save_to_disk(audio_path)
    return image_path, audio_path


class ScriptedDescriber:
    """Success-path describer: reads the canned JSON from `metadata`, optionally slowly (for the kill test)."""

    model_id = "scripted"
    prompt_version = "scripted-v1"

    def __init__(self, column: str = "metadata", delay_s: float = 0.0):
        self.column, self.delay_s = column, delay_s

    def describe(self, batch: dict) -> dict:
        from diffusers_sonify.sonification.describe import describe_result

        assert all(im.mode == "RGB" for im in batch["image"])
        time.sleep(self.delay_s)
        return describe_result(list(batch[self.column]))


def tiny_llava(path) -> str:
    """A randomly initialised LlavaForConditionalGeneration + LlavaProcessor saved at `path` (HF_NOTES recipe)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import (
        CLIPImageProcessor,
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
        PreTrainedTokenizerFast,
    )

    specials = ["<unk>", "<s>", "</s>", "<image>", "<pad>"]
    byte_chars = list(pre_tokenizers.ByteLevel.alphabet())
    vocab = {tok: i for i, tok in enumerate(specials + sorted(byte_chars))}
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        extra_special_tokens={"image_token": "<image>"},
    )
    tokenizer.add_special_tokens({"additional_special_tokens": ["<image>"]})
    chat_template = (
        "{% for m in messages %}{{ m['role'] }}: {% for c in m['content'] %}"
        "{% if c['type'] == 'image' %}<image>{% else %}{{ c['text'] }}{% endif %}{% endfor %}\n{% endfor %}"
        "{% if add_generation_prompt %}assistant: {% endif %}"
    )
    processor = LlavaProcessor(
        image_processor=CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}),
        tokenizer=tokenizer,
        patch_size=8,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=chat_template,
    )
    torch.manual_seed(0)
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(
            hidden_size=32,
            intermediate_size=37,
            num_hidden_layers=1,
            num_attention_heads=2,
            image_size=32,
            patch_size=8,
            projection_dim=32,
        ),
        text_config=LlamaConfig(
            hidden_size=32,
            intermediate_size=37,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=2,
            vocab_size=len(tokenizer),
            max_position_embeddings=2048,
            pad_token_id=tokenizer.pad_token_id,
        ),
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
    )
    model = LlavaForConditionalGeneration(config).eval()
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return str(path)
