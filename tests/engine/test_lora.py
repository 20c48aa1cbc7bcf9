"""LoRA: adapters on ViT and ResNet towers, exact merge, adapter-only checkpoints, resume, LoRA + LDIFS."""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file, safe_open
from torch.nn.utils import parametrize

from ldifs_engine.adapters import merged_state
from ldifs_engine.backbones import image_taps, load_backbone, reference_taps
from ldifs_engine.checkpoint import complete_checkpoints
from ldifs_engine.errors import Cancelled, SpecError
from ldifs_engine.events import read_events
from ldifs_engine.launch import run
from ldifs_engine.methods import METHODS, TrainState, ldifs_distance
from ldifs_engine.methods.lora import LoRAParams
from ldifs_engine.spec import RunSpec

from .helpers import tiny_spec

SIZES = {"tiny-vit-random": 48, "tiny-rn-random": 32}


def _state(key: str, **params) -> tuple[TrainState, object]:
    torch.manual_seed(0)
    model = load_backbone(key)
    st = TrainState(model=model, head=torch.nn.Linear(model.visual.output_dim, 4), seed=0)
    method = METHODS.get("lora")(LoRAParams(rank=4, lora_alpha=16.0, **params))
    method.setup(st)
    return st, method


def _randomise_b(st: TrainState) -> None:
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in st.extras["lora"].named_parameters():
            if name.endswith("lora_B"):
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)


@pytest.mark.parametrize("key", sorted(SIZES))
def test_adapters_start_as_the_base_model_train_only_themselves_and_merge_exactly(key):
    x = torch.randn(3, 3, SIZES[key], SIZES[key], generator=torch.Generator().manual_seed(2))
    torch.manual_seed(0)
    base = load_backbone(key)
    base_sd = {k: v.clone() for k, v in base.state_dict().items()}
    with torch.no_grad():
        y_base = base.encode_image(x)
    st, method = _state(key)
    model = st.model
    with torch.no_grad():
        assert torch.equal(model.encode_image(x), y_base)  # B = 0: exactly the pre-trained model at step 0
    names = [n for n, _ in method.trainable(st, freeze_head=False)]
    assert names and all(".lora_" in n or n.startswith("head.") for n in names)
    owners = [n.split(".lora_")[0].split(".")[:-1] for n in names if ".lora_" in n]  # the weight's module path
    kinds = {[part for part in o if not part.isdigit()][-1] for o in owners}
    assert kinds == ({"attn", "out_proj", "c_fc", "c_proj"} if key.startswith("tiny-vit") else
                     {"q_proj", "k_proj", "v_proj", "c_proj", "conv1", "conv3", "downsample"})
    _randomise_b(st)
    trainable = {id(p) for _, p in method.trainable(st, freeze_head=False)}
    for p in model.parameters():
        p.requires_grad_(id(p) in trainable)
    model.train()
    method.loss(st, x, torch.tensor([0, 1, 2]))[0].backward()
    grads = [n for n, p in model.named_parameters() if p.grad is not None]
    assert grads and all("lora_" in n for n in grads)
    buffers = {k: v for k, v in model.state_dict().items() if "running" in k}
    assert all(torch.equal(v, base_sd[k.replace("parametrizations.", "").replace(".original", "")])
               for k, v in buffers.items())  # BatchNorm statistics stay the pre-trained ones
    model.eval()
    with torch.no_grad():
        y_adapted = model.encode_image(x)
    adapter = {k: v.clone() for k, v in st.extras["lora"].tensors().items()}
    method.after_training(st)
    assert not parametrize.is_parametrized(model.visual)
    merged = model.state_dict()
    assert set(merged) == set(base_sd)
    expected = merged_state(base_sd, adapter, 16.0 / 4)
    adapted = {k[: -len(".lora_A")] for k in adapter if k.endswith("lora_A")}
    for k, v in merged.items():
        if k in adapted:  # W + (alpha / r)·B@A, bit for bit
            assert torch.equal(v, base_sd[k] + (4.0 * (adapter[f"{k}.lora_B"] @ adapter[f"{k}.lora_A"])).view(v.shape))
            assert not torch.equal(v, base_sd[k])
        else:
            assert torch.equal(v, base_sd[k]), k
        assert torch.equal(v, expected[k])
    with torch.no_grad():
        assert torch.allclose(model.encode_image(x), y_adapted, atol=1e-5)


def test_lora_plus_ldifs_is_the_lora_loss_plus_the_ldifs_term():
    st, with_ldifs = _state("tiny-vit-random", ldifs_alpha=7.0)
    assert not parametrize.is_parametrized(st.reference.tower)  # the reference is the frozen pre-trained tower
    _randomise_b(st)
    plain = METHODS.get("lora")(LoRAParams(rank=4, lora_alpha=16.0))
    x, y = torch.randn(4, 3, 48, 48, generator=torch.Generator().manual_seed(3)), torch.tensor([0, 1, 2, 3])
    task, reg = with_ldifs.loss(st, x, y)
    task0, reg0 = plain.loss(st, x, y)
    assert torch.equal(task, task0) and reg0.item() == 0.0
    term = 7.0 * ldifs_distance(reference_taps(st.reference, x), image_taps(st.model.visual, x)[1])
    assert reg.item() == pytest.approx(term.item(), rel=1e-6) and reg.item() > 0


def _spec(**over) -> RunSpec:
    return RunSpec.from_dict(tiny_spec(**{"eval.linear_probe": False, "method.name": "lora", "method.head_init": "lp",
                                          "method.params": {"rank": 4, "lora_alpha": 16.0, "dropout": 0.25},
                                          "eval.curve_points": 0, "data.max_eval_samples": 32,
                                          "eval.wise_ft_alphas": [0.0, 1.0], **over}))


def test_lora_checkpoints_hold_only_the_adapter_and_resume_exactly(tmp_path):
    spec = _spec()
    a = run(spec, tmp_path / "a", cache=None)
    calls = {"n": 0}

    def stop_after_third_step():
        calls["n"] += 1
        return calls["n"] > 3

    with pytest.raises(Cancelled):
        run(spec, tmp_path / "b", should_stop=stop_after_third_step)
    b = run(spec, tmp_path / "b", resume=True)
    assert b["training"]["resumed_from"] == 3
    losses = [[e["loss"] for e in read_events(tmp_path / r / "events.jsonl") if e["type"] == "step"] for r in "ab"]
    assert len(losses[0]) == 6 and losses[0] == pytest.approx(losses[1], abs=1e-6)
    for name in ("model.safetensors", "adapter.safetensors"):
        wa, wb = load_file(tmp_path / "a" / "final" / name), load_file(tmp_path / "b" / "final" / name)
        assert max((wa[k] - wb[k]).abs().max().item() for k in wa) <= 1e-6
    ckpt = load_file(complete_checkpoints(tmp_path / "a" / "checkpoints")[-1] / "model.safetensors")
    assert all(".lora_" in k or k.startswith("head.") for k in ckpt)  # adapter and head only
    adapter = load_file(tmp_path / "a" / "final" / "adapter.safetensors")
    assert all(torch.equal(adapter[k], ckpt[f"model.{k}"]) for k in adapter)
    with safe_open(tmp_path / "a" / "final" / "adapter.safetensors", "pt") as f:
        meta = f.metadata()
    assert meta["format"] == "ldifs.lora/1" and float(meta["scaling"]) == 4.0 and meta["targets"] == "attention+mlp"
    torch.manual_seed(spec.seed)  # the runner seeds before building the random-init backbone
    base = load_backbone("tiny-vit-random").state_dict()
    final = load_file(tmp_path / "a" / "final" / "model.safetensors")
    rebuilt = merged_state(base, adapter, float(meta["scaling"]))
    assert all(torch.equal(final[k], rebuilt[k]) for k in final)  # merged file = base + B·A·scale exactly
    # WiSE-FT interpolates between the pre-trained and the merged model: its ends are "before" and "after"
    assert a["wise_ft"]["target_head_acc"][1] == a["target_head_acc"]["after"]
    assert a["wise_ft"]["target_zs_acc"] == [a["datasets"]["quadrant"][s]["zs_acc"] for s in ("before", "after")]
    assert a["artifacts"] == {"checkpoint": "final/model.safetensors", "adapter": "final/adapter.safetensors",
                              "head": "final/head.safetensors"}


def test_lora_params_are_checked_by_name():
    with pytest.raises(SpecError) as e:
        _spec(**{"method.params": {"rank": 0, "targets": "everything", "dropout": 1.5}})
    text = str(e.value)
    assert "method.params.rank" in text and "method.params.targets" in text and "method.params.dropout" in text
    with pytest.raises(SpecError, match="method.params.export"):
        _spec(**{"method.params": {"export": "adapter"}, "data.sequence": ["count"]})
    only = METHODS.get("lora")(LoRAParams(export="adapter"))
    st = TrainState(model=None, head=None, extras={"lora_adapter": {}, "lora": type("A", (), {"metadata": dict})()})
    assert [w[0] for w in only.final_weights(st)] == ["adapter"]
