"""Pre-training the built-in concept CLIP, and the weights the package ships."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from ldifs_engine import pretrain as P
from ldifs_engine.data import concepts as C
from ldifs_engine.data.concept_render import DATA_VERSION


def test_captions_name_only_the_mentioned_attributes():
    assert P.describe({"size": 0, "colour": 0, "pattern": 3, "shape": 0}) == "small red checkered circle"
    assert P.describe({"colour": 5}) == "blue object"
    assert P.describe({"shape": 4}) == "cross"
    attrs = torch.randint(0, 2, (300, 4))
    captions, mention = P.caption_batch(attrs, torch.Generator().manual_seed(0), 0.5)
    assert mention.any(1).all() and 0.3 < mention.float().mean() < 0.7
    for caption in captions:  # position and count are never put into words
        for word in ("left", "right", "top", "bottom", "corner", "one", "two", "three", "four"):
            assert word not in caption.replace(".", "").split()


def test_soft_targets_are_captions_true_of_the_image():
    attrs = torch.tensor([[0, 1, 2, 3], [0, 1, 0, 0], [1, 1, 2, 3]])  # size, colour, pattern, shape
    mention = torch.tensor([[True, True, True, True], [False, True, False, False], [True, False, False, False]])
    m = P.soft_targets(attrs, mention)
    # caption 0 ("small <c1> <p2> <s3>") fits image 0 only; caption 1 ("<c1> object") fits all; caption 2 only image 2
    assert m.tolist() == [[1, 1, 0], [0, 1, 0], [0, 1, 1]]
    assert torch.equal(m.diagonal(), torch.ones(3))


def test_short_pretraining_learns_a_concept(tmp_path):
    out = tmp_path / "tiny.safetensors"
    manifest = P.pretrain_concept_clip(out, steps=60, batch_size=64, seed=0, lr=2e-3, linear_probe=False,
                                       eval_keys=["colour"])
    acc = manifest["accuracy"]
    assert acc["colour"]["zs_acc"] > acc["colour"]["chance"] + 0.3  # chance is 0.125
    # the files are what the manifest says, and load strictly
    assert json.loads(out.with_suffix(".json").read_text()) == manifest
    assert manifest["training"]["steps"] == 60 and manifest["data_version"] == DATA_VERSION
    model = P.load_concept_clip(out)
    assert all(v.dtype == torch.float16 for v in load_file(str(out)).values())
    assert P.evaluate_concepts(model, ["colour"], linear_probe=False)["colour"]["zs_acc"] == acc["colour"]["zs_acc"]
    out.write_bytes(out.read_bytes()[:-2] + b"  ")  # weights no longer those the manifest describes
    with pytest.raises(ValueError, match="checksum"):
        P.remeasure_manifest(out)


def test_pretraining_is_seeded():
    a = P.train_concept_clip(steps=2, batch_size=8, seed=5)
    b = P.train_concept_clip(steps=2, batch_size=8, seed=5)
    c = P.train_concept_clip(steps=2, batch_size=8, seed=6)
    key = "visual.conv1.weight"
    assert torch.equal(a.state_dict()[key], b.state_dict()[key])
    assert not torch.equal(a.state_dict()[key], c.state_dict()[key])


# ---- the shipped model ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def shipped():
    if not P.SHIPPED_WEIGHTS.is_file():
        pytest.fail(f"{P.SHIPPED_WEIGHTS} is missing: run `ldifs pretrain-demo --out {P.SHIPPED_WEIGHTS}`")
    return P.read_manifest(), P.load_concept_clip()


def test_shipped_manifest_describes_the_shipped_weights(shipped):
    manifest, _ = shipped
    assert manifest["model"] == "concept-clip-tiny" and manifest["config_name"] == P.CONFIG_NAME
    assert manifest["weights_sha256"] == P._file_sha256(P.SHIPPED_WEIGHTS)
    # a change to the renderer must come with re-trained weights (and a new DATA_VERSION)
    assert manifest["data_version"] == DATA_VERSION
    assert manifest["config"] == json.loads((P.CONFIG_DIR / f"{P.CONFIG_NAME}.json").read_text())
    assert set(manifest["accuracy"]) == set(C.concept_keys())
    assert P.SHIPPED_WEIGHTS.stat().st_size < 10 * 2**20


def test_shipped_model_knows_captioned_concepts_but_not_uncaptioned_ones(shipped):
    manifest, _ = shipped
    for key, row in manifest["accuracy"].items():
        if row["captioned"]:
            assert row["zs_acc"] >= 0.90, key
        else:
            assert row["zs_acc"] <= row["chance"] + 0.1, key
            assert row["lp_acc"] >= row["chance"] + 0.1, key  # the features carry it: fine-tuning can learn it


def test_shipped_weights_reproduce_the_manifest_zero_shot_accuracy(shipped):
    manifest, model = shipped
    measured = P.evaluate_concepts(model, linear_probe=False)
    for key, row in manifest["accuracy"].items():
        assert measured[key]["zs_acc"] == pytest.approx(row["zs_acc"], abs=0.01), key
