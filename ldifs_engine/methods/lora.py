"""LoRA: train low-rank adapters on the image tower (and the head), keep every pre-trained weight frozen.

``W + (lora_alpha / rank) · B @ A`` for each adapted weight (``ldifs_engine/adapters.py`` says how, and why
a weight parametrisation rather than peft). What is adapted (``targets``): on a ViT the attention's packed
q/k/v ``in_proj_weight``, its ``out_proj`` and the MLP's ``c_fc`` / ``c_proj``; on a ResNet the attention
pool's ``q/k/v_proj`` and ``c_proj`` (its only attention) and, as "mlp", the bottlenecks' 1×1 convolutions
(BatchNorm statistics stay the pre-trained ones). ``ldifs_alpha`` > 0 adds the LDIFS term (the ``ldifs``
method's own regulariser, against the frozen pre-trained tower) — "LoRA + LDIFS".

Only the adapter (and the head, unless frozen) is trained and checkpointed. When training ends the adapters
are folded into the weights, so the final evaluation, WiSE-FT and ``final/model.safetensors`` see a plain
open_clip model; ``export`` chooses the files: the merged model, the adapter alone
(``final/adapter.safetensors``: ``<weight>.lora_A`` / ``.lora_B`` pairs, ``scaling`` in its metadata), or both.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import InvalidCheckpoint
from ..fields import param
from ..lazy import torch
from .base import CEFamily, TrainState, frozen_reference
from .ldifs import LDIFS, LDIFSParams

TARGETS = ("attention+mlp", "attention", "attention_in", "attention_out", "mlp")  # = adapters.TARGETS (no torch here)
EXPORTS = ("both", "merged", "adapter")


@dataclass(frozen=True)
class LoRAParams:
    rank: int = param(16, "Rank r of each adapter (B is out×r, A is r×in).", min=1, max=512, title="Adapter rank")
    lora_alpha: float = param(64.0, "Adapter scaling numerator: each adapter adds (lora_alpha / rank)·B·A "
                              "(the LoRA paper's and peft's convention).", min_excl=0.0, max=1e6,
                              title="Adapter scaling (alpha, divided by the rank)")
    dropout: float = param(0.0, "Chance of dropping each rank component of an adapter at every training step "
                           "(rank dropout: the adapter lives on the weights, so it cannot drop its inputs).",
                           min=0.0, max=0.9, title="Adapter dropout")
    targets: str = param("attention+mlp", "Which weights get an adapter. ViT: attention = the q/k/v and output "
                         "projections of every block, mlp = both MLP layers. ResNet: attention = the attention "
                         "pool's projections, mlp = the 1×1 convolutions of every bottleneck.", choices=TARGETS,
                         title="Adapted weights")
    ldifs_alpha: float = param(0.0, "Strength of the LDIFS feature-distance term added to the loss (0 = plain "
                               "LoRA; the ldifs method's default is 10).", min=0.0, max=1e9,
                               title="LDIFS strength (0 = off)")
    export: str = param("both", "Weights written when the run ends: both = the merged full model "
                        "(final/model.safetensors) and the adapter alone (final/adapter.safetensors); merged = "
                        "the full model only; adapter = the adapter only (small; needs the base model to use).",
                        choices=EXPORTS, title="Export")


class LoRA(CEFamily):
    name = "lora"
    title = "LoRA (low-rank adapters)"
    description = ("Cross-entropy through the head; the image tower stays frozen and learns only through small "
                   "low-rank adapters on its attention and MLP weights (ResNet: attention pool and 1×1 "
                   "convolutions). Optionally + the LDIFS term (LDIFS strength > 0).")
    Params = LoRAParams

    def __init__(self, params=None):
        super().__init__(params)
        p = self.params
        # LoRA + LDIFS reuses the ldifs method itself: its taps, its distance, its reference tower
        self.ldifs = LDIFS(LDIFSParams(alpha=p.ldifs_alpha)) if p.ldifs_alpha > 0 else None
        self.tap_layout = self.ldifs.tap_layout if self.ldifs is not None else None

    @classmethod
    def check(cls, spec) -> list[str]:
        if spec.data.sequence and spec.method.params.export == "adapter":
            return ["method.params.export: a continual sequence starts each stage from the previous stage's full "
                    "model; choose both or merged"]
        return []

    def setup(self, st: TrainState) -> None:
        from ..adapters import Adapters, AdapterSpec  # torch-heavy: the method registry stays light to import

        super().setup(st)
        if self.ldifs is not None:
            st.reference = frozen_reference(st)  # before the adapters: the reference is the plain tower
        p = self.params
        st.extras["lora"] = Adapters(st.model.visual, AdapterSpec(p.rank, p.lora_alpha, p.dropout, p.targets),
                                     seed=st.seed)

    def trainable(self, st: TrainState, *, freeze_head: bool):
        named = [(f"model.{n}", p) for n, p in st.extras["lora"].named_parameters()]
        if st.head is not None and not freeze_head:
            named += [(f"head.{n}", p) for n, p in st.head.named_parameters()]
        return named

    def loss(self, st, images, labels, gen=None):
        if gen is not None and self.params.dropout > 0:
            # rank-dropout masks from the step's generator: the same masks after a resume
            st.extras["lora"].seed_dropout(int(torch.randint(0, 2**62, (1,), generator=gen)))
        return super().loss(st, images, labels, gen)

    def regularizer(self, st, images, emb, taps):
        if self.ldifs is None:
            return emb.new_zeros(())
        return self.ldifs.regularizer(st, images, emb, taps)

    def checkpoint_tensors(self, st):
        w = {f"model.{k}": v for k, v in st.extras["lora"].tensors().items()}
        if st.head is not None:
            w.update({f"head.{k}": v for k, v in st.head.state_dict().items()})
        return w

    def restore_tensors(self, st, weights):
        try:
            st.extras["lora"].load({k[len("model."):]: v for k, v in weights.items() if k.startswith("model.")})
        except ValueError as e:
            raise InvalidCheckpoint(str(e)) from None
        if st.head is not None:
            st.head.load_state_dict({k[len("head."):]: v for k, v in weights.items() if k.startswith("head.")})

    def after_training(self, st):
        adapters = st.extras["lora"]
        st.extras["lora_adapter"] = {k: v.detach().cpu().clone() for k, v in adapters.tensors().items()}
        adapters.merge()

    def final_weights(self, st):
        out = []
        if self.params.export in ("both", "merged"):
            out.append(("checkpoint", "model.safetensors", st.model.state_dict(), {}))
        if self.params.export in ("both", "adapter"):
            out.append(("adapter", "adapter.safetensors", st.extras["lora_adapter"], st.extras["lora"].metadata()))
        return out
