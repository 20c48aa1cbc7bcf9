"""Low-rank adapters (LoRA, Hu et al. 2021) on an open_clip image tower, as weight parametrisations.

Each adapted weight ``W`` (shape ``[out, …]``, fan-in ``n`` = the product of the other dims) gets two
trainable matrices ``A [r, n]`` and ``B [out, r]`` and is read, wherever the model reads it, as

    W + s · (B @ A).view_as(W),   s = lora_alpha / r   (the LoRA paper's and peft's convention)

``B`` starts at zero, so an adapted model computes exactly what the pre-trained one does until the first
update; ``A`` starts as peft's and loralib's (Kaiming-uniform, a = √5), from its own seeded generator.

Why ``torch.nn.utils.parametrize`` and not ``peft``: open_clip's ViT attention keeps q, k and v in one
packed ``in_proj_weight`` of ``nn.MultiheadAttention`` (or of its own ``Attention``), and the ResNet
attention pool hands its ``q/k/v/c_proj`` weights straight to ``F.multi_head_attention_forward`` — no
``Linear.forward`` is ever called there for a wrapper to intercept. peft's support for MultiheadAttention
is experimental and peft pulls in transformers. A parametrisation changes what *reading the weight*
returns, so it works identically for a packed projection, a linear layer, a 1×1 or 3×3 convolution and
the attention pool, without re-implementing any forward; and folding the adapter in (``merge_adapters``)
writes exactly the tensor the forward used.

What that costs: classic LoRA dropout drops entries of the adapter's *input*, which a weight-level adapter
never sees. ``dropout`` here drops whole rank components (a column of ``B`` with its row of ``A``, redrawn
at every forward in training mode, survivors scaled by 1/(1 − p)) — the ``rank_dropout`` of peft's
LyCORIS adapters. The LoRA method seeds the masks from the training step's own generator (a pure function
of seed and step), so a resumed run draws the same masks as an uninterrupted one.
"""
from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils import parametrize

from .backbones import tower_kind

FORMAT = "ldifs.lora/1"  # metadata "format" of an adapter file
TARGETS = ("attention+mlp", "attention", "attention_in", "attention_out", "mlp")
_PARTS = {"attention+mlp": ("attn_in", "attn_out", "mlp"), "attention": ("attn_in", "attn_out"),
          "attention_in": ("attn_in",), "attention_out": ("attn_out",), "mlp": ("mlp",)}


class LowRankDelta(nn.Module):
    """The parametrisation ``W ↦ W + scale · (B @ A).view_as(W)`` of one weight."""

    def __init__(self, weight: torch.Tensor, rank: int, scale: float, dropout: float, gen: torch.Generator):
        super().__init__()
        fan_in = weight[0].numel()
        a = torch.empty(rank, fan_in, dtype=weight.dtype)
        bound = 1 / math.sqrt(fan_in)  # kaiming_uniform_(a=sqrt(5)) on [r, fan_in], with our generator
        a.uniform_(-bound, bound, generator=gen)
        self.lora_A = nn.Parameter(a.to(weight.device))
        self.lora_B = nn.Parameter(torch.zeros(weight.shape[0], rank, dtype=weight.dtype, device=weight.device))
        self.scale, self.dropout, self.shape = float(scale), float(dropout), tuple(weight.shape)
        self.gen: torch.Generator | None = None  # where rank-dropout masks come from (None: torch's global one)

    def delta(self) -> torch.Tensor:
        """``scale · B @ A`` in the weight's shape (rank components dropped in training mode)."""
        b = self.lora_B
        if self.training and self.dropout > 0:
            keep = (torch.rand(b.shape[1], generator=self.gen) >= self.dropout).to(b.dtype) / (1 - self.dropout)
            b = b * keep.to(b.device)
        return (self.scale * (b @ self.lora_A)).view(self.shape)

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight + self.delta()


@dataclass(frozen=True)
class AdapterSpec:
    """How to adapt a tower (the LoRA method's params, without the training ones)."""

    rank: int = 16
    lora_alpha: float = 64.0
    dropout: float = 0.0
    targets: str = "attention+mlp"

    @property
    def scale(self) -> float:
        return self.lora_alpha / self.rank


def target_weights(visual: nn.Module, targets: str) -> list[tuple[str, nn.Module, str]]:
    """(name relative to the tower, owning module, parameter name) of every weight ``targets`` adapts.

    ViT: ``attention_in`` = each block's packed q/k/v ``in_proj_weight``, ``attention_out`` = its
    ``out_proj``, ``mlp`` = its ``mlp.c_fc`` and ``mlp.c_proj``. ResNet (ModifiedResNet): ``attention_*``
    = the attention pool's ``q/k/v_proj`` and ``c_proj`` (its only attention), ``mlp`` = every bottleneck's
    1×1 convolutions (``conv1``, ``conv3`` and the 1×1 ``downsample`` conv: the per-position channel
    mixing a transformer's MLP does); the 3×3 convolutions and the stem are not adapted.
    """
    if targets not in _PARTS:
        raise ValueError(f"targets must be one of {', '.join(TARGETS)}, got {targets!r}")
    parts = _PARTS[targets]
    out: list[tuple[str, nn.Module, str]] = []
    if tower_kind(visual) == "vit":
        for i, blk in enumerate(visual.transformer.resblocks):
            pre = f"transformer.resblocks.{i}"
            if "attn_in" in parts:
                out.append((f"{pre}.attn.in_proj_weight", blk.attn, "in_proj_weight"))
            if "attn_out" in parts:
                out.append((f"{pre}.attn.out_proj.weight", blk.attn.out_proj, "weight"))
            if "mlp" in parts:
                out += [(f"{pre}.mlp.{n}.weight", m, "weight") for n, m in blk.mlp.named_children()
                        if isinstance(m, nn.Linear)]
        return out
    pool = visual.attnpool
    if "attn_in" in parts:
        out += [(f"attnpool.{n}.weight", getattr(pool, n), "weight") for n in ("q_proj", "k_proj", "v_proj")]
    if "attn_out" in parts:
        out.append(("attnpool.c_proj.weight", pool.c_proj, "weight"))
    if "mlp" in parts:
        for layer in ("layer1", "layer2", "layer3", "layer4"):
            for name, m in getattr(visual, layer).named_modules():
                if isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1):
                    out.append((f"{layer}.{name}.weight", m, "weight"))
    return out


def _frozen_batchnorm(module: nn.Module, _inputs) -> None:
    # the pre-trained running statistics are part of the frozen model: training must not move them
    module.training = False


class Adapters:
    """The adapters attached to one tower: their parameters, their tensors, and folding them in."""

    def __init__(self, visual: nn.Module, spec: AdapterSpec, *, seed: int = 0, prefix: str = "visual."):
        if parametrize.is_parametrized(visual):
            raise ValueError("this image tower already carries adapters")
        self.visual, self.spec, self.prefix = visual, spec, prefix
        gen = torch.Generator().manual_seed(seed * 1_000_003 + 4_271)
        self.deltas: dict[str, LowRankDelta] = {}
        self._where: dict[str, tuple[nn.Module, str]] = {}
        for name, module, pname in target_weights(visual, spec.targets):
            w = getattr(module, pname)
            delta = LowRankDelta(w.detach(), spec.rank, spec.scale, spec.dropout, gen)
            parametrize.register_parametrization(module, pname, delta)
            self.deltas[prefix + name] = delta
            self._where[prefix + name] = (module, pname)
        self._bn_hooks = [m.register_forward_pre_hook(_frozen_batchnorm) for m in visual.modules()
                          if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        self.merged = False

    def named_parameters(self) -> Iterator[tuple[str, nn.Parameter]]:
        """``<weight name>.lora_A`` / ``.lora_B`` (names relative to the CLIP model) and the parameter."""
        for name, d in self.deltas.items():
            yield f"{name}.lora_A", d.lora_A
            yield f"{name}.lora_B", d.lora_B

    def seed_dropout(self, seed: int) -> None:
        """Draw the next rank-dropout masks from generators seeded with ``seed`` (one per adapter)."""
        for i, d in enumerate(self.deltas.values()):
            d.gen = torch.Generator().manual_seed(seed + i)

    def tensors(self) -> dict[str, torch.Tensor]:
        """The adapter alone, as ``named_parameters`` names it (detached)."""
        return {n: p.detach() for n, p in self.named_parameters()}

    def load(self, tensors: dict[str, torch.Tensor]) -> None:
        """Set every adapter from ``tensors`` (exactly this adapter's names and shapes, else ValueError)."""
        own = dict(self.named_parameters())
        if set(tensors) != set(own):
            missing, extra = sorted(set(own) - set(tensors)), sorted(set(tensors) - set(own))
            raise ValueError(f"not this run's LoRA adapter (missing {missing[:2]}, unexpected {extra[:2]})")
        bad = [n for n, p in own.items() if tuple(tensors[n].shape) != tuple(p.shape)]
        if bad:
            raise ValueError(f"LoRA adapter {bad[0]} has shape {tuple(tensors[bad[0]].shape)}, "
                             f"expected {tuple(own[bad[0]].shape)}")
        with torch.no_grad():
            for n, p in own.items():
                p.copy_(tensors[n])

    @torch.no_grad()
    def merge(self) -> None:
        """Fold every adapter into its weight (``W ← W + s·B@A``, the very tensor the forward used) and
        remove the parametrisations: the tower is a plain open_clip tower again, with its usual names."""
        if self.merged:
            return
        for d in self.deltas.values():
            d.eval()  # no rank dropout in the folded weight
        for module, pname in self._where.values():
            parametrize.remove_parametrizations(module, pname, leave_parametrized=True)
        for h in self._bn_hooks:
            h.remove()
        self.merged = True

    def metadata(self) -> dict[str, str]:
        """What an adapter file says about itself (safetensors metadata is text only)."""
        s = self.spec
        return {"format": FORMAT, "rank": str(s.rank), "lora_alpha": repr(s.lora_alpha), "scaling": repr(s.scale),
                "targets": s.targets, "dropout": repr(s.dropout)}


def merged_state(base: dict[str, torch.Tensor], adapter: dict[str, torch.Tensor],
                 scaling: float) -> dict[str, torch.Tensor]:
    """A full model's state dict with an adapter file's tensors folded in: ``W + scaling·(B @ A)``.

    ``base``: the plain CLIP state dict the adapter was trained on; ``adapter``: ``<weight>.lora_A`` /
    ``<weight>.lora_B`` pairs (``final/adapter.safetensors``; ``scaling`` is in its metadata)."""
    out = dict(base)
    names = {k[: -len(".lora_A")] for k in adapter if k.endswith(".lora_A")}
    if not names or {f"{n}.lora_{x}" for n in names for x in "AB"} != set(adapter):
        raise ValueError("an adapter holds <weight>.lora_A and <weight>.lora_B pairs only")
    for n in sorted(names):
        if n not in base:
            raise ValueError(f"the adapter adapts {n}, which the base model does not have")
        w = base[n]
        out[n] = w + (scaling * (adapter[f"{n}.lora_B"].to(w) @ adapter[f"{n}.lora_A"].to(w))).view(w.shape)
    return out
