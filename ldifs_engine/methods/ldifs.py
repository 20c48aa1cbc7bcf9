"""LDIFS: keep the fine-tuned tower's intermediate features close to the pre-trained ones (METHOD.md §2)."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..lazy import torch

from ..backbones import reference_embedding, reference_taps
from ..fields import param
from .base import CEFamily

EPS = 1e-10


@dataclass(frozen=True)
class LDIFSParams:
    alpha: float = param(10.0, "Weight of the feature-distance term (paper default 10).", min=0.0, max=1e9)
    normalize: str = param("tokens", "L2-normalise each tap along tokens (the authors' code, dim 1) or per token over channels.",
                        choices=("tokens", "channels"))
    taps: str = param("official", "Which features: official = ln_pre + every L/4 blocks (5 taps); all_blocks = every block.",
                   choices=("official", "all_blocks"))
    final_embedding: bool = param(False, "Also tap the final image embedding (after ln_post and projection) — not in the paper.")
    reference: str = param("previous", "Reference tower in a continual sequence (data.sequence): previous = the model at the "
                        "start of each stage (the authors' code), pretrained = the original model. One task: the same.",
                        choices=("previous", "pretrained"))


def _norm_dim(t: torch.Tensor, normalize: str) -> int:
    if normalize == "tokens" or t.ndim != 3:
        return 1  # [B,T,D]: token axis (authors' code); [B,C,H,W] and [B,E]: channels
    return -1


def ldifs_distance(reference_taps: Sequence[torch.Tensor], taps: Sequence[torch.Tensor], normalize: str = "tokens",
                   per_sample: bool = False) -> torch.Tensor:
    """Mean over taps (and batch) of the mean squared difference of L2-normalised features.

    Each tap is divided by its L2 norm along dim 1 (``tokens``; for ``channels`` the feature axis of
    ``[B,T,D]`` tensors) plus 1e-10; ``d_l(b)`` is the mean over all non-batch elements. Returns a
    scalar, or ``[B]`` with ``per_sample=True``.
    """
    if normalize not in ("tokens", "channels"):
        raise ValueError(f"normalize must be 'tokens' or 'channels', got {normalize!r}")
    if len(reference_taps) != len(taps) or not taps:
        raise ValueError(f"got {len(reference_taps)} reference taps and {len(taps)} taps")
    per_tap = []
    for r, t in zip(reference_taps, taps):
        if r.shape != t.shape:
            raise ValueError(f"tap shapes differ: {tuple(r.shape)} vs {tuple(t.shape)}")
        d = _norm_dim(t, normalize)
        rn = r / (r.norm(dim=d, keepdim=True) + EPS)
        tn = t / (t.norm(dim=d, keepdim=True) + EPS)
        per_tap.append((rn.to(tn.dtype) - tn).pow(2).flatten(1).mean(1))
    dist = torch.stack(per_tap, dim=1).mean(1)  # [B]
    return dist if per_sample else dist.mean()


class LDIFS(CEFamily):
    name = "ldifs"
    title = "LDIFS (feature-space distance)"
    description = ("Cross-entropy + alpha × distance between the fine-tuned and the frozen pre-trained image "
                   "tower's intermediate features on the training batch. Preserves what the model knew.")
    Params = LDIFSParams
    needs_reference = True
    budget_param, budget_range = "alpha", (1.0, 1000.0)

    def __init__(self, params=None):
        super().__init__(params)
        self.tap_layout = self.params.taps

    def regularizer(self, st, images, emb, taps):
        ref = reference_taps(st.reference, images, layout=self.tap_layout)
        if self.params.final_embedding:
            ref = ref + [reference_embedding(st.reference, images)]
            taps = list(taps) + [emb]
        return self.params.alpha * ldifs_distance(ref, taps, self.params.normalize)
