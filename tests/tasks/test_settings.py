"""One settings loader: it reads the mapping it is given and nothing else; defaults live on ``Settings``."""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest

from ldifs_engine.errors import SpecError
from tasks.settings import NUMBERS, Settings, load_settings


def test_the_given_mapping_is_read_without_touching_the_process_environment(tmp_path, monkeypatch):
    def forbidden(*_a, **_k):
        raise AssertionError("load_settings changed os.environ")

    monkeypatch.setenv("LDIFS_POLL_S", "9")  # present in the process, absent from the mapping
    for name in ("clear", "update", "__setitem__", "__delitem__", "pop"):
        monkeypatch.setattr(os.environ, name, forbidden, raising=False)
    s = load_settings({"LDIFS_HOME": str(tmp_path), "LDIFS_MAX_ATTEMPTS": " 5 "})
    assert s.max_attempts == 5 and s.poll_s == Settings.__dataclass_fields__["poll_s"].default


def test_unset_variables_keep_the_field_defaults(tmp_path):
    s = load_settings({"LDIFS_HOME": str(tmp_path)})
    assert s == Settings(home=Path(tmp_path).resolve())
    names = {f.name for f in dataclasses.fields(Settings)}
    assert set(NUMBERS) <= names


@pytest.mark.parametrize("var,value,message", [
    ("LDIFS_MAX_ATTEMPTS", "two", "LDIFS_MAX_ATTEMPTS: expected a whole number"),
    ("LDIFS_POLL_S", "0", "LDIFS_POLL_S: must be >= 0.01"),
    ("LDIFS_DB_JOURNAL", "memory", "LDIFS_DB_JOURNAL: 'memory' is not allowed"),
])
def test_bad_values_name_the_variable(tmp_path, var, value, message):
    with pytest.raises(SpecError, match=message):
        load_settings({"LDIFS_HOME": str(tmp_path), var: value})
