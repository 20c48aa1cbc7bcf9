"""Classifier heads: zero-shot heads from class prompts, and linear probes (METHOD.md §4)."""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

ZS_SCALE = 100.0  # logits = 100 · cos(image, class), as CLIP's zero-shot evaluation
DEFAULT_WDS = (1e-4, 1e-3, 1e-2, 1e-1)
# Two classes whose normalised prompt embeddings are closer than this give zero-shot logits that
# differ by at most ZS_SCALE · 1e-3 = 0.1 for any image: the head cannot tell them apart, and which
# one wins is decided by class order or rounding, not by the image.
INDISTINGUISHABLE_TOL = 1e-3
INDISTINGUISHABLE_NOTE = "class prompts are indistinguishable to this model"


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
        embs.append(F.normalize(encode_prompts(model, tokens).float(), dim=-1))
    emb = torch.cat(embs).view(len(classnames), len(templates), -1).mean(1)
    return F.normalize(emb, dim=-1)


MIN_TRIM = 32  # token positions a cut must save to be worth it (see encode_prompts)


def encode_prompts(model: nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """``model.encode_text(tokens)``, without the padding after the longest prompt where that saves a lot.

    CLIP's text tower is causal and pools at the end-of-text token (the highest token id), so the
    positions after the longest prompt's end never reach a pooled feature: cutting them off gives the same
    embeddings in exact arithmetic, and a ~7x cheaper zero-shot head for CIFAR-style prompts (11 of 77
    tokens). Not bit for bit — the attention's sums run over fewer (zero) terms, about 1e-6 apart — so a
    cut is only made when it saves at least ``MIN_TRIM`` positions: short contexts (the built-in tiny
    model's 16) are encoded exactly as before. Other text towers go through ``encode_text`` as they are."""
    import open_clip
    from open_clip.transformer import text_global_pool

    n = int(tokens.argmax(dim=-1).max()) + 1 if tokens.numel() else tokens.shape[-1]
    mask, pos = getattr(model, "attn_mask", None), getattr(model, "positional_embedding", None)
    plain_clip = (type(model).encode_text is open_clip.model.CLIP.encode_text
                  and getattr(model, "text_pool_type", None) == "argmax" and isinstance(mask, torch.Tensor)
                  and isinstance(pos, torch.Tensor) and pos.shape[0] == tokens.shape[-1] == mask.shape[-1]
                  and torch.equal(torch.isneginf(mask), torch.ones(mask.shape, dtype=torch.bool,
                                                                    device=mask.device).triu(1)))  # causal
    if not plain_clip or tokens.shape[-1] - n < MIN_TRIM:
        return model.encode_text(tokens)
    t = tokens[:, :n]
    cast = model.transformer.get_cast_dtype()
    x = model.token_embedding(t).to(cast) + pos[:n].to(cast)
    x = model.ln_final(model.transformer(x, attn_mask=mask[:n, :n]))
    x = text_global_pool(x, t, model.text_pool_type, eos_token_id=getattr(model, "text_eos_id", None))
    proj = model.text_projection
    if proj is None:
        return x
    return proj(x) if isinstance(proj, nn.Linear) else x @ proj


def indistinguishable_classes(weights: torch.Tensor, tol: float = INDISTINGUISHABLE_TOL) -> list[list[int]]:
    """Groups (≥ 2 class indices each) of classes whose zero-shot weights are within ``tol`` (L2) of
    each other; empty when every class is distinguishable. A zero row (a prompt the model maps to
    nothing) counts as identical to any other zero row."""
    w = weights.detach().float().cpu()
    if w.ndim != 2 or len(w) < 2:
        return []
    close = torch.cdist(w, w) <= tol
    groups, seen = [], set()
    for i in range(len(w)):
        if i in seen:
            continue
        members = [j for j in torch.nonzero(close[i]).flatten().tolist() if j not in seen]
        seen.update(members)
        if len(members) > 1:
            groups.append(members)
    return groups


def zs_note(weights: torch.Tensor, classnames: Sequence[str], *, who: str = "this model") -> str | None:
    """Why zero-shot accuracy on these classes is not a measurement, or None when it is.

    Any indistinguishable pair makes the head's answer on those classes a tie-break, so the accuracy
    (and its ECE) would be a number that measures nothing; the note names the classes."""
    groups = indistinguishable_classes(weights)
    if not groups:
        return None
    note = INDISTINGUISHABLE_NOTE.replace("this model", who)
    if len(groups) == 1 and len(groups[0]) == len(classnames):
        return f"{note} (all {len(classnames)} classes give the same text embedding)"
    shown = "; ".join(", ".join(repr(classnames[i]) for i in g[:4]) + (" …" if len(g) > 4 else "") for g in groups[:3])
    more = f" and {len(groups) - 3} more groups" if len(groups) > 3 else ""
    return f"{note} ({shown}{more})"


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


@torch.no_grad()
def fit_temperature(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Temperature ``T`` minimising the cross-entropy of ``logits / T`` (Guo et al. 2017's temperature
    scaling), searched on a log grid from 0.01 to 100 and refined once around the best point."""
    z, y = logits.float(), labels.long()

    def nll(ts: torch.Tensor) -> torch.Tensor:
        return torch.stack([F.cross_entropy(z / t, y) for t in ts])

    grid = torch.logspace(-2, 2, 161)
    best = grid[int(nll(grid).argmin())]
    fine = best * torch.logspace(-0.025, 0.025, 41)
    return float(fine[int(nll(fine).argmin())])


def fit_linear_probe(feats: torch.Tensor, labels: torch.Tensor, num_classes: int, *,
                     wds: Sequence[float] = DEFAULT_WDS, val_fraction: float = 0.1, seed: int = 0,
                     iters: int = 100) -> tuple[nn.Linear, dict]:
    """Logistic regression on L2-normalised features: weight decay chosen on a seeded held-out share
    of train, then refit on all of train. The head size comes from ``num_classes`` (the class list),
    never from the labels present.

    ``info["temperature"]``: the temperature that calibrates the chosen weight decay's head on the
    held-out share (the same share that chose it; the refit head is scored with it), None when
    there is no held-out share. A probe's raw softmax says little about the features — a heavily
    regularised probe is accurate but under-confident — so its ECE is reported after this scaling."""
    x = F.normalize(feats.float(), dim=-1)
    y = labels.long()
    with torch.enable_grad():
        n = len(x)
        g = torch.Generator().manual_seed(seed)
        perm = torch.randperm(n, generator=g)
        n_val = max(1, int(round(n * val_fraction))) if n >= 10 and len(wds) > 1 else 0
        scores, val_logits = {}, {}
        temperature = None
        if n_val:
            val, tr = perm[:n_val], perm[n_val:]
            for wd in wds:
                h = _fit_logreg(x[tr], y[tr], num_classes, wd, iters)
                with torch.no_grad():
                    val_logits[wd] = h(x[val])
                    scores[wd] = (val_logits[wd].argmax(1) == y[val]).float().mean().item()
            best = max(wds, key=lambda w: (scores[w], w))  # ties → stronger regularisation
            temperature = fit_temperature(val_logits[best], y[val])
        else:
            best = wds[0]
        head = _fit_logreg(x, y, num_classes, best, iters)
    return head.requires_grad_(False), {"weight_decay": best, "val_scores": scores, "temperature": temperature}
