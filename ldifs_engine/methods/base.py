"""What a fine-tuning method is: typed params, what it needs prepared, and its loss on a batch.

The runner builds a ``TrainState`` (model, head, target classes) and calls the method's hooks: ``setup``
prepares the state its loss needs (by default what the ``needs_*`` flags ask for), ``initial_head`` picks
the classifier training starts from, ``zero_shot_weights`` says how zero-shot is scored once the model
changed. A new method that needs new state is one file: it overrides ``setup``; the runner does not change.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from ..lazy import F, nn, torch

from ..backbones import frozen_copy, image_taps
from ..fields import field_help


@dataclass
class TrainState:
    """Everything a method's loss may touch; built by the runner, completed by ``Method.setup``."""

    model: nn.Module  # the open_clip CLIP being fine-tuned
    head: nn.Linear | None  # classifier on L2-normalised image embeddings (CE family)
    classnames: tuple[str, ...] = ()
    templates: tuple[str, ...] = ()
    tokenizer: Any = None
    device: Any = "cpu"  # a torch.device or its name
    seed: int = 0  # the run's seed (for state a method initialises itself, e.g. adapters)
    # weights of the reference model when it is not the starting one (a continual stage with
    # LDIFS reference "pretrained"); None = the model as it starts
    reference_state: dict[str, torch.Tensor] | None = None
    reference: nn.Module | None = None  # frozen pre-trained image tower (LDIFS)
    anchor: dict[str, torch.Tensor] = field(default_factory=dict)  # initial weights (L2-SP)
    extras: dict[str, Any] = field(default_factory=dict)


def frozen_reference(st: TrainState) -> nn.Module:
    """A frozen copy of the image tower (or of ``st.reference_state``'s image tower) on the run's device."""
    ref = frozen_copy(st.model.visual).to(st.device)
    if st.reference_state is not None:
        ref.tower.load_state_dict(
            {k[len("visual."):]: v for k, v in st.reference_state.items() if k.startswith("visual.")})
    return ref


def image_tower_anchor(st: TrainState) -> dict[str, torch.Tensor]:
    """The image tower's starting weights, named as ``Method.trainable`` names them."""
    return {f"model.visual.{n}": p.detach().clone() for n, p in st.model.visual.named_parameters()}


def caption_tokens(st: TrainState) -> torch.Tensor:
    """``[C, K, ctx]`` tokens of every template filled with every class name."""
    prompts = [t.replace("{}", c) for c in st.classnames for t in st.templates]
    return st.tokenizer(prompts).view(len(st.classnames), len(st.templates), -1).to(st.device)


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
    trains_text: ClassVar[bool] = False  # shown to users: the text tower changes too
    # what ``setup`` prepares by default
    needs_reference: ClassVar[bool] = False  # ``st.reference``: a frozen copy of the image tower
    needs_anchor: ClassVar[bool] = False  # ``st.anchor``: the image tower's starting weights
    needs_caption_tokens: ClassVar[bool] = False  # ``st.extras["caption_tokens"]``: every class × template
    # a forgetting budget (budget.py) searches this parameter (larger = forgets less) over this default range
    budget_param: ClassVar[str | None] = None
    budget_range: ClassVar[tuple[float, float]] = (1.0, 1000.0)

    def __init__(self, params: Any = None):
        self.params = params if params is not None else self.Params()

    def setup(self, st: TrainState) -> None:
        """Prepare what ``loss`` needs beyond model and head; called once, before training.

        The default prepares what the ``needs_*`` flags ask for. A method that needs other state
        overrides this (calling ``super().setup(st)``) and keeps it in ``st.extras``."""
        if self.needs_reference:
            st.reference = frozen_reference(st)
        if self.needs_anchor:
            st.anchor = image_tower_anchor(st)
        if self.needs_caption_tokens:
            st.extras["caption_tokens"] = caption_tokens(st)

    def initial_head(self, head_init: str, *, from_probe: Callable[[], nn.Linear],
                     from_prompts: Callable[[], nn.Linear]) -> nn.Linear | None:
        """The head training starts from: a linear probe (``head_init`` lp) or the class prompts (zs);
        None for a method that classifies without one. Only the builder used is called."""
        if not self.uses_head:
            return None
        return from_probe() if head_init == "lp" else from_prompts()

    def zero_shot_weights(self, st: TrainState, classnames: tuple[str, ...],
                          templates: tuple[str, ...]) -> torch.Tensor | None:
        """``[C, E]`` zero-shot class weights of the model as trained so far; None = the text tower does
        not change, so the pre-trained weights (computed once, before training) still hold."""
        return None

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

    # ---- what is saved: resumable checkpoints and the finished model ----------------------------
    def checkpoint_tensors(self, st: TrainState) -> dict[str, torch.Tensor]:
        """What a resumable checkpoint keeps (``model.*`` / ``head.*``): by default every weight."""
        w = {f"model.{k}": v for k, v in st.model.state_dict().items()}
        if st.head is not None:
            w.update({f"head.{k}": v for k, v in st.head.state_dict().items()})
        return w

    def restore_tensors(self, st: TrainState, weights: dict[str, torch.Tensor]) -> None:
        """Load what ``checkpoint_tensors`` saved (strictly: a mismatch raises)."""
        st.model.load_state_dict({k[len("model."):]: v for k, v in weights.items() if k.startswith("model.")},
                                 strict=True)
        if st.head is not None:
            st.head.load_state_dict({k[len("head."):]: v for k, v in weights.items() if k.startswith("head.")})

    def after_training(self, st: TrainState) -> None:
        """Called once training has finished (not on a stop), before the final evaluation: a method whose
        training state is not a plain model (adapters) turns it into one here."""

    def final_weights(self, st: TrainState) -> list[tuple[str, str, dict[str, torch.Tensor], dict[str, str]]]:
        """The finished model's weight files: (artifact key, file name in ``final/``, tensors, metadata).
        The head is written by the runner."""
        return [("checkpoint", "model.safetensors", st.model.state_dict(), {})]

    @classmethod
    def meta(cls) -> dict:
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
