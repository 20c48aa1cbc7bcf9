"""Every shipped example spec and preset is valid."""
from __future__ import annotations

from pathlib import Path

import pytest

from ldifs_engine.presets import CE_BASELINE, CONTINUAL, LDIFS_PAPER, PRESETS
from ldifs_engine.spec import RunSpec

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "examples").glob("*.yaml"))


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_specs_validate(path):
    spec = RunSpec.from_yaml(path.read_text())
    assert spec.optim.checkpoint_every > 0


def test_quick_example_is_the_quick_preset():
    quick = RunSpec.from_yaml((EXAMPLES[0].parent / "quick.yaml").read_text())
    assert quick == RunSpec.from_dict(PRESETS["Quick demo"][0])
    assert quick.backbone == "concept-clip-tiny" and quick.optim.checkpoint_every == 50


@pytest.mark.parametrize(("filename", "preset"), [("ce_baseline.yaml", CE_BASELINE), ("ldifs_paper.yaml", LDIFS_PAPER),
                                                ("continual.yaml", CONTINUAL)])
def test_concept_examples_are_the_presets(filename, preset):
    assert RunSpec.from_yaml((EXAMPLES[0].parent / filename).read_text()) == RunSpec.from_dict(preset)


@pytest.mark.parametrize("name", list(PRESETS))
def test_presets_validate(name):
    for d in PRESETS[name]:
        RunSpec.from_dict(d)


def test_readme_shows_the_shipped_quick_spec():
    readme = (EXAMPLES[0].parents[1] / "README.md").read_text()
    start = readme.index("```yaml\nname: 'Quick demo") + len("```yaml\n")
    block = readme[start:readme.index("```", start)]
    assert block == (EXAMPLES[0].parent / "quick.yaml").read_text()
