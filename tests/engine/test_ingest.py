"""Safe ingestion of uploaded zips: one hostile or malformed archive per rule, built in the test.

Every rejection must name its rule (``UploadRejected.code``) and leave nothing behind: the destination
folder stays empty and no file appears anywhere else in the sandbox.
"""
from __future__ import annotations

import gzip
import io
import json
import os
import resource
import stat
import struct
import tarfile
import tracemalloc
import zipfile
import zlib
from pathlib import Path

import pytest
import torch
from PIL import Image

from ldifs_engine.data import ingest as ingest_mod
from ldifs_engine.data.ingest import (
    IngestLimits,
    UnusableImage,
    UploadRejected,
    check_member_name,
    decode_image_file,
    ingest_zip,
    open_rgb,
    sweep_stale_ingests,
)
from ldifs_engine.data.manifest import STORED_FILE, read_manifest
from ldifs_engine.errors import InvalidUpload

LIMITS = IngestLimits(max_bytes=2 * 1024**2, max_members=200, max_pixels=256 * 256, min_per_class=3, max_classes=10)


# --- building blocks ----------------------------------------------------------------------------------

def png(colour=(200, 30, 30), size=(8, 8), mode="RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, colour if mode == "RGB" else 128).save(buf, "PNG")
    return buf.getvalue()


def jpeg(colour=(30, 200, 30), size=(16, 16)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def bomb_png(width: int, height: int) -> bytes:
    """A valid 1x1 PNG whose IHDR claims ``width x height`` (CRC recomputed): tiny file, huge header."""
    data = bytearray(png(size=(1, 1)))
    assert data[12:16] == b"IHDR"
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])) & 0xFFFFFFFF)
    return bytes(data)


def good_members(classes=("cats", "dogs"), n=4, prefix="") -> dict[str, bytes]:
    return {f"{prefix}{c}/{i:03d}.png": png((40 * i % 255, 60 * j % 255, 90)) for j, c in enumerate(classes)
            for i in range(n)}


def make_zip(path: Path, members: dict[str, bytes] | list[tuple[str | zipfile.ZipInfo, bytes]]) -> Path:
    items = members.items() if isinstance(members, dict) else members
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in items:
            z.writestr(name, data)
    return path


def snapshot(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@pytest.fixture
def sandbox(tmp_path: Path):
    """``tmp/in`` holds the archive, ``tmp/out`` is the uploads root, ``tmp/sentinel.txt`` must never change."""
    (tmp_path / "in").mkdir()
    (tmp_path / "sentinel.txt").write_text("untouched")
    return tmp_path


def ingest(sandbox: Path, zip_path: Path, limits: IngestLimits = LIMITS):
    return ingest_zip(zip_path, sandbox / "out", limits, name="test", owner="o" * 32)


def assert_rejected(sandbox: Path, zip_path: Path, code: str, *fragments: str, limits: IngestLimits = LIMITS):
    before = snapshot(sandbox)
    with pytest.raises(UploadRejected) as exc:
        ingest(sandbox, zip_path, limits)
    err = exc.value
    assert isinstance(err, InvalidUpload)
    assert err.code == code, str(err)
    msg = str(err)
    assert "\n" not in msg and "Traceback" not in msg
    for f in fragments:
        assert f in msg, msg
    out = sandbox / "out"
    assert not out.exists() or list(out.iterdir()) == [], "a rejected upload left files behind"
    assert snapshot(sandbox) - before <= {"out"}, "files appeared outside the ingest folder"
    assert (sandbox / "sentinel.txt").read_text() == "untouched"
    return err


# --- rejections: one archive per rule -----------------------------------------------------------------

@pytest.mark.parametrize("name, why", [
    ("../../etc/cron.d/x.png", "'..'"),
    ("cats/../../x.png", "'..'"),
    ("/abs/path/x.png", "absolute"),
    ("//host/share/x.png", "absolute"),
    ("C:/windows/x.png", "drive letter"),
    ("C:x.png", "drive letter"),
    ("\\\\host\\share\\x.png", "backslash"),
    ("cats\\x.png", "backslash"),
    ("cats/x\x07.png", "control characters"),
])
def test_traversal_and_odd_names_are_rejected(sandbox, name, why):
    members = [*good_members().items(), (name, png())]
    err = assert_rejected(sandbox, make_zip(sandbox / "in/a.zip", members), "unsafe_name", why)
    assert repr(name) in str(err)


def test_nul_byte_in_a_member_name_is_rejected(sandbox):
    path = make_zip(sandbox / "in/a.zip", [*good_members().items(), ("cats/evilXname.png", png())])
    raw = path.read_bytes().replace(b"evilXname", b"evil\x00name")
    path.write_bytes(raw)
    assert_rejected(sandbox, path, "unsafe_name", "NUL")


def test_symlink_member_is_rejected(sandbox):
    link = zipfile.ZipInfo("cats/link.png")
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    members = [*good_members().items(), (link, b"/etc/passwd")]
    assert_rejected(sandbox, make_zip(sandbox / "in/a.zip", members), "symlink", "cats/link.png")


def test_encrypted_member_is_rejected(sandbox):
    path = make_zip(sandbox / "in/a.zip", [*good_members().items(), ("cats/secret.png", png())])
    _patch_header(path, "cats/secret.png", local_off=6, central_off=8, fmt="<H", value=0x1)  # general flag bit 0
    assert_rejected(sandbox, path, "encrypted")


def test_duplicate_member_name_is_rejected(sandbox):
    members = [*good_members().items(), ("cats/000.png", png())]
    with pytest.warns(UserWarning):
        path = make_zip(sandbox / "in/a.zip", members)
    assert_rejected(sandbox, path, "duplicate_member")


def test_tar_archive_is_rejected(sandbox):
    path = sandbox / "in/a.zip"  # the extension lies; the content decides
    with tarfile.open(path, "w") as tar:
        for name, data in good_members().items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    assert_rejected(sandbox, path, "not_zip", "tar archive")


@pytest.mark.parametrize("content, what", [
    (gzip.compress(b"x" * 100), "gzip"),
    (b"Rar!\x1a\x07\x00" + b"\x00" * 50, "RAR"),
    (b"7z\xbc\xaf\x27\x1c" + b"\x00" * 50, "7-Zip"),
    (os.urandom(300), "not a zip"),
    (b"", "not a zip"),
])
def test_other_formats_are_rejected(sandbox, content, what):
    path = sandbox / "in/a.zip"
    path.write_bytes(content)
    assert_rejected(sandbox, path, "not_zip", what)


def test_too_many_members(sandbox):
    path = make_zip(sandbox / "in/a.zip", good_members(n=4))
    assert_rejected(sandbox, path, "too_many_members", "8 members", limits=IngestLimits(max_members=7, min_per_class=1))


def test_declared_size_over_budget_is_rejected_before_reading(sandbox):
    members = {**good_members(), "cats/zeros.png": b"\0" * (3 * 1024**2)}  # deflates to ~3 KB
    path = make_zip(sandbox / "in/a.zip", members)
    assert path.stat().st_size < 100_000
    assert_rejected(sandbox, path, "too_large", "expands to")


def test_archive_file_over_budget_is_rejected(sandbox):
    path = make_zip(sandbox / "in/a.zip", good_members())
    assert_rejected(sandbox, path, "too_large", limits=IngestLimits(max_bytes=path.stat().st_size - 1))


def _patch_header(path: Path, member: str, *, local_off: int, central_off: int, fmt: str, value: int) -> None:
    """Overwrite one field of ``member``'s local header and central-directory record."""
    raw = bytearray(path.read_bytes())
    name = member.encode()
    # (signature, offset of the name-length field, offset of the name, offset of the patched field)
    for sig, len_off, name_off, field_off in ((b"PK\x03\x04", 26, 30, local_off), (b"PK\x01\x02", 28, 46, central_off)):
        start = 0
        while (i := raw.find(sig, start)) >= 0:
            n_len = struct.unpack_from("<H", raw, i + len_off)[0]
            if bytes(raw[i + name_off:i + name_off + n_len]) == name:
                old = struct.unpack_from(fmt, raw, i + field_off)[0]
                struct.pack_into(fmt, raw, i + field_off, value | (old if fmt == "<H" else 0))
            start = i + 4
    path.write_bytes(bytes(raw))


def _patch_sizes(path: Path, member: str, declared: int) -> None:
    """Make the local header and the central directory claim ``declared`` uncompressed bytes for ``member``."""
    _patch_header(path, member, local_off=22, central_off=24, fmt="<I", value=declared)


def test_central_directory_lying_about_sizes(sandbox):
    """The zip claims 1 000 bytes for a member that really inflates to 4 MB (budget 2 MB): rejected,
    never more than the declared bytes are inflated, nothing kept."""
    members = {**good_members(), "cats/liar.png": b"\0" * (4 * 1024**2)}
    path = make_zip(sandbox / "in/a.zip", members)
    _patch_sizes(path, "cats/liar.png", 1000)
    with zipfile.ZipFile(path) as z:
        assert sum(i.file_size for i in z.infolist()) < LIMITS.max_bytes  # the lie passes the declared check
    assert_rejected(sandbox, path, "corrupt_zip", "cats/liar.png")


class _EndlessZeros(io.RawIOBase):
    """A member stream that never ends (what a lying or overlapping archive could produce)."""

    def __init__(self):
        self.served = 0

    def readable(self):
        return True

    def readinto(self, b):
        b[:] = b"\0" * len(b)
        self.served += len(b)
        return len(b)


def test_decompressed_bytes_are_counted_while_streaming(sandbox, monkeypatch):
    """Whatever the headers say, ingestion stops once the bytes actually read pass the budget."""
    path = make_zip(sandbox / "in/a.zip", good_members())
    streams: list[_EndlessZeros] = []

    def endless_open(self, info, *a, **k):
        streams.append(_EndlessZeros())
        return io.BufferedReader(streams[-1])

    monkeypatch.setattr(zipfile.ZipFile, "open", endless_open)
    limits = IngestLimits(max_bytes=1024**2, max_member_bytes=10 * 1024**2, min_per_class=1)
    assert_rejected(sandbox, path, "too_large", "counted while reading", limits=limits)
    assert sum(s.served for s in streams) <= limits.max_bytes + 2 * ingest_mod.CHUNK + 8192


def test_flat_layout_is_rejected_with_the_expected_tree(sandbox):
    members = {f"{i}.png": png() for i in range(6)}
    assert_rejected(sandbox, make_zip(sandbox / "in/a.zip", members), "layout_flat", "one folder per class")


def test_mixed_layout_is_rejected(sandbox):
    members = {**good_members(), "stray.jpg": jpeg()}
    assert_rejected(sandbox, make_zip(sandbox / "in/a.zip", members), "layout_mixed", "'stray.jpg'")


def test_nested_layout_is_rejected(sandbox):
    members = {**good_members(), "cats/indoor/x.png": png()}
    assert_rejected(sandbox, make_zip(sandbox / "in/a.zip", members), "layout_nested", "cats/indoor/x.png")


def test_single_class_is_rejected(sandbox):
    assert_rejected(sandbox, make_zip(sandbox / "in/a.zip", good_members(classes=("cats",))),
                    "too_few_classes", "'cats'")


def test_class_with_too_few_images_is_rejected(sandbox):
    members = {**good_members(), "birds/0.png": png(), "birds/1.png": png()}
    assert_rejected(sandbox, make_zip(sandbox / "in/a.zip", members), "too_few_images", "'birds' has 2")


def test_class_left_short_by_quarantine_is_rejected_with_reasons(sandbox):
    members = {**good_members(), **{f"birds/{i}.jpg": b"<html>not an image</html>" for i in range(4)}}
    assert_rejected(sandbox, make_zip(sandbox / "in/a.zip", members), "too_few_images", "'birds' has 0",
                    "4 not image")


def test_too_many_classes(sandbox):
    members = good_members(classes=tuple(f"c{i}" for i in range(11)), n=3)
    assert_rejected(sandbox, make_zip(sandbox / "in/a.zip", members), "too_many_classes", "11 classes")


@pytest.mark.parametrize("a, b", [
    ("Cat", "cat"),
    ("golden_retriever", "Golden Retriever"),
    ("caf\u00e9", "cafe\u0301"),  # NFC vs NFD
    ("cat", " cat  "),
])
def test_duplicate_class_names_after_normalisation(sandbox, a, b):
    members = {**good_members(classes=(a,)), **good_members(classes=(b,)), **good_members(classes=("dog",))}
    assert_rejected(sandbox, make_zip(sandbox / "in/a.zip", members), "duplicate_class", "same name")


def test_empty_class_name_is_rejected(sandbox):
    members = {**good_members(), **good_members(classes=("___",))}
    assert_rejected(sandbox, make_zip(sandbox / "in/a.zip", members), "bad_classname", "empty")


@pytest.mark.parametrize("csv_text, fragment", [
    ("images/a.png,cats\n", "header row"),
    ("path,label\nimages/a.png,cats\nimages/a.png,dogs\n", "listed twice"),
    ("path,label\nimages/a.png\n", "expected 'path,label'"),
])
def test_bad_labels_csv_is_rejected(sandbox, csv_text, fragment):
    members = {"labels.csv": csv_text.encode(), "images/a.png": png()}
    assert_rejected(sandbox, make_zip(sandbox / "in/a.zip", members), "bad_labels_csv", fragment)


def test_labels_csv_must_be_utf8(sandbox):
    members = {"labels.csv": "path,label\nimages/a.png,caf\u00e9\n".encode("latin-1"), "images/a.png": png()}
    assert_rejected(sandbox, make_zip(sandbox / "in/a.zip", members), "bad_labels_csv", "UTF-8")


def test_written_budget_is_enforced(sandbox):
    members = good_members(n=4)
    limits = IngestLimits(max_written_bytes=sum(len(v) for v in members.values()) // 2, min_per_class=1)
    assert_rejected(sandbox, make_zip(sandbox / "in/a.zip", members), "written_budget", limits=limits)


def test_damaged_zip_is_rejected(sandbox):
    path = make_zip(sandbox / "in/a.zip", good_members())
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2] + raw[-22:])  # keeps the end record, loses entries
    with pytest.raises(UploadRejected) as exc:
        ingest(sandbox, path)
    assert exc.value.code in {"corrupt_zip", "not_zip"}
    assert not (sandbox / "out").exists() or not list((sandbox / "out").iterdir())


# --- quarantine: the upload still succeeds -----------------------------------------------------------

def test_quarantine_and_report(sandbox):
    members = {
        **good_members(prefix="my-data/"),
        "my-data/cats/random.jpg": os.urandom(200),
        "my-data/cats/page.jpg": b"<!doctype html><script>alert(1)</script>",
        "my-data/cats/truncated.jpg": jpeg(size=(64, 64))[:300],
        "my-data/dogs/bomb.png": bomb_png(50_000, 50_000),
        "my-data/dogs/large.png": bomb_png(300, 300),  # 90 000 px > limit 65 536, under Pillow's own limit
        "my-data/dogs/picture.tif": _tiff(),
        "my-data/dogs/really_a_png.txt": png((1, 2, 3)),
        "my-data/README.md": b"# my dataset",
        "__MACOSX/my-data/cats/._000.png": b"\0\5\26\7",
        "my-data/.DS_Store": b"\0\0\0\1Bud1",
        "my-data/dogs/Thumbs.db": b"\0" * 10,
    }
    m = ingest(sandbox, make_zip(sandbox / "in/a.zip", members))
    r = m.report
    reasons = {q["member"]: q["code"] for q in r["quarantined"]}
    assert reasons == {
        "my-data/cats/random.jpg": "not_image",
        "my-data/cats/page.jpg": "not_image",
        "my-data/cats/truncated.jpg": "corrupt",
        "my-data/dogs/bomb.png": "too_many_pixels",
        "my-data/dogs/large.png": "too_many_pixels",
        "my-data/dogs/picture.tif": "not_image",
        "my-data/README.md": "outside_class",
    }
    assert all(q["reason"] for q in r["quarantined"])
    assert r["ignored_junk"] == 3
    assert r["unwrapped_folder"] == "my-data"
    assert [(c["name"], c["count"]) for c in r["classes"]] == [("cats", 4), ("dogs", 5)]
    assert m.classnames == ["cats", "dogs"]
    assert any("skipped" in w for w in r["warnings"])
    folder = sandbox / "out" / m.id
    assert sorted(p.name for p in folder.iterdir()) == ["0", "1", "manifest.json"]
    assert read_manifest(folder / "manifest.json").to_dict() == m.to_dict()


def test_success_layout_names_and_split(sandbox):
    members = {**good_members(classes=("Golden_Retriever", "tabby cat"), n=10), "tabby cat/x.jpg": jpeg()}
    m = ingest(sandbox, make_zip(sandbox / "in/a.zip", members))
    assert m.classnames == ["Golden Retriever", "tabby cat"]
    assert m.source_names == ["Golden_Retriever", "tabby cat"]
    assert m.templates == ["a photo of a {}."]
    folder = sandbox / "out" / m.id
    for f in m.files:
        assert STORED_FILE.match(f.file) and (folder / f.file).is_file()
        assert (folder / f.file).resolve().is_relative_to(folder.resolve())
        with Image.open(folder / f.file) as im:
            assert im.format == "PNG"
    counts = {c["name"]: (c["train"], c["test"]) for c in m.class_counts()}
    assert counts == {"Golden Retriever": (8, 2), "tabby cat": (9, 2)}
    assert {f.source for f in m.files} == set(members)
    assert m.report["bytes_written"] == sum((folder / f.file).stat().st_size for f in m.files) == m.bytes


def test_split_is_deterministic(sandbox):
    path = make_zip(sandbox / "in/a.zip", good_members(n=10))
    a, b = ingest(sandbox, path), ingest(sandbox, path)
    assert a.id != b.id
    assert [(f.file, f.split) for f in a.files] == [(f.file, f.split) for f in b.files]


def test_labels_csv_layout(sandbox):
    members = {
        "data/labels.csv": ("path,label\n" + "".join(f"img/{i}.png,{'cat' if i % 2 else 'dog'}\n" for i in range(8))
                            + "img\\8.png,cat\nimg/missing.png,dog\n").encode(),
        **{f"data/img/{i}.png": png((i * 20, 0, 0)) for i in range(9)},
        "data/img/extra.png": png(),
    }
    m = ingest(sandbox, make_zip(sandbox / "in/a.zip", members))
    assert m.report["layout"] == "labels.csv"
    assert m.classnames == ["cat", "dog"]
    assert [c["count"] for c in m.class_counts()] == [5, 4]
    codes = {q["member"]: q["code"] for q in m.report["quarantined"]}
    assert codes == {"img/missing.png": "missing", "data/img/extra.png": "unlabeled"}


def test_wordnet_ids_give_a_warning(sandbox):
    members = good_members(classes=("n01440764", "n01443537"))
    m = ingest(sandbox, make_zip(sandbox / "in/a.zip", members))
    assert any("WordNet" in w for w in m.report["warnings"])


def test_html_class_names_are_kept_as_data(sandbox):
    evil = "<img src=x onerror=alert(1)>"
    m = ingest(sandbox, make_zip(sandbox / "in/a.zip", good_members(classes=(evil, "dog"))))
    assert evil in m.classnames
    assert {p.name for p in (sandbox / "out" / m.id).iterdir()} == {"0", "1", "manifest.json"}


# --- decompression bomb: rejected from the header, without decoding -----------------------------------

def test_decompression_bomb_png_is_refused_without_decoding(sandbox, monkeypatch):
    bomb = bomb_png(50_000, 50_000)
    assert len(bomb) < 200
    from PIL import ImageFile

    loads = []
    real_load = ImageFile.ImageFile.load

    def spy_load(self):
        loads.append(self.size)
        return real_load(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", spy_load)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    tracemalloc.start()
    try:
        with pytest.raises(UnusableImage) as exc:
            open_rgb(io.BytesIO(bomb), max_pixels=LIMITS.max_pixels)
        members = {**good_members(), "dogs/bomb.png": bomb}
        m = ingest(sandbox, make_zip(sandbox / "in/a.zip", members))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert exc.value.code == "too_many_pixels"
    assert loads, "the spy saw no decode at all: it is not measuring anything"
    assert (50_000, 50_000) not in loads
    assert {q["member"]: q["code"] for q in m.report["quarantined"]} == {"dogs/bomb.png": "too_many_pixels"}
    assert peak < 32 * 1024**2
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before < 256 * 1024  # KiB on Linux


def test_pillow_backstop_limit_is_conservative():
    assert Image.MAX_IMAGE_PIXELS <= 128 * 1024 * 1024


# --- helpers -----------------------------------------------------------------------------------------

def _tiff() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (4, 4)).save(buf, "TIFF")
    return buf.getvalue()


@pytest.mark.parametrize("name, ok", [
    ("cats/a.png", True), ("a/b/c.png", True), ("café/ü.png", True), ("", False), ("../a", False),
    ("a/../b", False), ("/a", False), ("C:\\a", False), ("a\\b", False), ("a\x00b", False), ("x" * 2000, False),
])
def test_check_member_name(name, ok):
    assert (check_member_name(name) is None) == ok


def test_decode_image_file_gives_uint8_chw(tmp_path):
    p = tmp_path / "x.bin"
    p.write_bytes(jpeg(size=(20, 10)))
    t = decode_image_file(p)
    assert t.dtype == torch.uint8 and tuple(t.shape) == (3, 10, 20)
    p.write_bytes(b"nope")
    with pytest.raises(ValueError, match="not an image"):
        decode_image_file(p)


def test_grey_and_palette_images_become_rgb(sandbox):
    pal = io.BytesIO()
    Image.new("P", (6, 6), 3).save(pal, "GIF")
    members = {**good_members(), "cats/grey.png": png(mode="L"), "dogs/pal.gif": pal.getvalue()}
    m = ingest(sandbox, make_zip(sandbox / "in/a.zip", members))
    assert m.report["accepted"] == 10 and not m.report["quarantined"]


def test_stale_ingest_folders_are_swept(tmp_path):
    stale = tmp_path / ".ingest-abc"
    stale.mkdir()
    (stale / "x").write_text("partial")
    os.utime(stale, (0, 0))
    fresh = tmp_path / ".ingest-new"
    fresh.mkdir()
    keep = tmp_path / ("a" * 32)
    keep.mkdir()
    assert sweep_stale_ingests(tmp_path, max_age_s=60) == 1
    assert not stale.exists() and fresh.exists() and keep.exists()


def test_manifest_json_has_no_absolute_paths(sandbox):
    m = ingest(sandbox, make_zip(sandbox / "in/a.zip", good_members()))
    text = (sandbox / "out" / m.id / "manifest.json").read_text()
    assert str(sandbox) not in text
    assert json.loads(text)["id"] == m.id
