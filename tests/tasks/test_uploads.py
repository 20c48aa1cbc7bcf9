"""User datasets as a service: quota, owner scoping, edit validation, preview, and the CLI's exit codes."""
from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from ldifs_engine.data import DataContext, resolve_dataset
from ldifs_engine.errors import InvalidUpload, LdifsError, SpecError
from tasks import cli_datasets, uploads
from tasks.settings import get_settings
from tasks.store import QuotaExceeded


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A private LDIFS_HOME with small upload limits (settings are re-read)."""
    monkeypatch.setenv("LDIFS_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("LDIFS_UPLOAD_MIN_PER_CLASS", "2")
    monkeypatch.setenv("LDIFS_UPLOAD_MAX_PIXELS", str(128 * 128))
    monkeypatch.delenv("LDIFS_USER_STORAGE_QUOTA_BYTES", raising=False)
    get_settings.cache_clear()
    yield tmp_path / "home"
    get_settings.cache_clear()


def set_env(monkeypatch, **env: str) -> None:
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    get_settings.cache_clear()


def make_zip(path: Path, classes=("cat", "dog"), n=4, size=(16, 12), extra: dict[str, bytes] | None = None) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        for j, c in enumerate(classes):
            for i in range(n):
                buf = io.BytesIO()
                Image.new("RGB", size, (20 * i, 90 * j, 60)).save(buf, "PNG")
                z.writestr(f"photos/{c}/{i}.png", buf.getvalue())
        for name, data in (extra or {}).items():
            z.writestr(name, data)
    return path


@pytest.fixture
def zip_file(tmp_path) -> Path:
    return make_zip(tmp_path / "pets.zip")


# --- import, list, show -----------------------------------------------------------------------------

def test_import_list_show(home, zip_file):
    report = uploads.import_dataset("alice", zip_file, name="My pets")
    key = report["key"]
    assert key.startswith("upload:") and report["name"] == "My pets"
    assert [(c["name"], c["count"]) for c in report["classes"]] == [("cat", 4), ("dog", 4)]
    assert report["quota"]["used_bytes"] == report["bytes_written"] > 0
    rows = uploads.list_user_datasets("alice")
    assert [r["key"] for r in rows] == [key]
    assert rows[0]["splits"] == {"train": 6, "test": 2} and rows[0]["num_classes"] == 2
    shown = uploads.show_dataset("alice", key)
    assert [(c["name"], c["train"], c["test"]) for c in shown["classes"]] == [("cat", 3, 1), ("dog", 3, 1)]
    png = Path(shown["preview_png"])
    assert png.is_file() and png.is_relative_to(get_settings().exports_dir)
    with Image.open(png) as im:
        assert im.format == "PNG" and im.width > 4 * 72 and im.height >= 2 * 72
    assert shown["report"]["accepted"] == 8
    info = resolve_dataset(key, DataContext(root=get_settings().datasets_dir))
    assert info.classnames == ("cat", "dog")


def test_default_name_comes_from_the_file(home, tmp_path):
    report = uploads.import_dataset("alice", make_zip(tmp_path / "Holiday photos.zip"))
    assert report["name"] == "Holiday photos"


def test_owner_is_stored_as_a_hash(home, zip_file):
    key = uploads.import_dataset("alice@example.org", zip_file)["key"]
    folder = get_settings().uploads_dir / key.split(":")[1]
    manifest = (folder / "manifest.json").read_text()
    assert "alice" not in manifest
    assert json.loads(manifest)["owner"] == uploads.owner_hash("alice@example.org")
    assert all("alice" not in p.name for p in get_settings().home.rglob("*"))


def test_other_users_see_not_found(home, zip_file):
    key = uploads.import_dataset("alice", zip_file)["key"]
    assert uploads.list_user_datasets("bob") == []
    for call in (lambda: uploads.show_dataset("bob", key),
                 lambda: uploads.update_dataset("bob", key, classnames=["a", "b"]),
                 lambda: uploads.delete_dataset("bob", key)):
        with pytest.raises(uploads.DatasetNotFound) as exc:
            call()
        missing = key[:-1] + ("0" if key[-1] != "0" else "1")
        with pytest.raises(uploads.DatasetNotFound) as exc_missing:
            uploads.show_dataset("bob", missing)
        # Same wording for "someone else's" and "does not exist": nothing confirms that it exists.
        assert str(exc.value).replace(key, "K") == str(exc_missing.value).replace(missing, "K")
    assert uploads.show_dataset("alice", key)["key"] == key


@pytest.mark.parametrize("key", ["upload:../../etc", "upload:" + "z" * 32, "../uploads", "", "upload:"])
def test_malformed_keys_are_not_found(home, key):
    with pytest.raises(uploads.DatasetNotFound):
        uploads.show_dataset("alice", key)


def test_rejected_upload_raises_invalid_upload_and_keeps_nothing(home, tmp_path):
    bad = make_zip(tmp_path / "bad.zip", classes=("cat",))
    with pytest.raises(InvalidUpload, match="at least 2 classes"):
        uploads.import_dataset("alice", bad)
    assert [p.name for p in get_settings().uploads_dir.iterdir() if not p.name.startswith(".locks")] == []


def test_limits_come_from_settings(home, tmp_path, monkeypatch):
    set_env(monkeypatch, LDIFS_UPLOAD_MAX_MEMBERS="5")
    with pytest.raises(InvalidUpload, match="8 members; the limit is 5"):
        uploads.import_dataset("alice", make_zip(tmp_path / "a.zip"))
    set_env(monkeypatch, LDIFS_UPLOAD_MAX_MEMBERS="50", LDIFS_UPLOAD_MIN_PER_CLASS="5")
    with pytest.raises(InvalidUpload, match="at least 5 usable images"):
        uploads.import_dataset("alice", make_zip(tmp_path / "b.zip"))


def test_pixel_limit_from_settings_quarantines(home, tmp_path):
    extra = {}
    buf = io.BytesIO()
    Image.new("RGB", (200, 100)).save(buf, "PNG")  # 20 000 px > LDIFS_UPLOAD_MAX_PIXELS = 16 384
    extra["photos/cat/big.png"] = buf.getvalue()
    report = uploads.import_dataset("alice", make_zip(tmp_path / "a.zip", extra=extra))
    assert [(q["member"], q["code"]) for q in report["quarantined"]] == [("photos/cat/big.png", "too_many_pixels")]


# --- quota ------------------------------------------------------------------------------------------

def test_storage_quota(home, tmp_path, monkeypatch):
    first = uploads.import_dataset("alice", make_zip(tmp_path / "a.zip"))
    size = first["bytes_written"]
    set_env(monkeypatch, LDIFS_USER_STORAGE_QUOTA_BYTES=str(size + size // 2))
    assert uploads.storage_usage("alice") == {"used_bytes": size, "quota_bytes": size + size // 2, "datasets": 1}
    with pytest.raises(QuotaExceeded, match="storage quota"):
        uploads.import_dataset("alice", make_zip(tmp_path / "b.zip"))
    assert len(uploads.list_user_datasets("alice")) == 1
    assert not [p for p in get_settings().uploads_dir.iterdir() if p.name.startswith(".ingest-")]
    uploads.import_dataset("bob", make_zip(tmp_path / "c.zip"))  # quotas are per user
    set_env(monkeypatch, LDIFS_USER_STORAGE_QUOTA_BYTES=str(size))
    with pytest.raises(QuotaExceeded, match="delete a dataset"):
        uploads.import_dataset("alice", make_zip(tmp_path / "d.zip"))
    freed = uploads.delete_dataset("alice", first["key"])
    assert freed == {"key": first["key"], "deleted": True, "freed_bytes": size}
    assert uploads.import_dataset("alice", make_zip(tmp_path / "e.zip"))["key"]


def test_one_upload_at_a_time_per_user(home, zip_file):
    s = get_settings()
    owner = uploads.owner_hash("alice")
    with uploads._user_lock(s, owner, wait=False):
        with pytest.raises(QuotaExceeded, match="still being processed"):
            uploads.import_dataset("alice", zip_file)
        assert uploads.import_dataset("bob", zip_file)["key"]


def test_delete_removes_the_folder(home, zip_file):
    key = uploads.import_dataset("alice", zip_file)["key"]
    uploads.delete_dataset("alice", key)
    assert uploads.list_user_datasets("alice") == []
    assert [p.name for p in get_settings().uploads_dir.iterdir() if p.name != ".locks"] == []
    with pytest.raises(uploads.DatasetNotFound):
        uploads.delete_dataset("alice", key)


# --- editing ----------------------------------------------------------------------------------------

def test_edit_validation_reports_every_problem(home, zip_file):
    key = uploads.import_dataset("alice", zip_file)["key"]
    with pytest.raises(SpecError) as exc:
        uploads.update_dataset("alice", key, classnames=["only one"], templates=["no placeholder", "{} {}"])
    problems = exc.value.problems
    assert any(p.startswith("classnames: expected 2 names") for p in problems)
    assert any(p.startswith("templates[0]:") for p in problems) and any(p.startswith("templates[1]:") for p in problems)
    for bad in (["", "dog"], ["cat", "CAT"], ["x" * 201, "dog"]):
        with pytest.raises(SpecError, match=r"classnames\[\d\]"):
            uploads.update_dataset("alice", key, classnames=bad)
    with pytest.raises(SpecError, match="at least one"):
        uploads.update_dataset("alice", key, templates=[])
    assert uploads.show_dataset("alice", key, preview=False)["classnames"] == ["cat", "dog"]  # nothing half-applied


def test_edit_applies_and_warns_for_ids(home, zip_file):
    key = uploads.import_dataset("alice", zip_file)["key"]
    out = uploads.update_dataset("alice", key, classnames=["n02123045", " golden_retriever "],
                                 templates=["a photo of my {}.", "a blurry photo of a {}."])
    assert out["classnames"] == ["n02123045", "golden retriever"]
    assert any("WordNet" in w for w in out["warnings"])
    info = resolve_dataset(key, DataContext(root=get_settings().datasets_dir))
    assert info.prompts("dog") == ["a photo of my dog.", "a blurry photo of a dog."]
    assert uploads.list_user_datasets("alice")[0]["updated_at"]


def test_catalog_datasets_are_edited_by_the_operator_only(home):
    with pytest.raises(SpecError, match="catalog dataset"):
        uploads.update_dataset("alice", "cifar10", classnames=["x"] * 10)
    out = uploads.set_catalog_overrides("mnist", templates=["a handwritten digit {}."])
    assert out["templates"] == ["a handwritten digit {}."]
    resolved = resolve_dataset("mnist", DataContext(root=get_settings().datasets_dir))
    assert resolved.templates == ("a handwritten digit {}.",)
    out = uploads.set_catalog_overrides("mnist", reset=True)
    assert len(out["templates"]) == 1 and out["templates"][0].startswith("a photo of the number")
    with pytest.raises(SpecError, match="not a catalog dataset"):
        uploads.set_catalog_overrides("upload:" + "0" * 32, templates=["{}"])


def test_show_catalog_dataset_not_installed(home):
    out = uploads.show_dataset("alice", "cifar10")
    assert out["available"] is False and "CIFAR-10 is not available" in out["message"]
    assert out["num_classes"] == 10 and len(out["templates"]) == 18
    with pytest.raises(uploads.DatasetNotFound):
        uploads.show_dataset("alice", "no-such-dataset")


def test_show_catalog_dataset_renders_a_preview(home):
    out = uploads.show_dataset("alice", "shape", per_class=3)
    assert out["available"] is True and sum(c["test"] for c in out["classes"]) > 0
    assert Path(out["preview_png"]).is_file()


# --- CLI --------------------------------------------------------------------------------------------

def test_cli_import_list_show_exit_codes(home, zip_file, tmp_path, capsys):
    assert cli_datasets.main(["dataset", "import", str(zip_file), "--name", "Pets", "--user", "alice"]) == 0
    out = capsys.readouterr().out
    assert "Imported 'Pets' as upload:" in out and "cat" in out and "dog" in out
    key = out.split(" as ", 1)[1].split()[0]
    assert cli_datasets.main(["dataset", "list", "--user", "alice"]) == 0
    assert key in capsys.readouterr().out
    assert cli_datasets.main(["dataset", "list", "--user", "alice", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["key"] == key
    assert cli_datasets.main(["dataset", "show", key, "--user", "alice"]) == 0
    assert "preview:" in capsys.readouterr().out
    assert cli_datasets.main(["dataset", "show", key, "--user", "bob"]) == 5
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "not found" in err and err.count("\n") == 1


def test_cli_rejection_is_one_line_and_nonzero(home, tmp_path, capsys):
    bad = tmp_path / "bad.zip"
    bad.write_bytes(b"definitely not a zip")
    assert cli_datasets.main(["dataset", "import", str(bad), "--user", "alice"]) == InvalidUpload.exit_code == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1
    assert captured.err.startswith("error: upload rejected: the file is not a zip archive")
    assert cli_datasets.main(["dataset", "import", str(tmp_path / "missing.zip"), "--user", "alice"]) != 0
    assert "error:" in capsys.readouterr().err


def test_cli_defaults_to_the_os_user(home, zip_file, monkeypatch, capsys):
    monkeypatch.setattr(cli_datasets.getpass, "getuser", lambda: "carol")
    assert cli_datasets.main(["dataset", "import", str(zip_file)]) == 0
    capsys.readouterr()
    assert len(uploads.list_user_datasets("carol")) == 1


def test_cli_edit(home, zip_file, tmp_path, capsys):
    key = uploads.import_dataset("alice", zip_file)["key"]
    names = tmp_path / "names.txt"
    names.write_text("kitten\npuppy\n")
    assert cli_datasets.main(["dataset", "edit", key, "--classnames-file", str(names), "--user", "alice"]) == 0
    assert uploads.list_user_datasets("alice")[0]["classnames"] == ["kitten", "puppy"]
    names.write_text("one\n")
    assert cli_datasets.main(["dataset", "edit", key, "--classnames-file", str(names), "--user", "alice"]) == 2
    assert "expected 2 names" in capsys.readouterr().err


def test_errors_are_ldifs_errors():
    assert issubclass(uploads.DatasetNotFound, LdifsError) and issubclass(QuotaExceeded, LdifsError)
