"""The concept world: deterministic generators whose labels match what is drawn."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from ldifs_engine.data import DATASETS, DataContext, TensorImageSet
from ldifs_engine.data import concept_render as R
from ldifs_engine.data import concepts as C

BRIGHT = 120  # every object has light bands far above this; the dark noisy background stays well below


def _objects(**attrs) -> R.Objects:
    """Single-object images; attributes given as lists, the rest default to 0."""
    n = len(next(iter(attrs.values())))
    cols = {a: torch.tensor(attrs.get(a, [0] * n))[:, None] for a in R.ATTRIBUTES}
    return R.Objects(**cols, present=torch.ones(n, 1, dtype=torch.bool))


def _bright(images: torch.Tensor) -> torch.Tensor:
    return images.max(dim=1).values > BRIGHT  # [N,H,W]


def _quadrant_mass(images: torch.Tensor) -> torch.Tensor:
    """Bright pixels per quadrant, ``[N, 4]`` in the order top left, top right, bottom left, bottom right."""
    b = _bright(images)
    q = R.QUADRANT_SIZE
    return torch.stack([b[:, :q, :q], b[:, :q, q:], b[:, q:, :q], b[:, q:, q:]], 1).flatten(2).sum(-1)


def test_registry_has_captioned_and_uncaptioned_concepts():
    captioned, uncaptioned = C.concept_keys(captioned=True), C.concept_keys(captioned=False)
    assert {"shape", "colour", "pattern", "size"} <= set(captioned)
    assert {"quadrant", "count"} <= set(uncaptioned)
    for key in C.concept_keys():
        info = DATASETS.get(key)
        assert info.source == "builtin" and info.description and info.title
        assert info.captioned is (key in captioned)
        assert len(info.classnames) >= 2 and len(set(info.classnames)) == len(info.classnames)
        assert info.templates and all(t.count("{}") == 1 for t in info.templates)
        assert info.splits == {"train": 2000, "test": 2000}


def test_uncaptioned_words_never_appear_in_pretraining_vocabulary():
    captioned_words = {w for a in ("shape", "colour", "pattern", "size") for c in R.ATTRIBUTES[a] for w in c.split()}
    caption_words = captioned_words | {w for t in C.CAPTION_TEMPLATES for w in t.replace("{}", "").split()}
    for key in C.concept_keys(captioned=False):
        for name in C.TASKS[key].classnames:
            assert not set(name.split()) & caption_words, (key, name)


def test_loader_returns_uint8_images_at_model_size():
    ds = DATASETS.get("quadrant").load("train", DataContext(root=Path("/nonexistent")))
    assert isinstance(ds, TensorImageSet)
    assert ds.images.dtype == torch.uint8 and tuple(ds.images.shape) == (2000, 3, R.IMAGE_SIZE, R.IMAGE_SIZE)
    img, label = ds[0]
    assert img.shape == (3, R.IMAGE_SIZE, R.IMAGE_SIZE) and isinstance(label, int)
    assert ds.classnames == R.QUADRANTS


def test_model_config_image_size_matches_the_world():
    cfg = json.loads((Path(C.__file__).parents[1] / "assets/model_configs/ldifs-concept-vit.json").read_text())
    assert cfg["vision_cfg"]["image_size"] == R.IMAGE_SIZE
    assert cfg["text_cfg"]["vocab_size"] == 49408


@pytest.mark.parametrize("key", C.concept_keys())
def test_generation_is_deterministic_per_seed_and_splits_differ(key):
    a = C.generate(key, "train", n=48, seed=3)
    C._generate.cache_clear()
    b = C.generate(key, "train", n=48, seed=3)
    assert a.images is not b.images  # really regenerated, not the cached tensor
    assert torch.equal(a.images, b.images) and torch.equal(a.labels(), b.labels())
    assert not torch.equal(a.images, C.generate(key, "train", n=48, seed=4).images)
    assert not torch.equal(a.images, C.generate(key, "test", n=48, seed=3).images)
    labels = a.labels()
    assert labels.dtype == torch.long and 0 <= labels.min() and labels.max() < len(C.TASKS[key].classnames)


@pytest.mark.parametrize("key", C.concept_keys())
def test_classes_are_balanced(key):
    counts = torch.bincount(C.generate(key, "test", n=203).labels(), minlength=len(C.TASKS[key].classnames))
    assert counts.max() - counts.min() <= 1


def test_repeated_loads_are_cached():
    assert C.generate("shape", "test", n=64).images is C.generate("shape", "test", n=64).images


def test_bad_arguments_are_rejected():
    with pytest.raises(KeyError, match="choose one of"):
        C.generate("nope", "train")
    with pytest.raises(ValueError, match="split"):
        C.generate("shape", "val")


def test_quadrant_labels_match_where_the_object_is():
    ds = C.generate("quadrant", "train", n=200)
    mass = _quadrant_mass(ds.images)
    assert torch.equal(mass.argmax(1), ds.labels())
    # nothing bright outside the labelled quadrant: objects never cross a quadrant border
    assert (mass.sum(1) == mass.max(1).values).all()


def test_count_labels_match_the_number_of_objects():
    ds = C.generate("count", "train", n=200)
    occupied = (_quadrant_mass(ds.images) >= 5).sum(1)
    assert torch.equal(occupied, ds.labels() + 1)


def test_colour_labels_match_the_drawn_colour():
    ds = C.generate("colour", "train", n=400)
    # the brightest object pixels are the light bands: their colour is nearest the named colour
    imgs = ds.images.float()
    weight = _bright(ds.images).float()[:, None]
    mean = (imgs * weight).sum((2, 3)) / weight.sum((2, 3))
    nearest = torch.cdist(mean, R.colour_rgb()).argmin(1)
    assert (nearest == ds.labels()).float().mean() > 0.97


def test_size_labels_match_the_drawn_size():
    ds = C.generate("size", "train", n=300)
    rendered_area = _bright(ds.images).sum((1, 2)).float()
    small, large = rendered_area[ds.labels() == 0], rendered_area[ds.labels() == 1]
    assert large.median() > 1.6 * small.median()


def test_rendered_silhouette_is_the_labelled_shape():
    gen = torch.Generator().manual_seed(0)
    n_shapes = len(R.SHAPES)
    objs = _objects(shape=list(range(n_shapes)) * 4, colour=[7] * n_shapes * 4, size=[1] * n_shapes * 4,
                    quadrant=[q for q in range(4) for _ in range(n_shapes)])
    out = R.render(objs, gen)
    drawn = _bright(out.images)
    grid = torch.arange(R.IMAGE_SIZE, dtype=torch.float32)
    corners = [(dx, dy) for dx in (0.0, 1.0) for dy in (0.0, 1.0)]
    for i in range(len(objs)):
        (cx, cy), r = out.centres[i, 0], out.radii[i, 0]
        agreement = []
        for s in range(n_shapes):
            # pixels wholly inside or wholly outside the ideal shape must be drawn (or not) exactly
            inside = torch.stack([R._shape_mask(s, (grid[None, :] + dx - cx) / r, (grid[:, None] + dy - cy) / r)
                                  for dx, dy in corners])
            whole_in, whole_out = inside.all(0), ~inside.any(0)
            near = ((grid[None, :] + 0.5 - cx).abs() <= r) & ((grid[:, None] + 0.5 - cy).abs() <= r)
            sure = (whole_in | whole_out) & near
            agreement.append((drawn[i][sure] == whole_in[sure]).float().mean().item())
        shape = int(objs.shape[i, 0])
        assert agreement[shape] == 1.0, (R.SHAPES[shape], agreement)
        assert sorted(agreement)[-2] < 0.95, (R.SHAPES[shape], agreement)  # the shapes are told apart


@pytest.mark.parametrize("pattern, varies_down, varies_across", [(0, False, False), (1, True, False),
                                                                 (2, False, True), (3, True, True)])
def test_fill_pattern_is_drawn_as_named(pattern, varies_down, varies_across):
    out = R.render(_objects(shape=[1], colour=[7], size=[1], pattern=[pattern]), torch.Generator().manual_seed(2))
    (cx, cy), r = out.centres[0, 0], out.radii[0, 0]
    h = int(0.5 * r)
    patch = out.images[0, 0, int(cy) - h:int(cy) + h, int(cx) - h:int(cx) + h].float()  # inside the square
    assert bool(patch.std(0).max() > 30) is varies_down  # along a column
    assert bool(patch.std(1).max() > 30) is varies_across  # along a row


def test_background_is_dark_and_noisy():
    out = R.render(_objects(shape=[0] * 8, size=[0] * 8), torch.Generator().manual_seed(3))
    bg = out.images[:, :, R.QUADRANT_SIZE:, R.QUADRANT_SIZE:].float()  # objects sit in the top-left quadrant
    assert bg.mean() < 50 and bg.max() < BRIGHT
    assert bg.std((1, 2, 3)).min() > 4


def test_objects_stay_inside_their_quadrant():
    objs = R.sample_objects(500, torch.Generator().manual_seed(4))
    out = R.render(objs, torch.Generator().manual_seed(5))
    c, r, q = out.centres[:, 0], out.radii[:, 0], objs.quadrant[:, 0]
    lo = torch.stack([q % 2, q // 2], 1).float() * R.QUADRANT_SIZE
    assert ((c - r[:, None]) >= lo).all() and ((c + r[:, None]) <= lo + R.QUADRANT_SIZE).all()


def test_pixels_are_exactly_those_of_this_data_version():
    """The renderer computes each object only inside its own quadrant (a quarter of the work); the
    pixels must stay bit for bit those the shipped model was trained and measured on. A deliberate
    change comes with a new ``DATA_VERSION``, re-trained weights and a new digest here."""
    import hashlib

    h = hashlib.sha256()
    for key in ("count", "quadrant", "shape"):  # up to four objects per image; all quadrants; every shape
        h.update(C.generate(key, "test", n=64).images.numpy().tobytes())
    assert (R.DATA_VERSION, h.hexdigest()) == (
        "concept-world/1", "727710c5df1a934e414c1fb11d11320e3bac78dbd5e7ade217eb1f483968f1c9")
