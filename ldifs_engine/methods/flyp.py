"""FLYP: fine-tune like you pre-train — contrastive loss between images and captions of their class."""
from __future__ import annotations

from dataclasses import dataclass

from ..lazy import F, torch

from ..fields import param
from .base import Method, TrainState


@dataclass(frozen=True)
class FLYPParams:
    learn_temperature: bool = param(True, "Train the CLIP temperature (logit scale), as FLYP intends.")


def clip_contrastive_loss(image_emb: torch.Tensor, text_emb: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE over the batch; row i's positive is caption i (same-class captions are negatives)."""
    img = F.normalize(image_emb, dim=-1)
    txt = F.normalize(text_emb, dim=-1)
    logits = logit_scale.exp() * img @ txt.t()
    target = torch.arange(len(img), device=img.device)
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target)) / 2


class FLYP(Method):
    name = "flyp"
    title = "FLYP (contrastive fine-tuning)"
    description = ("Fine-tunes both towers with the CLIP contrastive loss between each image and a caption of its "
                   "class from a random template; the classifier is the zero-shot head of the tuned text tower.")
    Params = FLYPParams
    uses_head = False
    trains_text = True
    needs_caption_tokens = True

    @classmethod
    def check(cls, spec) -> list[str]:
        p = []
        if spec.method.freeze_head:
            p.append("method.freeze_head: FLYP has no separate head to freeze (its classifier is the text tower)")
        if spec.method.head_init != "zs":
            p.append("method.head_init: FLYP classifies with the zero-shot head; use head_init zs")
        return p

    def trainable(self, st: TrainState, *, freeze_head: bool):
        named = [(f"model.{n}", p) for n, p in st.model.named_parameters()]
        if not self.params.learn_temperature:
            named = [(n, p) for n, p in named if not n.endswith("logit_scale")]
        return named

    def zero_shot_weights(self, st, classnames, templates):
        from ..heads import zero_shot_weights  # torch-heavy; the method registry must stay light to import

        # the text tower is trained: zero-shot weights come from it as it is now
        return zero_shot_weights(st.model, st.tokenizer, classnames, templates, device=st.device)

    def loss(self, st, images, labels, gen=None):
        tokens = st.extras["caption_tokens"]  # [C, K, ctx]: every class × template
        k = torch.randint(tokens.shape[1], (len(labels),), generator=gen).to(labels.device)
        captions = tokens[labels, k]
        image_emb = st.model.encode_image(images)
        text_emb = st.model.encode_text(captions)
        task = clip_contrastive_loss(image_emb, text_emb, st.model.logit_scale)
        return task, task.new_zeros(())
