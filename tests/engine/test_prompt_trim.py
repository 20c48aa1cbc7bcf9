"""Zero-shot prompts are encoded without the padding after the longest prompt where that saves a lot
(real CLIP text towers, 77 tokens), and exactly as before for short contexts (the built-in tiny model)."""
from __future__ import annotations

import open_clip
import pytest
import torch

from ldifs_engine.backbones import get_tokenizer, load_backbone
from ldifs_engine.heads import encode_prompts, zero_shot_weights

PROMPTS = ["a photo of a cat.", "a blurry photo of the automobile.", "a low resolution photo of a ship."]


def _no_full_encode(model):
    def refuse(*a, **k):
        raise AssertionError("the full-context encode_text was used")
    return refuse


def test_a_77_token_clip_text_tower_is_cut_to_the_longest_prompt_with_the_same_embeddings(monkeypatch):
    torch.manual_seed(0)
    model = open_clip.model.CLIP(
        embed_dim=32, vision_cfg=open_clip.model.CLIPVisionCfg(layers=1, width=32, head_width=16, patch_size=16, image_size=32),
        text_cfg=open_clip.model.CLIPTextCfg(context_length=77, vocab_size=49408, width=64, heads=2, layers=2)).eval()
    tokens = open_clip.get_tokenizer("ViT-B-32")(PROMPTS)
    assert tokens.shape == (3, 77) and int(tokens.argmax(-1).max()) + 1 < 77 - 32
    with torch.no_grad():
        full = model.encode_text(tokens)
        monkeypatch.setattr(model, "encode_text", _no_full_encode(model))
        cut = encode_prompts(model, tokens)
    torch.testing.assert_close(cut, full, rtol=0, atol=1e-5)  # same in exact arithmetic; ~1e-6 apart in float


def test_the_tiny_models_short_context_is_encoded_exactly_as_before():
    model = load_backbone("concept-clip-tiny", device=torch.device("cpu")).eval()
    tok = get_tokenizer("concept-clip-tiny")
    tokens = tok(PROMPTS[:1] + ["a shape"])
    with torch.no_grad():
        assert torch.equal(encode_prompts(model, tokens), model.encode_text(tokens))
        w = zero_shot_weights(model, tok, ["cat", "dog"], ["a photo of a {}.", "{}"])
    assert w.shape[0] == 2


@pytest.mark.parametrize("pool", ["last", "first"])
def test_other_pooling_goes_through_encode_text(pool):
    model = open_clip.model.CLIP(
        embed_dim=16, vision_cfg=open_clip.model.CLIPVisionCfg(layers=1, width=32, head_width=16, patch_size=16, image_size=32),
        text_cfg=open_clip.model.CLIPTextCfg(context_length=77, vocab_size=49408, width=32, heads=2, layers=1,
                                             pool_type=pool)).eval()
    tokens = open_clip.get_tokenizer("ViT-B-32")(PROMPTS)
    with torch.no_grad():
        assert torch.equal(encode_prompts(model, tokens), model.encode_text(tokens))
