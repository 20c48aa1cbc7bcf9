"""What a fine-tuning method is: typed params + how to compute its loss on a batch."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from ..lazy import F, nn, torch

from ..backbones import image_taps


@dataclass
class TrainState:
    """Everything a method's loss may touch; built by the runner."""

    model: nn.Module  # the open_clip CLIP being fine-tuned
    head: nn.Linear | None  # classifier on L2-normalised image embeddings (CE family)
    classnames: tuple[str, ...] = ()
    templates: tuple[str, ...] = ()
    tokenizer: Any = None
    reference: nn.Module | None = None  # frozen pre-trained image tower (LDIFS)
    anchor: dict[str, torch.Tensor] = field(default_factory=dict)  # initial weights (L2-SP)
    extras: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class NoParams:
    """This method has no parameters of its own."""


class Method:
    """Base class. A method is one module: a ``Params`` dataclass and a ``loss``."""

    name: ClassVar[str]
    title: ClassVar[str]
    description: ClassVar[str]
    Params: ClassVar[type] = NoParams
    uses_head: ClassVar[bool] = True  # classifies through ``TrainState.head``
    trains_text: ClassVar[bool] = False
    needs_reference: ClassVar[bool] = False
    needs_anchor: ClassVar[bool] = False

    def __init__(self, params: Any = None):
        self.params = params if params is not None else self.Params()

    @classmethod
    def check(cls, spec: Any) -> list[str]:
        """Cross-field problems of a spec using this method (``"field: message"``)."""
        return []

    def trainable(self, st: TrainState, *, freeze_head: bool) -> list[tuple[str, nn.Parameter]]:
        """Named parameters the optimiser updates."""
        named = [(f"model.visual.{n}", p) for n, p in st.model.visual.named_parameters()]
        if st.head is not None and not freeze_head:
            named += [(f"head.{n}", p) for n, p in st.head.named_parameters()]
        return named

    def loss(self, st: TrainState, images: torch.Tensor, labels: torch.Tensor,
             gen: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(task loss, regulariser term) on one micro-batch; the total is their sum."""
        raise NotImplementedError

    @classmethod
    def meta(cls) -> dict:
        from ..spec import field_help

        return {
            "name": cls.name, "title": cls.title, "description": cls.description,
            "uses_head": cls.uses_head, "trains_text": cls.trains_text,
            "params": [{"name": k, **v} for k, v in field_help(cls.Params).items()],
        }


class CEFamily(Method):
    """Cross-entropy through the classifier head, plus an optional regulariser on the same forward."""

    label_smoothing: float = 0.0
    tap_layout: str | None = None  # set by methods that need the LDIFS taps

    def loss(self, st, images, labels, gen=None):
        if self.tap_layout is not None:
            emb, taps = image_taps(st.model.visual, images, layout=self.tap_layout)
        else:
            emb, taps = st.model.visual(images), None
        logits = st.head(F.normalize(emb, dim=-1))
        task = F.cross_entropy(logits, labels, label_smoothing=self._smoothing())
        return task, self.regularizer(st, images, emb, taps)

    def _smoothing(self) -> float:
        return self.label_smoothing

    def regularizer(self, st: TrainState, images: torch.Tensor, emb: torch.Tensor,
                    taps: list[torch.Tensor] | None) -> torch.Tensor:
        return emb.new_zeros(())
