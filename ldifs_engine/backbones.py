"""Backbone catalog, loading, frozen reference copies and LDIFS feature taps.

Only catalog keys reach open_clip: a user never supplies the ``pretrained=`` string or a path.
"""
from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import ModelUnavailable
from .lazy import nn, torch
from .registry import Registry

if TYPE_CHECKING:
    from .frozen import FrozenReference

ASSETS = Path(__file__).parent / "assets"
_CONFIGS_ADDED = False


@dataclass(frozen=True)
class BackboneInfo:
    """One allowed (architecture, weights) pair."""

    key: str
    arch: str  # open_clip model name
    pretrained: str | None = None  # open_clip pretrained tag (downloaded) — None for built-ins
    builtin_weights: str | None = None  # safetensors file in ldifs_engine/assets
    title: str = ""
    description: str = ""
    tower: str = "vit"  # vit | resnet: decides the LDIFS tap layout
    tags: tuple[str, ...] = field(default=())
    # Operator-registered entries (LDIFS_BACKBONES): a local safetensors file or a pre-filled model cache.
    weights_file: str | None = None
    cache_dir: str | None = None
    quick_gelu: bool | None = None  # None: what open_clip's pretrained config of (arch, tag) says
    operator: bool = False

    @property
    def needs_download(self) -> bool:
        return self.pretrained is not None and not self.operator

    @property
    def random_init(self) -> bool:
        return self.pretrained is None and self.builtin_weights is None and self.weights_file is None

    def meta(self) -> dict:
        # No file paths here: this goes to users, who pick keys only.
        return {
            "key": self.key, "arch": self.arch, "pretrained": self.pretrained, "title": self.title or self.key,
            "description": self.description, "tower": self.tower, "needs_download": self.needs_download,
            "random_init": self.random_init, "builtin": not self.needs_download and not self.operator,
            "operator": self.operator, "tags": list(self.tags),
        }


BACKBONES: Registry[BackboneInfo] = Registry("backbone")


def register_backbone(info: BackboneInfo) -> BackboneInfo:
    return BACKBONES.register(info.key, info)


register_backbone(BackboneInfo(
    "concept-clip-tiny", "ldifs-concept-vit", builtin_weights="concept-clip-tiny.safetensors",
    title="Concept CLIP (built-in, offline)",
    description="A tiny CLIP pre-trained by this project on its concept world. No download; runs on CPU in seconds.",
    tags=("builtin", "offline"),
))
register_backbone(BackboneInfo(
    "tiny-vit-random", "ldifs-concept-vit", title="Tiny ViT (random init, tests)",
    description="The built-in architecture with random weights: for tests and smoke runs only.", tags=("test",),
))
register_backbone(BackboneInfo(
    "tiny-rn-random", "ldifs-tiny-rn", title="Tiny ResNet (random init, tests)", tower="resnet",
    description="A tiny ModifiedResNet CLIP with random weights: for tests of the ResNet taps.", tags=("test",),
))
for _arch, _tag, _tower, _title in [
    ("ViT-B-32", "openai", "vit", "ViT-B/32 · OpenAI (the paper's)"),
    ("ViT-B-16", "openai", "vit", "ViT-B/16 · OpenAI (the paper's)"),
    ("ViT-L-14", "openai", "vit", "ViT-L/14 · OpenAI"),
    ("RN50", "openai", "resnet", "RN50 · OpenAI"),
    ("RN101", "openai", "resnet", "RN101 · OpenAI"),
    ("ViT-B-32", "laion2b_s34b_b79k", "vit", "ViT-B/32 · LAION-2B"),
    ("ViT-B-16", "laion2b_s34b_b88k", "vit", "ViT-B/16 · LAION-2B"),
    ("ViT-L-14", "laion2b_s32b_b82k", "vit", "ViT-L/14 · LAION-2B"),
    ("ViT-B-32", "datacomp_xl_s13b_b90k", "vit", "ViT-B/32 · DataComp-XL"),
]:
    register_backbone(BackboneInfo(
        f"{_arch}/{_tag}", _arch, pretrained=_tag, tower=_tower, title=_title,
        description=f"open_clip {_arch} with '{_tag}' weights (downloaded once into the model cache).",
        tags=("download",),
    ))


OPERATOR_PROBLEMS: list[str] = []  # one line per bad entry of $LDIFS_BACKBONES (entries left out)


def register_operator_backbones() -> list[str]:
    """Add the valid entries of ``$LDIFS_BACKBONES`` to the catalog; returns one line per problem."""
    from .backbone_file import ENV, parse_file

    path = os.environ.get(ENV, "").strip()
    if not path:
        return []
    entries, problems = parse_file(path, builtin_keys={k for k, b in BACKBONES.items() if not b.operator})
    for e in entries:
        if e.key in BACKBONES:
            continue  # registered by an earlier call in this process
        register_backbone(BackboneInfo(
            e.key, e.arch, pretrained=e.pretrained, title=e.title, tower=e.tower, weights_file=e.weights,
            cache_dir=e.cache_dir, quick_gelu=e.quick_gelu, operator=True, tags=("operator", "offline"),
            description=e.description or f"open_clip {e.arch}, registered by the operator (local weights).",
        ))
    OPERATOR_PROBLEMS[:] = problems
    return problems


register_operator_backbones()


def quick_gelu_for(info: BackboneInfo) -> bool:
    """The activation the weights were trained with: the operator's word, else open_clip's pretrained
    config of (arch, tag) (OpenAI's CLIPs use QuickGELU; open_clip's plain configs build GELU)."""
    if info.quick_gelu is not None:
        return info.quick_gelu
    if info.pretrained is None:
        return False
    import open_clip

    return bool((open_clip.get_pretrained_cfg(info.arch, info.pretrained) or {}).get("quick_gelu", False))


def create_kwargs(info: BackboneInfo, cache_dir: str | Path | None = None) -> dict:
    """The ``open_clip.create_model`` arguments of a catalog entry (one place, so every build agrees)."""
    cache = info.cache_dir or (str(cache_dir) if cache_dir else None)
    kw = {"model_name": info.arch, "pretrained": info.pretrained, "force_quick_gelu": quick_gelu_for(info)}
    if info.pretrained is not None:
        kw.update(cache_dir=cache, require_pretrained=True)
    return kw


def check_operator_shapes(*, drop: bool = True) -> list[str]:
    """Operator entries whose safetensors tensors do not match their architecture (one line each);
    with ``drop`` such entries leave the catalog.

    Builds each architecture on the ``meta`` device (no memory, no weights read) and compares the
    file's header; meant for places where torch is loaded anyway (the engine, ``ldifs backbones``).
    With no operator entry holding a weights file there is nothing to build: torch and open_clip are
    not imported (``ldifs backbones`` answers in a fraction of a second)."""
    checked = [(key, info) for key, info in BACKBONES.items() if info.operator and info.weights_file]
    if not checked:
        return []
    import open_clip

    from .backbone_file import ENV, safetensors_header

    _add_builtin_configs()
    problems = []
    for key, info in checked:
        try:
            with torch.device("meta"):  # build without allocating or initialising anything
                model = open_clip.create_model(info.arch, pretrained=None, force_quick_gelu=quick_gelu_for(info),
                                               device="meta")
            expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
            got = safetensors_header(Path(info.weights_file))
        except Exception as e:  # noqa: BLE001 — any failure here is this entry's problem
            problems.append(f"{ENV}: {key}: cannot check {Path(info.weights_file).name}: {str(e)[:160]}")
            if drop:
                BACKBONES.unregister(key)
            continue
        missing = sorted(set(expected) - set(got))
        extra = sorted(set(got) - set(expected))
        wrong = [k for k in expected if k in got and got[k] != expected[k]]
        if missing or extra or wrong:
            detail = "; ".join(x for x in (
                f"missing {len(missing)} (e.g. {missing[0]})" if missing else "",
                f"unexpected {len(extra)} (e.g. {extra[0]})" if extra else "",
                f"wrong shape {len(wrong)} (e.g. {wrong[0]}: {got[wrong[0]]} instead of {expected[wrong[0]]})"
                if wrong else "") if x)
            problems.append(f"{ENV}: {key}: {Path(info.weights_file).name} does not fit {info.arch}: {detail}")
        else:
            continue
        if drop:
            BACKBONES.unregister(key)
    return problems


def _add_builtin_configs() -> None:
    global _CONFIGS_ADDED
    if not _CONFIGS_ADDED:
        import open_clip

        open_clip.add_model_config(ASSETS / "model_configs")
        _CONFIGS_ADDED = True


def catalog_check() -> list[str]:
    """Catalog entries whose (arch, tag) open_clip does not list (should be empty)."""
    import open_clip

    listed = set(open_clip.list_pretrained())
    return [b.key for _, b in BACKBONES.items() if b.pretrained and (b.arch, b.pretrained) not in listed]


class _BelowError(logging.Filter):
    """Drops records under ERROR that open_clip's code logs (it logs on the root logger)."""

    def __init__(self, package_dir: str):
        super().__init__()
        self.package_dir = package_dir

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.ERROR or not record.pathname.startswith(self.package_dir)


@contextlib.contextmanager
def quiet_open_clip() -> Iterator[None]:
    """Silence open_clip's warnings for the ``with`` block only: the process's logging is the entry
    point's (no level raised, no handler left behind; the root logger gets a NullHandler meanwhile so
    that ``logging.warning`` does not call ``basicConfig``)."""
    import open_clip

    root = logging.getLogger()
    quiet = _BelowError(str(Path(open_clip.__file__).parent))
    placeholder = logging.NullHandler() if not root.handlers else None
    root.addFilter(quiet)
    if placeholder is not None:
        root.addHandler(placeholder)
    try:
        yield
    finally:
        root.removeFilter(quiet)
        if placeholder is not None:
            root.removeHandler(placeholder)


def load_backbone(key: str, *, cache_dir: str | Path | None = None, device: str | torch.device = "cpu") -> nn.Module:
    """Build the CLIP model of a catalog key with its weights, in eval mode.

    Raises ``ModelUnavailable`` with one readable line when weights cannot be had (offline, corrupt).
    """
    import open_clip

    info = BACKBONES.get(key)
    _add_builtin_configs()
    try:
        with quiet_open_clip():  # it warns when a model starts random: built-in / operator weights come next
            model = open_clip.create_model(**create_kwargs(info, cache_dir))
        if info.builtin_weights:
            load_safetensors_into(model, ASSETS / info.builtin_weights)
        elif info.weights_file:
            load_safetensors_into(model, Path(info.weights_file))
    except ModelUnavailable:
        raise
    except Exception as e:  # network, hub and file errors all mean the same thing to a user
        hint = " (no internet? pre-download the weights into the model cache or use the built-in concept-clip-tiny)"
        raise ModelUnavailable(f"backbone {key!r}: weights could not be loaded: {type(e).__name__}: {str(e)[:200]}{hint}") from None
    return model.to(device).eval()


def load_safetensors_into(module: nn.Module, path: Path, *, prefix: str = "") -> None:
    """Load a safetensors file with strict key and shape checks (never pickle)."""
    from safetensors.torch import load_file

    if not path.is_file():
        raise ModelUnavailable(f"weights file {path.name} is missing")
    try:
        state = load_file(str(path))
    except Exception as e:
        raise ModelUnavailable(f"weights file {path.name} is not valid safetensors: {e}") from None
    if prefix:
        state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    bad_shape = [k for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape)]
    if missing or unexpected or bad_shape:
        raise ModelUnavailable(
            f"weights file {path.name} does not match the architecture "
            f"(missing {missing[:3]}, unexpected {unexpected[:3]}, wrong shape {bad_shape[:3]})"
        )
    module.load_state_dict(state, strict=True)


def weights_fingerprint(model: nn.Module) -> str:
    """A cheap content hash of the weights (keys, shapes and a strided sample of values)."""
    h = hashlib.sha256()
    for k, v in model.state_dict().items():
        flat = v.detach().reshape(-1)
        h.update(k.encode())
        h.update(str(tuple(v.shape)).encode())
        if flat.numel():
            sample = flat[:: max(1, flat.numel() // 64)].float().cpu().numpy().tobytes()
            h.update(sample)
    return h.hexdigest()


def preprocess_cfg(model: nn.Module) -> dict:
    """Image size, mean and std the tower expects."""
    import open_clip

    cfg = dict(getattr(model.visual, "preprocess_cfg", {}) or {})
    size = cfg.get("size", getattr(model.visual, "image_size", 224))
    if isinstance(size, (tuple, list)):
        size = size[0]
    return {
        "size": int(size),
        "mean": tuple(cfg.get("mean", open_clip.OPENAI_DATASET_MEAN)),
        "std": tuple(cfg.get("std", open_clip.OPENAI_DATASET_STD)),
        "interpolation": cfg.get("interpolation", "bicubic"),
    }


def get_tokenizer(key: str):
    """The open_clip tokenizer of a catalog key's architecture."""
    import open_clip

    _add_builtin_configs()
    return open_clip.get_tokenizer(BACKBONES.get(key).arch)


# ---- feature taps ----------------------------------------------------------------------------
def tower_kind(visual: nn.Module) -> str:
    if hasattr(visual, "transformer") and hasattr(visual, "ln_pre"):
        return "vit"
    if all(hasattr(visual, n) for n in ("layer1", "layer4", "avgpool")):
        return "resnet"
    raise ValueError(f"no LDIFS tap layout for image tower {type(visual).__name__}")


def tap_points(visual: nn.Module, layout: str = "official") -> list[nn.Module]:
    """Modules whose outputs are the LDIFS taps (METHOD.md §2).

    ``official``: ViT → ln_pre output + the outputs after every L/4 blocks (5 taps for any depth
    divisible by 4; otherwise 4 evenly spaced block outputs ending with the last);
    ResNet → stem (after avgpool) + layer1..layer4. ``all_blocks``: ln_pre + every block (ViT).
    """
    kind = tower_kind(visual)
    if kind == "resnet":
        return [visual.avgpool, visual.layer1, visual.layer2, visual.layer3, visual.layer4]
    blocks = list(visual.transformer.resblocks)
    depth = len(blocks)
    if layout == "all_blocks":
        idx = list(range(depth))
    elif layout == "official":
        idx = sorted({math.ceil(depth * k / 4) - 1 for k in (1, 2, 3, 4)})
        idx = [i for i in idx if i >= 0]
    else:
        raise ValueError(f"unknown tap layout {layout!r}")
    return [visual.ln_pre] + [blocks[i] for i in idx]


class _StopForward(Exception):
    """Raised by the last tap's hook so a reference tower does not run past it."""


@contextlib.contextmanager
def _capture(points: Sequence[nn.Module], stop_after_last: bool) -> Iterator[list]:
    store: list = [None] * len(points)
    handles = []

    def make(i: int):
        def hook(_mod, _inp, out):
            t = out[0] if isinstance(out, tuple) else out
            store[i] = t
            if stop_after_last and i == len(points) - 1:
                raise _StopForward

        return hook

    for i, p in enumerate(points):
        handles.append(p.register_forward_hook(make(i)))
    try:
        yield store
    finally:
        for h in handles:
            h.remove()


def _batch_first(visual: nn.Module, taps: list[torch.Tensor], batch: int) -> list[torch.Tensor]:
    # open_clip >= 2.26 transformers are batch-first; older ones are [T, B, D]. Never guess from
    # shapes alone when T == B: use the module flag.
    if tower_kind(visual) != "vit":
        return taps
    if getattr(visual.transformer, "batch_first", True):
        return taps
    return [taps[0]] + [t.transpose(0, 1) for t in taps[1:]]  # old open_clip: ln_pre ran before the permute


def image_taps(
    visual: nn.Module, images: torch.Tensor, *, layout: str = "official"
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """One forward of an open_clip image tower → (image embedding as ``encode_image`` gives it,
    before normalisation; the LDIFS taps). Taps come from this same forward (hooks)."""
    points = tap_points(visual, layout)
    with _capture(points, stop_after_last=False) as store:
        emb = visual(images)
    if isinstance(emb, tuple):
        emb = emb[0]
    return emb, _batch_first(visual, list(store), images.shape[0])


def reference_taps(reference: nn.Module, images: torch.Tensor, *, layout: str = "official") -> list[torch.Tensor]:
    """Taps of the frozen reference tower; runs only up to the last tap, without autograd."""
    tower = getattr(reference, "tower", reference)
    points = tap_points(tower, layout)
    # no_grad rather than inference_mode: its outputs may be saved by the distance's autograd graph
    # without a defensive copy of every tap.
    with torch.no_grad(), _capture(points, stop_after_last=True) as store:
        try:
            reference(images)
        except _StopForward:
            pass
    return _batch_first(tower, list(store), images.shape[0])


def reference_embedding(reference: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Full forward of the reference tower (for the optional final-embedding tap)."""
    with torch.no_grad():
        out = reference(images)
    return out[0] if isinstance(out, tuple) else out


def frozen_copy(visual: nn.Module) -> FrozenReference:
    """The reference model of LDIFS (and the anchor of L2-SP): frozen three ways."""
    from .frozen import FrozenReference  # an nn.Module subclass: defining it needs torch, so not at import

    return FrozenReference(visual)
