"""Property tests over generated archives: ingestion returns a manifest or raises InvalidUpload, nothing
else; every written file stays inside the ingest root; bytes written never exceed the budget."""
from __future__ import annotations

import io
import os
import shutil
import tempfile
import warnings
import zipfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st
from PIL import Image

from ldifs_engine.data.ingest import IngestLimits, UploadRejected, ingest_zip
from ldifs_engine.data.manifest import STORED_FILE, Manifest, read_manifest
from ldifs_engine.data.templates import normalize_classname
from ldifs_engine.errors import InvalidUpload

LIMITS = IngestLimits(max_bytes=256 * 1024, max_members=40, max_pixels=64 * 64, min_per_class=1, max_classes=8,
                      max_written_bytes=48 * 1024)
PROPERTY = settings(max_examples=60, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


def _encode(fmt: str, colour: tuple[int, int, int], size: tuple[int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, fmt)
    return buf.getvalue()


TINY_IMAGES = [_encode(fmt, c, s) for fmt in ("PNG", "JPEG", "GIF", "BMP", "WEBP")
               for c, s in (((255, 0, 0), (4, 4)), ((0, 90, 200), (9, 5)), ((10, 10, 10), (80, 80)))]

HOSTILE = "ab./\\:\x00é~ -_"
segment = st.text(alphabet=HOSTILE, min_size=0, max_size=5)
SAFE_PREFIXES = ["", "", "", "top/", "__MACOSX/"]  # mixed in hostile archives
HOSTILE_PREFIXES = ["/", "C:", "..", "../..", "\\\\srv"]
FILES = ["a.png", "b.jpg", "c.gif", "d", "e.webp", "f.bmp", "g.png", "h.jpg", ".DS_Store", "Thumbs.db", "labels.csv"]


def structured(prefixes: list[str], files: list[str]) -> st.SearchStrategy[str]:
    return st.tuples(
        st.sampled_from(prefixes),
        st.sampled_from(["cat", "cat", "cat", "dog", "dog", "dog", "Cat", "d_o_g", "n01440764"]),
        st.sampled_from(files),
    ).map(lambda t: ("/" if t[0] == "/" else "") + "/".join(p.strip("/") for p in t if p.strip("/")))


random_path = st.lists(segment, min_size=1, max_size=4).map("/".join)
hostile_name = st.one_of(structured(SAFE_PREFIXES + HOSTILE_PREFIXES, FILES + ["../e.png"]), random_path)
def plausible_names(wrapper: str) -> st.SearchStrategy[str]:
    return structured([wrapper] * 9 + ["__MACOSX/"], FILES)
damaged = st.one_of(
    st.binary(max_size=64),
    st.sampled_from(TINY_IMAGES).flatmap(lambda b: st.integers(1, len(b) - 1).map(lambda n: b[:n])),  # truncated
    st.tuples(st.sampled_from(TINY_IMAGES), st.integers(0, 10_000), st.integers(0, 255))
    .map(lambda t: t[0][: t[1] % len(t[0])] + bytes([t[2]]) + t[0][t[1] % len(t[0]) + 1:]),  # one byte changed
    st.just(b"path,label\na.png,cat\nb.jpg,dog\n"),
)
payload = st.integers(0, 2).flatmap(lambda k: damaged if k == 0 else st.sampled_from(TINY_IMAGES))
# Half the archives use only plausible names (so that some are accepted), half mix in hostile ones.
archives = st.tuples(st.booleans(), st.sampled_from(["", "top/"])).flatmap(lambda mode: st.lists(
    st.tuples(st.integers(0, 3).flatmap(lambda k: hostile_name if mode[0] and k == 0 else plausible_names(mode[1])),
              payload),
    min_size=0, max_size=14, unique_by=lambda member: member[0]))


def _build_zip(path: Path, members: list[tuple[str, bytes]]) -> bool:
    try:
        with warnings.catch_warnings(), zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
            warnings.simplefilter("ignore")  # duplicate names are part of the fuzzing
            for name, data in members:
                z.writestr(name, data)
        return True
    except (ValueError, OSError, IndexError):  # names zipfile itself cannot write (e.g. empty)
        return False


def _files_under(root: Path) -> list[Path]:
    return [Path(d) / n for d, _, names in os.walk(root) for n in names]


def _check_outcome(sandbox: Path, zip_path: Path, limits: IngestLimits) -> Manifest | None:
    out = sandbox / "out"
    outside_before = {p for p in _files_under(sandbox) if not p.is_relative_to(out)}
    try:
        result = ingest_zip(zip_path, out, limits, name="p", owner="o")
    except UploadRejected as e:
        assert isinstance(e, InvalidUpload) and e.code and str(e)
        event(f"rejected: {e.code}")
        result = None
    else:
        event("accepted")
    # Anything else propagates and fails the property.
    outside_after = {p for p in _files_under(sandbox) if not p.is_relative_to(out)}
    assert outside_after == outside_before, "a file appeared outside the ingest root"
    written = _files_under(out) if out.exists() else []
    for p in written:
        assert p.resolve().is_relative_to(out.resolve())
        assert not p.is_symlink()
    images = [p for p in written if p.suffix == ".png"]
    assert sum(p.stat().st_size for p in images) <= limits.written_budget
    if result is None:
        assert written == [], "a rejected upload left files behind"
        return None
    folder = out / result.id
    assert {p.parent.parent for p in images} == ({folder} if images else set())
    assert read_manifest(folder / "manifest.json").id == result.id
    assert len(result.files) == len(images) == result.report["accepted"]
    for f in result.files:
        assert STORED_FILE.match(f.file) and (folder / f.file).is_file()
    counts = [c["count"] for c in result.class_counts()]
    assert len(counts) >= 2 and min(counts) >= limits.min_per_class
    assert result.report["bytes_read"] <= limits.max_bytes
    return result


@pytest.fixture
def fresh():
    """A new sandbox per example (function-scoped fixtures are shared across hypothesis examples)."""
    made = []

    def make() -> Path:
        d = Path(tempfile.mkdtemp(prefix="ingest-prop-"))
        made.append(d)
        return d

    yield make
    for d in made:
        shutil.rmtree(d, ignore_errors=True)


@PROPERTY
@given(members=archives)
def test_any_archive_gives_a_manifest_or_the_upload_error(fresh, members):
    sandbox = fresh()
    zip_path = sandbox / "upload.zip"
    assume(_build_zip(zip_path, members))
    _check_outcome(sandbox, zip_path, LIMITS)


tree = st.dictionaries(
    keys=st.sampled_from(["cat", "Cat", "dog", "golden_retriever", "golden retriever", "bird", "n02084071", "ünï"]),
    values=st.lists(st.sampled_from(TINY_IMAGES + [b"junk", b""]), min_size=0, max_size=4),
    min_size=0, max_size=5,
)


@PROPERTY
@given(classes=tree, wrapper=st.sampled_from(["", "dataset/"]))
def test_class_folder_trees_give_matching_counts_or_a_typed_error(fresh, classes, wrapper):
    sandbox = fresh()
    members = [(f"{wrapper}{c}/{i}.img", data) for c, files in classes.items() for i, data in enumerate(files)]
    zip_path = sandbox / "upload.zip"
    assume(_build_zip(zip_path, members))
    limits = IngestLimits(max_bytes=LIMITS.max_bytes, max_pixels=LIMITS.max_pixels, min_per_class=2, max_classes=8)
    result = _check_outcome(sandbox, zip_path, limits)
    if result is None:
        return
    expected = {
        normalize_classname(c): sum(1 for d in files if d in TINY_IMAGES and not _too_big(d, limits.max_pixels))
        for c, files in classes.items() if files
    }
    assert {c["name"]: c["count"] for c in result.class_counts()} == expected


def _too_big(data: bytes, max_pixels: int) -> bool:
    with Image.open(io.BytesIO(data)) as im:
        return im.width * im.height > max_pixels
