"""The model card: front matter huggingface_hub parses, a table equal to results.json, weights open_clip
loads; the upload against a local stand-in for the Hub; without a token, one line naming `ldifs card`."""
from __future__ import annotations

import json
import re

import huggingface_hub
import pytest
import torch
from huggingface_hub import ModelCard
from safetensors.torch import load_file

from ldifs_engine.__main__ import main
from ldifs_engine.card import write_card
from ldifs_engine.hub import push_folder
from tests.hub_standin import TOKEN, hub_standin


@pytest.fixture(scope="module")
def card(finished_runs, tmp_path_factory):
    run = finished_runs[0]
    out = tmp_path_factory.mktemp("card") / "card"
    write_card(run, out, headline="Fine-tuning on *quadrant* did things.", repo_id="alice/quadrant-ce")
    return run, out


def _pct(v):
    return "—" if v is None else f"{100 * v:.1f}"


def test_front_matter_parses_and_the_table_equals_results(card):
    run, out = card
    results = json.loads((run / "results.json").read_text())
    mc = ModelCard.load(out / "README.md")
    assert mc.data.library_name == "open_clip" and mc.data.license == "other"
    evals = {(r.dataset_type, r.metric_name): r.metric_value for r in mc.data.eval_results}
    th = results["target_head_acc"]
    assert evals[("quadrant", "Accuracy after fine-tuning")] == round(100 * th["after"], 2)
    for key, d in results["datasets"].items():
        if d["role"] == "control" and d["after"]["zs_acc"] is not None:
            assert evals[(key, "Zero-shot accuracy after fine-tuning")] == round(100 * d["after"]["zs_acc"], 2)
    assert "Fine-tuning on *quadrant* did things." in mc.text and 'hf-hub:alice/quadrant-ce' in mc.text
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in mc.text.splitlines()
            if line.startswith("| ") and not line.startswith("| Dataset")]
    assert rows[0][0].endswith("(trained classifier)") and rows[0][2:4] == [_pct(th["before"]), _pct(th["after"])]
    head = next(line for line in mc.text.splitlines() if line.startswith("| Dataset"))
    assert "Zero-shot before" not in head  # the classifier's row is not under a zero-shot heading
    by_title = {r[0]: r for r in rows[1:]}
    for key, d in results["datasets"].items():
        row = by_title[d["title"]]
        assert row[1] == d["role"]
        assert [row[2], row[3], row[5], row[6]] == [_pct(d["before"]["zs_acc"]), _pct(d["after"]["zs_acc"]),
                                                    _pct(d["before"]["lp_acc"]), _pct(d["after"]["lp_acc"])]
        if d["delta_zs"] is not None:
            assert re.match(rf"^{100 * d['delta_zs']:+.1f} \[", row[4])
    assert json.loads((out / "results.json").read_text()) == results


def test_open_clip_loads_the_weights(card):
    import open_clip

    run, out = card
    model = open_clip.create_model(f"local-dir:{out}")
    theirs = load_file(run / "final/model.safetensors")
    assert all(torch.equal(v, theirs[k]) for k, v in model.state_dict().items())


def test_push_uploads_the_folder_to_the_hub(card, monkeypatch):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    _run, out = card
    with hub_standin() as (endpoint, hub):
        url = push_folder(out, "alice/quadrant-ce", token=TOKEN, endpoint=endpoint)
    files = hub.repos["alice/quadrant-ce"]
    assert url.startswith(f"{endpoint}/alice/quadrant-ce/commit/")
    assert {p: files[p] for p in files} == {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    assert set(hub.auth) == {f"Bearer {TOKEN}"} and hub.validated  # the card's YAML was checked


def test_push_without_token_is_one_line_naming_ldifs_card(card, monkeypatch, capsys):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)
    run, _ = card
    assert main(["push", str(run), "--repo", "alice/quadrant-ce"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no Hugging Face token" in err and "ldifs card" in err, err
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    with hub_standin() as (endpoint, _hub):  # the stand-in refuses a wrong token; the token is never shown
        monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
        with pytest.raises(Exception) as e:
            push_folder(run, "alice/x", token="hf_wrong_token_abc", endpoint=endpoint)
    assert "refused the token (HTTP 401)" in str(e.value) and "hf_wrong_token_abc" not in str(e.value)
    with hub_standin() as (endpoint, _hub):
        pass  # the stand-in is gone: nothing listens on its port any more
    with pytest.raises(Exception) as e:
        push_folder(run, "alice/x", token=TOKEN, endpoint=endpoint)
    assert "cannot be reached" in str(e.value) and "ldifs card" in str(e.value) and TOKEN not in str(e.value)
