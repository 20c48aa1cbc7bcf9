"""Safe ingestion of an uploaded zip of images, and the one place that decodes images.

An upload is untrusted input from the internet. Ingestion therefore never extracts: it walks the zip's
member list, checks every name and attribute before reading a byte, then streams member by member,
counting the decompressed bytes it actually reads (declared sizes can lie), decodes each image fully
with Pillow restricted to an allowlist of formats, and writes it re-encoded as PNG under a
server-generated name (``<class index>/<000123>.png``) in a fresh folder next to the destination. Class
names are data in the manifest, never paths. The folder is renamed into place only when everything
succeeded; on any failure it is removed, so a rejected upload leaves nothing behind.

Rejections raise ``UploadRejected`` (an ``InvalidUpload`` with a ``code``); files that are merely
unusable (not an image, corrupt, too many pixels) are quarantined and listed in the report, and the
upload still succeeds if every class keeps enough images.
"""
from __future__ import annotations

import csv
import io
import os
import re
import shutil
import stat
import tempfile
import time
import unicodedata
import uuid
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath

from ..errors import InvalidUpload
from .images import ALLOWED_FORMATS, UnusableImage, decode_image_file, open_rgb, short_error  # noqa: F401 — re-exported: the upload API
from .manifest import MANIFEST_NAME, SCHEMA, Manifest, ManifestFile, write_manifest
from .splits import stratified_holdout
from .templates import (
    DEFAULT_TEMPLATES,
    MAX_CLASSNAME_CHARS,
    classname_key,
    id_like_warnings,
    normalize_classname,
)

JUNK_DIRS = frozenset({"__macosx"})
JUNK_FILES = frozenset({".ds_store", "thumbs.db", "desktop.ini", ".localized"})
# Only used to tell "images left outside class folders" from stray documents; decoding decides what an
# image really is.
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".jfif"})
LABELS_CSV = "labels.csv"
MAX_LABELS_CSV_BYTES = 16 * 1024 * 1024
MAX_NAME_CHARS = 1024
CHUNK = 64 * 1024

EXPECTED_LAYOUT = (
    "one folder per class with the images directly inside (cats/001.jpg, dogs/002.png, ...; one wrapping "
    "top folder is fine), or a labels.csv with the header 'path,label' next to the images"
)
EXPECTED_TREE = """\
my-dataset.zip
├── cats/
│   ├── 001.jpg
│   └── 002.jpg
└── dogs/
    ├── 003.png
    └── 004.png

or

my-dataset.zip
├── labels.csv        (header: path,label  — e.g. images/001.jpg,cats)
└── images/
    ├── 001.jpg
    └── 002.jpg"""


class UploadRejected(InvalidUpload):
    """The archive was rejected as a whole; ``code`` names the rule, ``str()`` says what to fix."""

    def __init__(self, code: str, message: str):
        self.code = code
        super().__init__(f"upload rejected: {message}; nothing was kept")


@dataclass(frozen=True)
class IngestLimits:
    """Budgets of one ingestion (the service layer fills them from settings)."""

    max_bytes: int = 500 * 1024**2  # decompressed bytes read from the archive (and written)
    max_members: int = 50_000
    max_pixels: int = 4096 * 4096  # per image, from the header, before decoding
    min_per_class: int = 5
    max_classes: int = 1000
    max_written_bytes: int | None = None  # re-encoded bytes written; None = max_bytes (quota uses this)
    max_member_bytes: int | None = None  # one member; None = what an image under max_pixels can need
    test_fraction: float = 0.2  # per class, seeded
    split_seed: int = 0

    @property
    def written_budget(self) -> int:
        return self.max_bytes if self.max_written_bytes is None else min(self.max_bytes, self.max_written_bytes)

    @property
    def member_budget(self) -> int:
        if self.max_member_bytes is not None:
            return min(self.max_bytes, self.max_member_bytes)
        # 4 bytes per pixel (uncompressed BMP/PNG) plus room for metadata bounds any honest image.
        return min(self.max_bytes, self.max_pixels * 4 + 4 * 1024**2)


@dataclass
class _Entry:
    info: zipfile.ZipInfo
    name: str  # the member name as in the archive (data, shown in reports)
    parts: tuple[str, ...]  # path components after unwrapping one top folder
    label_raw: str | None = None


@dataclass
class _Stats:
    bytes_read: int = 0
    bytes_written: int = 0
    quarantined: list[dict] = field(default_factory=list)

    def quarantine(self, member: str, code: str, reason: str) -> None:
        self.quarantined.append({"member": member, "code": code, "reason": reason})


# --- member names ------------------------------------------------------------------------------------

_DRIVE = re.compile(r"^[A-Za-z]:")


def check_member_name(name: str) -> str | None:
    """Why an archive member name is unsafe, or None. Names are never used as paths, but a name that
    *looks* like a path escape marks a hostile or broken archive, so it is rejected, not sanitised."""
    if not name:
        return "is empty"
    if "\x00" in name:
        return "contains a NUL byte"
    if len(name) > MAX_NAME_CHARS:
        return f"is longer than {MAX_NAME_CHARS} characters"
    if "\\" in name:
        return "contains a backslash (a Windows path separator)"
    if name.startswith("/"):
        return "is an absolute path"
    if _DRIVE.match(name):
        return "starts with a drive letter"
    if any(part == ".." for part in name.split("/")):
        return "contains a '..' component (path traversal)"
    if any(unicodedata.category(ch) == "Cc" for ch in name):
        return "contains control characters"
    return None


def _is_link_or_special(info: zipfile.ZipInfo) -> bool:
    mode = info.external_attr >> 16  # Unix mode bits; zero in archives made on Windows
    return stat.S_IFMT(mode) not in (0, stat.S_IFREG, stat.S_IFDIR)


def _is_junk(parts: tuple[str, ...]) -> bool:
    return (
        any(p.casefold() in JUNK_DIRS for p in parts[:-1])
        or parts[-1].casefold() in JUNK_FILES
        or parts[-1].startswith("._")  # AppleDouble resource forks
    )


# --- archive type ------------------------------------------------------------------------------------

_MAGIC = (
    (b"\x1f\x8b", "a gzip/tar.gz file"),
    (b"BZh", "a bzip2 file"),
    (b"\xfd7zXZ\x00", "an xz file"),
    (b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive"),
    (b"Rar!\x1a\x07", "a RAR archive"),
    (b"\x28\xb5\x2f\xfd", "a zstd file"),
)


def _check_is_zip(path: Path, max_bytes: int) -> None:
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(512)
    except OSError as e:
        raise UploadRejected("unreadable", f"the uploaded file cannot be read ({short_error(e)})") from None
    if size > max_bytes:
        raise UploadRejected("too_large", f"the archive is {size:,} bytes; the limit is {max_bytes:,}")
    kind = next((what for magic, what in _MAGIC if head.startswith(magic)), None)
    if kind is None and len(head) >= 262 and head[257:262] == b"ustar":
        kind = "a tar archive"
    if kind is None and not zipfile.is_zipfile(path):
        kind = "not a zip archive"
    if kind is not None:
        shown = kind if kind.startswith("not") else f"{kind}, not a zip archive"
        raise UploadRejected("not_zip", f"the file is {shown}; upload a .zip of {EXPECTED_LAYOUT}")


# --- planning (names, layout, classes; no decoding) ---------------------------------------------------

_ZIP_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError, NotImplementedError,
               RuntimeError, KeyError, OverflowError)


def _collect(zf: zipfile.ZipFile, limits: IngestLimits) -> tuple[list[_Entry], int]:
    infos = zf.infolist()
    if len(infos) > limits.max_members:
        raise UploadRejected("too_many_members", f"the archive has {len(infos):,} members; the limit is "
                             f"{limits.max_members:,}")
    declared = sum(max(0, i.file_size) for i in infos)
    if declared > limits.max_bytes:
        raise UploadRejected("too_large", f"the archive expands to {declared:,} bytes; the limit is "
                             f"{limits.max_bytes:,}")
    entries: list[_Entry] = []
    seen: set[str] = set()
    ignored = 0
    for info in infos:
        name = info.orig_filename
        why = check_member_name(name)
        if why is not None:
            raise UploadRejected("unsafe_name", f"member name {name!r} {why}")
        if _is_link_or_special(info):
            raise UploadRejected("symlink", f"member {name!r} is a symbolic link or special file")
        if info.flag_bits & 0x1:
            raise UploadRejected("encrypted", f"member {name!r} is encrypted; upload an unencrypted zip")
        if name in seen:
            raise UploadRejected("duplicate_member", f"member {name!r} appears twice in the archive")
        seen.add(name)
        if name.endswith("/"):
            continue
        parts = PurePosixPath(name).parts
        if not parts:
            continue
        if _is_junk(parts):
            ignored += 1
            continue
        entries.append(_Entry(info, name, parts))
    return entries, ignored


def _unwrap(entries: list[_Entry]) -> str | None:
    """Strip one wrapping top folder shared by every file (``dataset/cats/1.jpg`` → ``cats/1.jpg``)."""
    if not entries or any(len(e.parts) < 2 for e in entries):
        return None
    top = entries[0].parts[0]
    if any(e.parts[0] != top for e in entries):
        return None
    deeper = any(len(e.parts) >= 3 for e in entries)
    has_csv = any(e.parts[1:] == (LABELS_CSV,) for e in entries)
    if not (deeper or has_csv):
        return None  # "photos/a.jpg, photos/b.jpg": a single class folder, reported as such
    for e in entries:
        e.parts = e.parts[1:]
    return top


def _plan_folders(entries: list[_Entry], stats: _Stats) -> list[_Entry]:
    loose_images = [e for e in entries if len(e.parts) == 1 and PurePosixPath(e.name).suffix.lower() in IMAGE_SUFFIXES]
    in_classes = [e for e in entries if len(e.parts) == 2]
    nested = [e for e in entries if len(e.parts) > 2]
    if loose_images and not in_classes and not nested:
        shown = ", ".join(repr(e.name) for e in loose_images[:3])
        raise UploadRejected("layout_flat", f"the images are not in class folders ({shown} ...); expected "
                             f"{EXPECTED_LAYOUT}")
    if loose_images:
        shown = ", ".join(repr(e.name) for e in loose_images[:3])
        raise UploadRejected("layout_mixed", f"some images are outside the class folders ({shown}); expected "
                             f"{EXPECTED_LAYOUT}")
    if nested:
        raise UploadRejected("layout_nested", f"{nested[0].name!r} is nested more than one folder deep; expected "
                             f"{EXPECTED_LAYOUT}")
    for e in entries:
        if len(e.parts) == 1:
            stats.quarantine(e.name, "outside_class", "not inside a class folder")
    for e in in_classes:
        e.label_raw = e.parts[0]
    return in_classes


def _read_member(zf: zipfile.ZipFile, entry: _Entry, limits: IngestLimits, stats: _Stats, cap: int) -> bytes:
    """Stream one member, counting real decompressed bytes against the archive budget."""
    buf = bytearray()
    try:
        with zf.open(entry.info) as f:
            while True:
                chunk = f.read(CHUNK)
                if not chunk:
                    break
                stats.bytes_read += len(chunk)
                if stats.bytes_read > limits.max_bytes:
                    raise UploadRejected("too_large", f"the archive expands to more than {limits.max_bytes:,} "
                                         "bytes (counted while reading; its declared sizes are wrong)")
                buf += chunk
                if len(buf) > cap:
                    raise UnusableImage("too_large", f"larger than {cap:,} bytes")
    except (UploadRejected, UnusableImage):
        raise
    except _ZIP_ERRORS as e:
        raise UploadRejected("corrupt_zip", f"member {entry.name!r} cannot be read ({short_error(e)})") from None
    return bytes(buf)


def _plan_csv(zf: zipfile.ZipFile, entries: list[_Entry], limits: IngestLimits, stats: _Stats) -> list[_Entry]:
    csv_entry = next(e for e in entries if e.parts == (LABELS_CSV,))
    try:
        raw = _read_member(zf, csv_entry, limits, stats, min(MAX_LABELS_CSV_BYTES, limits.max_bytes))
    except UnusableImage:
        raise UploadRejected("bad_labels_csv", f"labels.csv is larger than {MAX_LABELS_CSV_BYTES:,} bytes") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise UploadRejected("bad_labels_csv", "labels.csv is not UTF-8 text") from None
    rows = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(rows, None)
    except csv.Error as e:
        raise UploadRejected("bad_labels_csv", f"labels.csv line 1: {e}") from None
    if header is None or [c.strip().casefold() for c in header[:2]] != ["path", "label"]:
        raise UploadRejected("bad_labels_csv", "labels.csv must start with the header row 'path,label'")
    by_parts = {e.parts: e for e in entries if e is not csv_entry}
    listed: set[tuple[str, ...]] = set()
    chosen: list[_Entry] = []
    try:
        for line, row in enumerate(rows, start=2):
            if not row or all(not c.strip() for c in row):
                continue
            if len(row) < 2 or not row[0].strip() or not row[1].strip():
                raise UploadRejected("bad_labels_csv", f"labels.csv line {line}: expected 'path,label', got {row!r}")
            if line > limits.max_members + 1:
                raise UploadRejected("too_many_members", f"labels.csv has more than {limits.max_members:,} rows")
            # The path is only a key into the member list, never a filesystem path; accept '\' from Windows.
            key = PurePosixPath(row[0].strip().replace("\\", "/")).parts
            if key in listed:
                raise UploadRejected("bad_labels_csv", f"labels.csv line {line}: {row[0].strip()!r} is listed twice")
            listed.add(key)
            entry = by_parts.get(key)
            if entry is None:
                stats.quarantine(row[0].strip(), "missing", "listed in labels.csv but not in the archive")
                continue
            entry.label_raw = row[1].strip()
            chosen.append(entry)
    except csv.Error as e:
        raise UploadRejected("bad_labels_csv", f"labels.csv: {e}") from None
    for parts, e in by_parts.items():
        if parts not in listed:
            stats.quarantine(e.name, "unlabeled", "not listed in labels.csv")
    return chosen


def _classes(entries: list[_Entry], limits: IngestLimits) -> tuple[list[str], list[str], dict[str, int]]:
    """Normalised class names (sorted, one per index), their raw spellings, and raw label → index."""
    by_key: dict[str, tuple[str, str]] = {}
    for raw in dict.fromkeys(e.label_raw for e in entries if e.label_raw is not None):
        name = normalize_classname(raw)
        if not name:
            raise UploadRejected("bad_classname", f"class name {raw!r} is empty once spaces and '_' are removed")
        if len(name) > MAX_CLASSNAME_CHARS:
            raise UploadRejected("bad_classname", f"class name {name[:40]!r}… is longer than {MAX_CLASSNAME_CHARS} "
                                 "characters")
        if any(unicodedata.category(ch) in ("Cc", "Cf") for ch in name):
            raise UploadRejected("bad_classname", f"class name {name!r} contains control characters")
        key = classname_key(name)
        if key in by_key and by_key[key][1] != raw:
            raise UploadRejected("duplicate_class", f"classes {by_key[key][1]!r} and {raw!r} are the same name once "
                                 "case, spacing and '_' are ignored; rename or merge them")
        by_key.setdefault(key, (name, raw))
    if len(by_key) > limits.max_classes:
        raise UploadRejected("too_many_classes", f"{len(by_key):,} classes; the limit is {limits.max_classes:,}")
    if len(by_key) < 2:
        found = f"only {next(iter(by_key.values()))[0]!r}" if by_key else "none"
        raise UploadRejected("too_few_classes", f"at least 2 classes are needed, found {found}; expected "
                             f"{EXPECTED_LAYOUT}")
    keys = sorted(by_key)
    names = [by_key[k][0] for k in keys]
    raws = [by_key[k][1] for k in keys]
    index = {by_key[k][1]: i for i, k in enumerate(keys)}
    return names, raws, index


# --- the whole ingestion -----------------------------------------------------------------------------

def ingest_zip(
    zip_path: str | os.PathLike,
    dest_root: str | os.PathLike,
    limits: IngestLimits,
    *,
    name: str,
    owner: str = "",
    progress: Callable[[int, int], None] | None = None,
) -> Manifest:
    """Ingest an uploaded zip into ``dest_root/<new 32-hex id>/`` and return its manifest.

    Args:
        zip_path: the uploaded archive (a server-side temporary file).
        dest_root: the uploads folder; the dataset lands in a new sub-folder named by a fresh id.
        limits: budgets (bytes, members, pixels, classes, images per class).
        name: display name stored in the manifest (data only).
        owner: opaque owner id stored in the manifest (the service layer passes a hash of the user).
        progress: optional callback ``(members_done, members_total)``.

    Returns:
        The manifest, already written to ``dest_root/<id>/manifest.json``; ``manifest.report`` is the
        ingestion report (counts per class, every quarantined file with its reason, warnings).

    Raises:
        UploadRejected: the archive breaks a rule; nothing was written.
    """
    zip_path, dest_root = Path(zip_path), Path(dest_root)
    _check_is_zip(zip_path, limits.max_bytes)
    dest_root.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".ingest-", dir=dest_root))
    try:
        manifest = _ingest_into(zip_path, work, limits, name=name, owner=owner, progress=progress)
        write_manifest(work / MANIFEST_NAME, manifest)
        final = dest_root / manifest.id
        os.rename(work, final)  # atomic on one filesystem; the id is fresh, so nothing is replaced
        return manifest
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise


def _ingest_into(zip_path: Path, work: Path, limits: IngestLimits, *, name: str, owner: str,
                 progress: Callable[[int, int], None] | None) -> Manifest:
    stats = _Stats()
    try:
        zf = zipfile.ZipFile(zip_path)
    except _ZIP_ERRORS as e:
        raise UploadRejected("corrupt_zip", f"the zip archive cannot be opened ({short_error(e)})") from None
    with zf:
        try:
            entries, ignored = _collect(zf, limits)
        except UploadRejected:
            raise
        except _ZIP_ERRORS as e:
            raise UploadRejected("corrupt_zip", f"the zip archive's directory is damaged ({short_error(e)})") from None
        wrapper = _unwrap(entries)
        if any(e.parts == (LABELS_CSV,) for e in entries):
            layout = "labels.csv"
            chosen = _plan_csv(zf, entries, limits, stats)
        else:
            layout = "folders"
            chosen = _plan_folders(entries, stats)
        classnames, raw_names, index = _classes(chosen, limits)
        files, labels = _decode_all(zf, chosen, index, work, limits, stats, progress)

    counts = [0] * len(classnames)
    for y in labels:
        counts[y] += 1
    short = [(classnames[i], n) for i, n in enumerate(counts) if n < limits.min_per_class]
    if short:
        shown = ", ".join(f"{c!r} has {n}" for c, n in short[:5]) + (" …" if len(short) > 5 else "")
        why = _quarantine_summary(stats.quarantined)
        raise UploadRejected("too_few_images", f"every class needs at least {limits.min_per_class} usable images: "
                             f"{shown}{'; ' + why if why else ''}")

    keep, test = stratified_holdout(labels, limits.test_fraction, limits.split_seed)
    split = ["train"] * len(files)
    for i in test:
        split[int(i)] = "test"
    manifest_files = [ManifestFile(file=f, label=y, split=s, source=src)
                      for (f, src), y, s in zip(files, labels, split, strict=True)]
    per_class = []
    for i, cname in enumerate(classnames):
        n_test = sum(1 for mf in manifest_files if mf.label == i and mf.split == "test")
        per_class.append({"index": i, "name": cname, "source_name": raw_names[i], "count": counts[i],
                          "train": counts[i] - n_test, "test": n_test})
    warns = id_like_warnings(classnames)
    if stats.quarantined:
        warns.append(f"{len(stats.quarantined)} file(s) were skipped; see 'quarantined' for each reason")
    report = {
        "layout": layout,
        "unwrapped_folder": wrapper,
        "accepted": len(manifest_files),
        "num_classes": len(classnames),
        "classes": per_class,
        "quarantined": stats.quarantined,
        "ignored_junk": ignored,
        "warnings": warns,
        "bytes_read": stats.bytes_read,
        "bytes_written": stats.bytes_written,
        "limits": {"max_bytes": limits.max_bytes, "max_members": limits.max_members,
                   "max_pixels": limits.max_pixels, "min_per_class": limits.min_per_class,
                   "max_classes": limits.max_classes},
    }
    return Manifest(
        schema=SCHEMA,
        id=uuid.uuid4().hex,
        name=name,
        owner=owner,
        classnames=classnames,
        source_names=raw_names,
        templates=list(DEFAULT_TEMPLATES),
        files=manifest_files,
        split={"seed": limits.split_seed, "test_fraction": limits.test_fraction, "method": "per-class holdout"},
        bytes=stats.bytes_written,
        report=report,
        created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )


def _decode_all(zf: zipfile.ZipFile, chosen: list[_Entry], index: dict[str, int], work: Path,
                limits: IngestLimits, stats: _Stats,
                progress: Callable[[int, int], None] | None) -> tuple[list[tuple[str, str]], list[int]]:
    files: list[tuple[str, str]] = []
    labels: list[int] = []
    next_number = [0] * len(index)
    made_dirs: set[int] = set()
    # Archive order keeps reads sequential (the zip is read front to back once).
    ordered = sorted(chosen, key=lambda e: e.info.header_offset)
    for done, entry in enumerate(ordered, start=1):
        y = index[entry.label_raw]
        try:
            data = _read_member(zf, entry, limits, stats, limits.member_budget)
            png = _reencode(data, limits.max_pixels)
        except UnusableImage as u:
            stats.quarantine(entry.name, u.code, u.reason)
            continue
        if stats.bytes_written + len(png) > limits.written_budget:
            raise UploadRejected("written_budget", f"the re-encoded images need more than "
                                 f"{limits.written_budget:,} bytes")
        if y not in made_dirs:
            (work / str(y)).mkdir(mode=0o700)
            made_dirs.add(y)
        rel = f"{y}/{next_number[y]:06d}.png"
        next_number[y] += 1
        with open(work / rel, "xb") as out:  # exclusive: never follows or overwrites anything
            out.write(png)
        stats.bytes_written += len(png)
        files.append((rel, entry.name))
        labels.append(y)
        if progress is not None:
            progress(done, len(ordered))
    return files, labels


def _reencode(data: bytes, max_pixels: int) -> bytes:
    im = open_rgb(io.BytesIO(data), max_pixels=max_pixels, exif_transpose=True)
    with im:
        out = io.BytesIO()
        im.save(out, format="PNG", compress_level=6)
    return out.getvalue()


def _quarantine_summary(quarantined: list[dict]) -> str:
    if not quarantined:
        return ""
    by_code: dict[str, int] = {}
    for q in quarantined:
        by_code[q["code"]] = by_code.get(q["code"], 0) + 1
    return "skipped files: " + ", ".join(f"{n} {code.replace('_', ' ')}" for code, n in sorted(by_code.items()))


def sweep_stale_ingests(dest_root: str | os.PathLike, max_age_s: float = 3600.0) -> int:
    """Remove ``.ingest-*`` folders left by a process killed mid-ingestion; returns how many."""
    root = Path(dest_root)
    removed = 0
    if not root.is_dir():
        return 0
    now = time.time()
    for p in root.iterdir():
        if p.name.startswith((".ingest-", ".deleted-")) and p.is_dir() and not p.is_symlink():
            try:
                if now - p.stat().st_mtime > max_age_s:
                    shutil.rmtree(p, ignore_errors=True)
                    removed += 1
            except OSError:
                pass
    return removed
