"""Pre-train the built-in foundation model ``concept-clip-tiny`` from scratch on the concept world.

Contrastive CLIP training on captions generated from the drawn attributes. Captions name a random
non-empty subset of shape, colour, pattern and size; position and object count are never put into
words, which is what makes ``quadrant`` and ``count`` new concepts for fine-tuning.

Targets are soft: a caption is a positive for every image in the batch that it truthfully
describes ("the red object" fits every red image), which includes identical captions.

``pretrain_concept_clip`` writes the weights (safetensors, float16) and a manifest JSON next to
them with the measured zero-shot and linear-probe accuracy per concept dataset.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import math
import os
import platform
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .data import concepts
from .heads import DEFAULT_WDS, ZS_SCALE, fit_linear_probe, zero_shot_weights
from .metrics import accuracy
from .data.concept_render import ATTRIBUTES, DATA_VERSION, IMAGE_SIZE, render, sample_objects

MODEL_NAME = "concept-clip-tiny"
CONFIG_NAME = "ldifs-concept-vit"
CONFIG_DIR = Path(__file__).parent / "assets" / "model_configs"
ASSETS = Path(__file__).parent / "assets"
SHIPPED_WEIGHTS = ASSETS / f"{MODEL_NAME}.safetensors"
SHIPPED_MANIFEST = ASSETS / f"{MODEL_NAME}.json"
MANIFEST_SCHEMA = "ldifs.pretrain-manifest/1"

CAPTIONED_ATTRIBUTES = ("size", "colour", "pattern", "shape")  # caption word order: "small red striped circle"
LP_WEIGHT_DECAYS = DEFAULT_WDS
LP_ITERS = 100

# Shape is the hardest concept to see at this resolution, so captions name it more often.
DEFAULTS = {"steps": 600, "batch_size": 256, "seed": 0, "lr": 1e-3, "weight_decay": 0.1, "warmup_steps": 50,
            "mention_prob": {"size": 0.5, "colour": 0.5, "pattern": 0.5, "shape": 0.7}}


# ---- model --------------------------------------------------------------------------------------
def create_concept_model() -> nn.Module:
    """The ``ldifs-concept-vit`` architecture with freshly initialised weights."""
    import open_clip

    from .backbones import quiet_open_clip

    open_clip.add_model_config(CONFIG_DIR)
    with quiet_open_clip():  # it warns that no pretrained weights were asked for; the process's logging stays as is
        return open_clip.create_model(CONFIG_NAME, pretrained=None)


def concept_tokenizer():
    """open_clip's tokenizer with this architecture's context length."""
    import open_clip

    open_clip.add_model_config(CONFIG_DIR)
    return open_clip.get_tokenizer(CONFIG_NAME)


def load_concept_clip(path: str | Path = SHIPPED_WEIGHTS) -> nn.Module:
    """The model with weights from a safetensors file (strict: every key and shape must match), in eval mode."""
    from safetensors.torch import load_file

    model = create_concept_model()
    model.load_state_dict(load_file(str(path)), strict=True)
    return model.eval()


def preprocess(images: torch.Tensor) -> torch.Tensor:
    """uint8 ``[N,3,H,W]`` at the model's size → normalised float, as open_clip's OpenAI statistics."""
    import open_clip

    mean = torch.tensor(open_clip.OPENAI_DATASET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(open_clip.OPENAI_DATASET_STD).view(1, 3, 1, 1)
    return (images.float() / 255.0 - mean) / std


# ---- captions -----------------------------------------------------------------------------------
def describe(values: dict[str, int]) -> str:
    """The description of an object from the attributes mentioned, e.g. ``small red checkered circle``."""
    words = [ATTRIBUTES[a][values[a]] for a in CAPTIONED_ATTRIBUTES[:-1] if a in values]
    words.append(ATTRIBUTES["shape"][values["shape"]] if "shape" in values else concepts.OBJECT_NOUN)
    return " ".join(words)


class _CaptionTokens:
    """Tokenises captions once each (there are only a few thousand distinct ones)."""

    def __init__(self, tokenizer):
        self.tokenizer, self.cache = tokenizer, {}

    def __call__(self, captions: Sequence[str]) -> torch.Tensor:
        new = [c for c in dict.fromkeys(captions) if c not in self.cache]
        if new:
            for c, t in zip(new, self.tokenizer(new), strict=True):
                self.cache[c] = t
        return torch.stack([self.cache[c] for c in captions])


def caption_batch(attrs: torch.Tensor, gen: torch.Generator,
                  mention_prob: float | dict[str, float]) -> tuple[list[str], torch.Tensor]:
    """Captions for images with attributes ``attrs`` ``[B, 4]`` (order ``CAPTIONED_ATTRIBUTES``).

    Each attribute is named with probability ``mention_prob`` (one for all, or per attribute).
    Returns the captions and the bool mask ``[B, 4]`` of attributes each one mentions (never empty).
    """
    b = attrs.shape[0]
    if isinstance(mention_prob, dict):
        probs = torch.tensor([float(mention_prob[a]) for a in CAPTIONED_ATTRIBUTES])
    else:
        probs = torch.full((len(CAPTIONED_ATTRIBUTES),), float(mention_prob))
    mention = torch.rand(b, len(CAPTIONED_ATTRIBUTES), generator=gen) < probs
    empty = ~mention.any(1)
    forced = torch.randint(len(CAPTIONED_ATTRIBUTES), (b,), generator=gen)
    mention[empty, forced[empty]] = True
    template = torch.randint(len(concepts.CAPTION_TEMPLATES), (b,), generator=gen)
    captions = []
    for i in range(b):
        values = {a: int(attrs[i, j]) for j, a in enumerate(CAPTIONED_ATTRIBUTES) if mention[i, j]}
        captions.append(concepts.CAPTION_TEMPLATES[int(template[i])].replace("{}", describe(values)))
    return captions, mention


def caption_vocabulary(tokenizer) -> list[int]:
    """Token ids that can occur in a pre-training caption (CLIP's BPE encodes words independently)."""
    words = [w for a in CAPTIONED_ATTRIBUTES for v in ATTRIBUTES[a] for w in v.split()] + [concepts.OBJECT_NOUN]
    pieces = [t.replace("{}", w) for t in concepts.CAPTION_TEMPLATES for w in words]
    return sorted({int(t) for row in tokenizer(pieces) for t in row if int(t) != 0})


def soft_targets(attrs: torch.Tensor, mention: torch.Tensor) -> torch.Tensor:
    """``M[i, j]`` = 1 where caption ``j`` truthfully describes image ``i`` (all its mentioned attributes agree)."""
    agree = attrs[:, None, :] == attrs[None, :, :]  # [image, caption, attribute]
    return (agree | ~mention[None, :, :]).all(-1).float()


def contrastive_loss(img: torch.Tensor, txt: torch.Tensor, scale: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Symmetric CLIP loss against soft targets (rows normalised per direction)."""
    logits = scale * img @ txt.t()
    t_i2t = targets / targets.sum(1, keepdim=True)
    t_t2i = targets.t() / targets.t().sum(1, keepdim=True)
    loss_i = -(t_i2t * F.log_softmax(logits, 1)).sum(1).mean()
    loss_t = -(t_t2i * F.log_softmax(logits.t(), 1)).sum(1).mean()
    return (loss_i + loss_t) / 2


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    # as open_clip's trainer: no decay on gains, biases, norms and the temperature
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        exclude = p.ndim < 2 or "bn" in name or "ln" in name or "bias" in name or "logit_scale" in name
        (no_decay if exclude else decay).append(p)
    return [{"params": no_decay, "weight_decay": 0.0}, {"params": decay, "weight_decay": weight_decay}]


def _lr_at(step: int, steps: int, lr: float, warmup: int) -> float:
    if step < warmup:
        return lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return 0.5 * lr * (1 + math.cos(math.pi * progress))


# ---- evaluation (METHOD.md §4; the engine's heads/evaluate hold the shared versions) -------------
@torch.no_grad()
def _image_features(model: nn.Module, images: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    feats = [model.encode_image(preprocess(images[i:i + batch_size])).float()
             for i in range(0, len(images), batch_size)]
    return F.normalize(torch.cat(feats), dim=-1)


def _zero_shot_weights(model: nn.Module, tokenizer, classnames: Sequence[str],
                       templates: Sequence[str]) -> torch.Tensor:
    return zero_shot_weights(model, tokenizer, classnames, templates)


def _zero_shot_accuracy(feats: torch.Tensor, weights: torch.Tensor, labels: torch.Tensor) -> float:
    return accuracy(ZS_SCALE * feats @ weights.t(), labels)


def _linear_probe_accuracy(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor,
                           num_classes: int, *, seed: int = 0, val_fraction: float = 0.1) -> float:
    """The engine's linear probe (``heads.fit_linear_probe``), scored on the test features."""
    head, _ = fit_linear_probe(train_x, train_y, num_classes, wds=LP_WEIGHT_DECAYS, val_fraction=val_fraction,
                               seed=seed, iters=LP_ITERS)
    with torch.no_grad():
        return accuracy(head(F.normalize(test_x.float(), dim=-1)), test_y)


def evaluate_concepts(model: nn.Module, keys: Sequence[str] | None = None, *, linear_probe: bool = True,
                      tokenizer=None) -> dict[str, dict]:
    """Zero-shot (and linear-probe) accuracy on the test split of each concept dataset."""
    tokenizer = tokenizer or concept_tokenizer()
    model.eval()
    out = {}
    for key in keys or concepts.concept_keys():
        task = concepts.TASKS[key]
        test = concepts.generate(key, "test")
        test_x = _image_features(model, test.images)
        row = {
            "captioned": task.captioned, "num_classes": len(task.classnames), "chance": 1.0 / len(task.classnames),
            "zs_acc": round(_zero_shot_accuracy(test_x, _zero_shot_weights(model, tokenizer, task.classnames,
                                                                           task.templates), test.labels()), 4),
            "lp_acc": None,
        }
        if linear_probe:
            train = concepts.generate(key, "train")
            row["lp_acc"] = round(_linear_probe_accuracy(_image_features(model, train.images), train.labels(), test_x,
                                                         test.labels(), len(task.classnames)), 4)
        out[key] = row
    return out


# ---- training -----------------------------------------------------------------------------------
def train_concept_clip(*, steps: int = DEFAULTS["steps"], batch_size: int = DEFAULTS["batch_size"],
                       seed: int = DEFAULTS["seed"], lr: float = DEFAULTS["lr"],
                       weight_decay: float = DEFAULTS["weight_decay"], warmup_steps: int = DEFAULTS["warmup_steps"],
                       mention_prob: float | dict[str, float] = DEFAULTS["mention_prob"],
                       progress: Callable[[int, int, float], None] | None = None) -> nn.Module:
    """Train the model from scratch and return it (in eval mode); ``progress(step, steps, loss)`` is called per step."""
    if steps < 1 or batch_size < 2:
        raise ValueError("steps must be ≥ 1 and batch_size ≥ 2")
    with torch.random.fork_rng(devices=[]):  # seed the initialisation without touching the caller's RNG
        torch.manual_seed(seed)
        model = create_concept_model()
    if model.visual.image_size[0] != IMAGE_SIZE:
        raise RuntimeError(f"{CONFIG_NAME} expects {model.visual.image_size} images; "
                           f"the concept world draws {IMAGE_SIZE}")
    tokens = _CaptionTokens(concept_tokenizer())
    gen = torch.Generator().manual_seed(concepts.stream_seed("pretrain", seed))
    opt = torch.optim.AdamW(_param_groups(model, weight_decay), lr=lr, betas=(0.9, 0.98), eps=1e-6)
    warmup = min(warmup_steps, max(1, steps // 10))
    model.train()
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = _lr_at(step, steps, lr, warmup)
        objects = sample_objects(batch_size, gen)
        attrs = torch.stack([getattr(objects, a)[:, 0] for a in CAPTIONED_ATTRIBUTES], dim=1)
        captions, mention = caption_batch(attrs, gen, mention_prob)
        images = preprocess(render(objects, gen).images)
        img = model.encode_image(images, normalize=True)
        txt = model.encode_text(tokens(captions), normalize=True)
        loss = contrastive_loss(img, txt, model.logit_scale.exp(), soft_targets(attrs, mention))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        if progress is not None:
            progress(step + 1, steps, loss.item())
    return model.eval()


def _weights_metadata() -> dict[str, str]:
    # one key: safetensors writes a metadata map in arbitrary order, and the file should be byte-reproducible
    return {"ldifs": json.dumps({"model": MODEL_NAME, "config": CONFIG_NAME, "data_version": DATA_VERSION},
                                sort_keys=True)}


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def pretrain_concept_clip(out_path: str | Path, *, steps: int = DEFAULTS["steps"],
                          batch_size: int = DEFAULTS["batch_size"], seed: int = DEFAULTS["seed"],
                          lr: float = DEFAULTS["lr"], weight_decay: float = DEFAULTS["weight_decay"],
                          warmup_steps: int = DEFAULTS["warmup_steps"],
                          mention_prob: float | dict[str, float] = DEFAULTS["mention_prob"],
                          linear_probe: bool = True, eval_keys: Sequence[str] | None = None,
                          progress: Callable[[int, int, float], None] | None = None) -> dict:
    """Pre-train ``concept-clip-tiny`` from scratch, write ``out_path`` (safetensors) and its manifest
    (``out_path`` with suffix ``.json``), and return the manifest. ``eval_keys`` limits the measured
    concept datasets (default: all of them).

    The weights are stored as float16; the accuracies in the manifest are measured on exactly the
    stored weights (test splits; linear probe fitted on the train splits).
    """
    import open_clip
    from safetensors.torch import save_file

    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    threads = torch.get_num_threads()
    t0 = time.perf_counter()
    model = train_concept_clip(steps=steps, batch_size=batch_size, seed=seed, lr=lr, weight_decay=weight_decay,
                               warmup_steps=warmup_steps, mention_prob=mention_prob, progress=progress)
    train_s = time.perf_counter() - t0
    # Rows of words the model never read hold only their random initialisation; zero them so prompts
    # with unknown words carry no accidental signal (and the file compresses well).
    vocab = caption_vocabulary(concept_tokenizer())
    with torch.no_grad():
        keep = torch.zeros(model.token_embedding.weight.shape[0], dtype=torch.bool)
        keep[vocab] = True
        model.token_embedding.weight[~keep] = 0.0
    state = {k: v.detach().to(torch.float16).contiguous() for k, v in model.state_dict().items()}
    model.load_state_dict(state, strict=True)  # measure what is shipped, not the float32 original
    tmp = out_path.with_name(out_path.name + ".tmp")
    save_file(state, str(tmp), metadata=_weights_metadata())
    tmp.chmod(0o666 & ~_umask())  # safetensors writes owner-only files; a shipped asset must be readable
    tmp.replace(out_path)
    t1 = time.perf_counter()
    accuracies = evaluate_concepts(model, eval_keys, linear_probe=linear_probe)
    eval_s = time.perf_counter() - t1
    config = json.loads((CONFIG_DIR / f"{CONFIG_NAME}.json").read_text())
    manifest = {
        "schema": MANIFEST_SCHEMA,
        "model": MODEL_NAME,
        "config_name": CONFIG_NAME,
        "config": config,
        "weights_file": out_path.name,
        "weights_sha256": _file_sha256(out_path),
        "weights_dtype": "float16",
        "token_embedding": f"rows of the {len(vocab)} tokens that occur in pre-training captions are trained; "
                           "all other rows are zero",
        "data_version": DATA_VERSION,
        "image_size": IMAGE_SIZE,
        "preprocess": {"mean": list(open_clip.OPENAI_DATASET_MEAN), "std": list(open_clip.OPENAI_DATASET_STD),
                       "resize": None},
        "training": {"steps": steps, "batch_size": batch_size, "seed": seed, "lr": lr, "weight_decay": weight_decay,
                     "warmup_steps": warmup_steps, "mention_prob": mention_prob, "schedule": "linear warmup + cosine",
                     "optimizer": "AdamW(0.9, 0.98, eps 1e-6)", "targets": "soft: every caption true of the image",
                     "captioned_attributes": list(CAPTIONED_ATTRIBUTES),
                     "caption_templates": list(concepts.CAPTION_TEMPLATES),
                     "time_s": round(train_s, 1), "threads": threads},
        "eval": {"split": "test", "sizes": dict(concepts.DEFAULT_SPLIT_SIZE), "time_s": round(eval_s, 1),
                 "zero_shot": "mean of normalised template embeddings per class; logits = 100·cos",
                 "linear_probe": "logistic regression (L-BFGS) on normalised features, "
                                 "weight decay chosen on 10% of train"},
        "accuracy": accuracies,
        "versions": {"torch": torch.__version__, "open_clip": open_clip.__version__,
                     "python": platform.python_version()},
        "created_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    manifest_path = out_path.with_suffix(".json")
    tmp = manifest_path.with_name(manifest_path.name + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    tmp.replace(manifest_path)
    return manifest


def remeasure_manifest(weights_path: str | Path = SHIPPED_WEIGHTS) -> dict:
    """Re-measure the accuracies in a model's manifest (after an evaluation change) without re-training."""
    weights_path = Path(weights_path)
    manifest_path = weights_path.with_suffix(".json")
    manifest = read_manifest(manifest_path)
    if manifest["weights_sha256"] != _file_sha256(weights_path):
        raise ValueError(f"{manifest_path.name} does not describe {weights_path.name} (checksum differs)")
    t0 = time.perf_counter()
    manifest["accuracy"] = evaluate_concepts(load_concept_clip(weights_path))
    manifest["eval"]["time_s"] = round(time.perf_counter() - t0, 1)
    manifest["eval"]["measured_at"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def read_manifest(path: str | Path = SHIPPED_MANIFEST) -> dict:
    """The manifest JSON of a pre-trained model (default: the shipped one)."""
    return json.loads(Path(path).read_text())


def format_accuracy_table(manifest: dict) -> str:
    """A plain-text table of a manifest's accuracies, one concept dataset per line."""
    lines = [f"{'dataset':<10} {'captioned':<9} {'chance':>6} {'zero-shot':>9} {'probe':>6}"]
    for key, row in manifest["accuracy"].items():
        lp = "-" if row["lp_acc"] is None else f"{row['lp_acc']:.2f}"
        lines.append(f"{key:<10} {'yes' if row['captioned'] else 'no':<9} {row['chance']:>6.2f} "
                     f"{row['zs_acc']:>9.2f} {lp:>6}")
    return "\n".join(lines)


def pretrain_demo(out: str | Path, *, steps: int = DEFAULTS["steps"], seed: int = DEFAULTS["seed"],
                  echo: Callable[[str], None] = print, every: int = 50) -> dict:
    """What ``ldifs pretrain-demo --out FILE [--steps N] [--seed S]`` runs: pre-train with progress lines,
    then print the accuracy table. Returns the manifest."""
    t0 = time.perf_counter()

    def progress(step: int, total: int, loss: float) -> None:
        if step == 1 or step % every == 0 or step == total:
            elapsed = time.perf_counter() - t0
            eta = elapsed / step * (total - step)
            echo(f"step {step}/{total}  loss {loss:.3f}  {elapsed:.0f} s elapsed, ~{eta:.0f} s left")

    echo(f"pre-training {MODEL_NAME} from scratch: {steps} steps, seed {seed}, {torch.get_num_threads()} threads")
    manifest = pretrain_concept_clip(out, steps=steps, seed=seed, progress=progress)
    echo(format_accuracy_table(manifest))
    echo(f"wrote {out} and {Path(out).with_suffix('.json')} (training {manifest['training']['time_s']:.0f} s, "
         f"evaluation {manifest['eval']['time_s']:.0f} s)")
    return manifest
