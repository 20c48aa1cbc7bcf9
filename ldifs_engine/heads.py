"""Classifier heads: zero-shot heads from class prompts, and linear probes (METHOD.md §4)."""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

ZS_SCALE = 100.0  # logits = 100 · cos(image, class), as CLIP's zero-shot evaluation
DEFAULT_WDS = (1e-4, 1e-3, 1e-2, 1e-1)


@torch.no_grad()
def zero_shot_weights(model: nn.Module, tokenizer, classnames: Sequence[str], templates: Sequence[str],
                      *, device: str | torch.device = "cpu", batch_size: int = 512) -> torch.Tensor:
    """``[C, E]``: per class, the mean of L2-normalised text embeddings over templates, renormalised."""
    if not classnames or not templates:
        raise ValueError("zero-shot head needs at least one class name and one template")
    prompts = [t.replace("{}", c) for c in classnames for t in templates]
    embs = []
    for i in range(0, len(prompts), batch_size):
        tokens = tokenizer(prompts[i:i + batch_size]).to(device)
        embs.append(F.normalize(model.encode_text(tokens).float(), dim=-1))
    emb = torch.cat(embs).view(len(classnames), len(templates), -1).mean(1)
    return F.normalize(emb, dim=-1)


def zs_head(weights: torch.Tensor) -> nn.Linear:
    """A linear head on normalised image embeddings whose logits are the zero-shot logits."""
    head = nn.Linear(weights.shape[1], weights.shape[0])
    with torch.no_grad():
        head.weight.copy_(ZS_SCALE * weights)
        head.bias.zero_()
    return head


def _fit_logreg(x: torch.Tensor, y: torch.Tensor, num_classes: int, wd: float, iters: int) -> nn.Linear:
    head = nn.Linear(x.shape[1], num_classes)
    nn.init.zeros_(head.weight)
    nn.init.zeros_(head.bias)
    opt = torch.optim.LBFGS(head.parameters(), lr=1.0, max_iter=iters, history_size=20,
                            line_search_fn="strong_wolfe", tolerance_grad=1e-7, tolerance_change=1e-10)

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(head(x), y) + wd * head.weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return head


def fit_linear_probe(feats: torch.Tensor, labels: torch.Tensor, num_classes: int, *,
                     wds: Sequence[float] = DEFAULT_WDS, val_fraction: float = 0.1, seed: int = 0,
                     iters: int = 100) -> tuple[nn.Linear, dict]:
    """Logistic regression on L2-normalised features: weight decay chosen on a seeded held-out share
    of train, then refit on all of train. The head size comes from ``num_classes`` (the class list),
    never from the labels present."""
    x = F.normalize(feats.float(), dim=-1)
    y = labels.long()
    with torch.enable_grad():
        n = len(x)
        g = torch.Generator().manual_seed(seed)
        perm = torch.randperm(n, generator=g)
        n_val = max(1, int(round(n * val_fraction))) if n >= 10 and len(wds) > 1 else 0
        scores = {}
        if n_val:
            val, tr = perm[:n_val], perm[n_val:]
            for wd in wds:
                h = _fit_logreg(x[tr], y[tr], num_classes, wd, iters)
                with torch.no_grad():
                    scores[wd] = (h(x[val]).argmax(1) == y[val]).float().mean().item()
            best = max(wds, key=lambda w: (scores[w], w))  # ties → stronger regularisation
        else:
            best = wds[0]
        head = _fit_logreg(x, y, num_classes, best, iters)
    return head.requires_grad_(False), {"weight_decay": best, "val_scores": scores}
