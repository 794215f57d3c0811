"""REPA (diffusers_sonify.repa): the encoder a user names loads as its vision tower, its patch tokens are the target,
and the alignment term trains the projector and the UNet blocks up to the aligned one, nothing after it."""

from __future__ import annotations

import pytest
import torch
from diffusers import UNet2DConditionModel

from diffusers_sonify.repa import RepresentationAlignment, load_repa_encoder, unet_block_channels

UNET = dict(
    sample_size=32,
    in_channels=3,
    out_channels=3,
    block_out_channels=(16, 32, 48),
    layers_per_block=1,
    down_block_types=("DownBlock2D", "DownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
    cross_attention_dim=16,
    attention_head_dim=8,
    norm_num_groups=8,
)


@pytest.fixture(scope="module")
def unet() -> UNet2DConditionModel:
    torch.manual_seed(0)
    return UNet2DConditionModel(**UNET)


@pytest.fixture(scope="module")
def vlm_dir(tiny_vlm_dir) -> str:
    return tiny_vlm_dir


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory) -> str:
    """A tiny CLIP vision model with a class token and its own normalisation (mean/std not 0.5)."""
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel

    path = tmp_path_factory.mktemp("clip")
    torch.manual_seed(0)
    config = CLIPVisionConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=16, patch_size=4
    )
    CLIPVisionModel(config).save_pretrained(path)
    CLIPImageProcessor(size={"shortest_edge": 16}, crop_size={"height": 16, "width": 16}).save_pretrained(path)
    return str(path)


def capture_shape(unet, name: str) -> torch.Size:
    seen = {}

    def hook(module, inputs, output) -> None:  # a hook that returns something replaces the output
        seen["shape"] = (output[0] if isinstance(output, tuple) else output).shape

    handle = unet.get_submodule(name).register_forward_hook(hook)
    with torch.no_grad():
        unet(torch.zeros(1, 3, 32, 32), 10, encoder_hidden_states=torch.zeros(1, 2, 16))
    handle.remove()
    return seen["shape"]


@pytest.mark.parametrize("name", ["mid_block", "down_blocks.0", "down_blocks.2", "up_blocks.0", "up_blocks.2"])
def test_block_channels_are_what_the_block_outputs(unet, name):
    assert unet_block_channels(unet.config, name) == capture_shape(unet, name)[1]


@pytest.mark.parametrize("name", ["mid", "down_blocks.3", "up_blocks", "conv_out"])
def test_a_wrong_block_name_lists_the_valid_ones(unet, name):
    with pytest.raises(ValueError, match=r"`repa_block`.*use one of \['mid_block', 'down_blocks.0'"):
        unet_block_channels(unet.config, name)


def test_a_vlm_gives_its_vision_tower_and_processor_normalisation(vlm_dir):
    from transformers import AutoModelForImageTextToText

    encoder, prep = load_repa_encoder(vlm_dir)
    assert type(encoder).__name__ == "Idefics3VisionTransformer" and not encoder.training
    assert not any(p.requires_grad for p in encoder.parameters())
    assert prep == {"image_mean": [0.5] * 3, "image_std": [0.5] * 3, "image_size": 32, "patch_size": 4}
    reference = AutoModelForImageTextToText.from_pretrained(vlm_dir).model.vision_model.eval()
    pixels = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        expected = reference(pixel_values=pixels).last_hidden_state  # [-1, 1] is SmolVLM's normalised range
    alignment = RepresentationAlignment(encoder, prep, UNet2DConditionModel(**UNET), "mid_block")
    target = alignment.target_features(pixels, (8, 8))
    assert target.shape == (2, 64, 64)
    torch.testing.assert_close(target, expected)
    # a coarser UNet grid averages 2x2 patches: the mean over the image is unchanged
    coarse = alignment.target_features(pixels, (4, 4))
    torch.testing.assert_close(coarse.mean(1), expected.mean(1), atol=1e-5, rtol=1e-5)


def test_class_token_is_dropped_and_images_are_resized_and_normalised(clip_dir):
    from transformers import CLIPVisionModel

    encoder, prep = load_repa_encoder(clip_dir)
    assert prep["image_size"] == 16 and prep["image_mean"][0] != 0.5
    alignment = RepresentationAlignment(encoder, prep, UNet2DConditionModel(**UNET), "down_blocks.2")
    pixels = torch.rand(2, 3, 32, 32) * 2 - 1
    small = torch.nn.functional.interpolate((pixels + 1) / 2, size=(16, 16), mode="bilinear", antialias=True)
    mean, std = torch.tensor(prep["image_mean"]).view(1, 3, 1, 1), torch.tensor(prep["image_std"]).view(1, 3, 1, 1)
    with torch.no_grad():
        tokens = CLIPVisionModel.from_pretrained(clip_dir)(pixel_values=(small - mean) / std).last_hidden_state
    assert tokens.shape[1] == 17  # the class token, then 4 x 4 patches
    torch.testing.assert_close(alignment.target_features(pixels, (4, 4)), tokens[:, 1:])


def test_alignment_trains_the_projector_and_the_blocks_before_the_aligned_one_only(vlm_dir):
    torch.manual_seed(0)
    unet = UNet2DConditionModel(**UNET)
    alignment = RepresentationAlignment.from_pretrained(vlm_dir, unet, "mid_block")
    projector = alignment.make_projector(hidden_dim=32)
    pixels = torch.rand(2, 3, 32, 32) * 2 - 1
    with pytest.raises(RuntimeError, match="capture"):
        alignment.cosine(projector, pixels)
    with torch.no_grad():  # sampling outside `capture` keeps nothing
        unet(pixels, 500, encoder_hidden_states=torch.zeros(2, 2, 16))
    assert alignment._features is None
    with alignment.capture():
        unet(pixels, 500, encoder_hidden_states=torch.zeros(2, 2, 16))
    cosine = alignment.cosine(projector, pixels)
    assert -1 < cosine.item() < 1
    (-cosine).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in projector.parameters())
    grads = {n: p.grad for n, p in unet.named_parameters()}
    assert grads["down_blocks.0.resnets.0.conv1.weight"].abs().sum() > 0
    assert grads["mid_block.resnets.1.conv2.weight"].abs().sum() > 0
    assert all(grads[n] is None for n in grads if n.startswith(("up_blocks", "conv_out")))
    assert not any(p.grad is not None for p in alignment.encoder.parameters())
    # a few steps on the projector alone raise the similarity: the target is learnable
    with torch.no_grad(), alignment.capture():
        unet(pixels, 500, encoder_hidden_states=torch.zeros(2, 2, 16))
    opt = torch.optim.Adam(projector.parameters(), lr=1e-2)
    for _ in range(30):
        opt.zero_grad()
        loss = -alignment.cosine(projector, pixels)
        loss.backward()
        opt.step()
    assert alignment.cosine(projector, pixels).item() > cosine.item() + 0.1


def test_cached_targets_are_each_rows_targets_mirrored_where_the_step_flipped_it(vlm_dir):
    unet = UNet2DConditionModel(**UNET)
    alignment = RepresentationAlignment.from_pretrained(vlm_dir, unet, "mid_block")
    images = torch.rand(7, 3, 32, 32) * 2 - 1
    cached = alignment.cache_targets(images.split(3), (8, 8), mirrored=True)  # batches of 3, 3 and 1
    assert len(cached) == 7
    rows, flips = torch.tensor([5, 0, 3, 6]), torch.tensor([True, False, True, False])
    seen = torch.where(flips.view(-1, 1, 1, 1), images[rows].flip(-1), images[rows])  # what the UNet saw
    live = alignment.target_features(seen, (8, 8))
    torch.testing.assert_close(cached(rows, flips), live)
    assert not torch.allclose(cached(rows), live)  # the mirror image's features are not the image's
    with torch.no_grad(), alignment.capture():
        unet(seen, 500, encoder_hidden_states=torch.zeros(4, 2, 16))
    projector = alignment.make_projector(hidden_dim=32)
    with_cache = alignment.cosine(projector, seen, cached(rows, flips))
    torch.testing.assert_close(with_cache, alignment.cosine(projector, seen))
    plain = alignment.cache_targets([images], (8, 8), mirrored=False)
    torch.testing.assert_close(plain(rows[1:2], flips[1:2]), live[1:2])
    with pytest.raises(ValueError, match="without mirror images"):
        plain(rows, flips)


def test_an_encoder_without_patches_or_weights_is_refused(tmp_path, vlm_dir):
    from transformers import ResNetConfig, ResNetModel

    ResNetModel(ResNetConfig(embedding_size=8, hidden_sizes=[8, 8], depths=[1, 1])).save_pretrained(tmp_path / "r")
    with pytest.raises(ValueError, match="patch_size.*ViT-style"):
        load_repa_encoder(str(tmp_path / "r"))
    from safetensors.torch import load_file, save_file

    state = load_file(f"{vlm_dir}/model.safetensors")
    kept = {k: v for k, v in state.items() if "vision_model.encoder" not in k}
    (tmp_path / "v").mkdir()
    for f in ("config.json", "processor_config.json", "tokenizer.json", "tokenizer_config.json"):
        (tmp_path / "v" / f).write_bytes(open(f"{vlm_dir}/{f}", "rb").read())
    save_file(kept, tmp_path / "v" / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ValueError, match="no weights for .* vision-encoder tensors"):
        load_repa_encoder(str(tmp_path / "v"))
