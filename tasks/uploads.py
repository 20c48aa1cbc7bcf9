"""User datasets as a service: import (quota + safe ingestion), list, show (with a preview grid), edit, delete.

Every function takes the acting user first and is owner-scoped: another user's dataset is "not found",
exactly like a missing one. The owner is stored as a hash of the user name, never the name itself, and
no path is ever derived from a user string: upload folders are named by server-generated ids, and keys
are checked against ``^upload:[0-9a-f]{32}$`` before they touch the filesystem.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import unicodedata
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

from ldifs_engine.data.catalog import DATASETS, DataContext
from ldifs_engine.data.manifest import (
    MANIFEST_NAME,
    UPLOAD_ID,
    UPLOAD_KEY,
    Manifest,
    clear_overrides,
    read_manifest,
    resolve_dataset,
    upload_dir,
    write_manifest,
    write_overrides,
)
from ldifs_engine.data.templates import (
    check_classnames,
    check_templates,
    id_like_warnings,
    normalize_classname,
)
from ldifs_engine.errors import DatasetUnavailable, SpecError

from . import ownership
from .settings import Settings, get_settings
from .store import QuotaExceeded

MAX_NAME_CHARS = 100
PREVIEW_PER_CLASS = 6
PREVIEW_MAX_CLASSES = 48
THUMB = 72
LABEL_W = 180


class DatasetNotFound(DatasetUnavailable):
    """No such dataset among the caller's (another user's dataset is reported exactly like a missing one)."""


# --- identities and paths -----------------------------------------------------------------------------

def owner_hash(user: str) -> str:
    """The opaque owner id stored in manifests (a hash of the user name, never the name)."""
    if not isinstance(user, str) or not user.strip():
        raise SpecError("user: must be a non-empty name")
    return ownership.owner_hash(user)


def _ctx(s: Settings) -> DataContext:
    return DataContext(root=s.datasets_dir, download=False)


def _display_name(name: str | None, fallback: str) -> str:
    text = unicodedata.normalize("NFC", name if name is not None else fallback)
    text = "".join(ch for ch in text if unicodedata.category(ch)[0] != "C")
    text = " ".join(text.split())[:MAX_NAME_CHARS]
    return text or "Uploaded dataset"


@contextlib.contextmanager
def _user_lock(s: Settings, owner: str, *, wait: bool) -> Iterator[None]:
    """One ingest/edit/delete per user at a time (also the per-user pending-upload limit)."""
    locks = s.uploads_dir / ".locks"
    locks.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        import fcntl
    except ImportError:  # not POSIX: no cross-process lock, still correct for one process
        yield
        return
    fd = os.open(locks / f"{owner}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            raise QuotaExceeded("another upload of yours is still being processed; try again when it has "
                                "finished") from None
        yield
    finally:
        os.close(fd)


def _owned_manifests(s: Settings, owner: str) -> list[tuple[Manifest, Path]]:
    out = []
    if not s.uploads_dir.is_dir():
        return out
    for entry in os.scandir(s.uploads_dir):
        if not UPLOAD_ID.match(entry.name) or not entry.is_dir(follow_symlinks=False):
            continue
        try:
            m = read_manifest(Path(entry.path) / MANIFEST_NAME)
        except DatasetUnavailable:
            continue  # half-deleted or damaged: not listable, not counted
        if m.owner == owner and m.id == entry.name:
            out.append((m, Path(entry.path)))
    return out


def _get_owned(s: Settings, owner: str, key: str) -> tuple[Manifest, Path]:
    if not isinstance(key, str) or not UPLOAD_KEY.match(key):
        raise DatasetNotFound(f"dataset {key!r} not found among your uploads")
    folder = upload_dir(s.datasets_dir, key.split(":", 1)[1])
    try:
        m = read_manifest(folder / MANIFEST_NAME)
    except DatasetUnavailable:
        raise DatasetNotFound(f"dataset {key!r} not found among your uploads") from None
    if m.owner != owner or m.id != folder.name:
        raise DatasetNotFound(f"dataset {key!r} not found among your uploads")
    return m, folder


def _used_bytes(s: Settings, owner: str) -> int:
    return sum(m.bytes for m, _ in _owned_manifests(s, owner))


# --- public API ---------------------------------------------------------------------------------------

def storage_usage(user: str) -> dict:
    """``{"used_bytes", "quota_bytes", "datasets"}`` of the user's uploads."""
    s = get_settings()
    owned = _owned_manifests(s, owner_hash(user))
    return {"used_bytes": sum(m.bytes for m, _ in owned), "quota_bytes": s.user_storage_quota_bytes,
            "datasets": len(owned)}


def import_dataset(user: str, zip_path: str | os.PathLike, name: str | None = None) -> dict:
    """Ingest an uploaded zip for ``user`` and return the ingestion report.

    The archive is checked and streamed by ``ldifs_engine.data.ingest`` under the limits from settings
    (``LDIFS_UPLOAD_MAX_BYTES``, ``_MAX_MEMBERS``, ``_MAX_PIXELS``, ``_MIN_PER_CLASS``, ``_MAX_CLASSES``);
    the bytes it may write are also capped by what is left of the user's storage quota.

    Returns:
        The report: ``key`` (``upload:<id>``), ``name``, per-class counts, every quarantined file with its
        reason, warnings, bytes, and the quota after the import.

    Raises:
        InvalidUpload: the archive breaks a rule (``str()`` says which); nothing was kept.
        QuotaExceeded: the user's storage quota is used up, or another of their uploads is in progress.
    """
    # Decoding images needs PIL and numpy: loaded when an upload arrives, not with the service layer.
    from ldifs_engine.data.ingest import IngestLimits, UploadRejected, ingest_zip, sweep_stale_ingests

    s = get_settings()
    owner = owner_hash(user)
    display = _display_name(name, Path(zip_path).stem)
    with _user_lock(s, owner, wait=False):
        used = _used_bytes(s, owner)
        left = s.user_storage_quota_bytes - used
        if left <= 0:
            raise QuotaExceeded(f"your uploads use {used:,} of {s.user_storage_quota_bytes:,} bytes; delete a "
                                "dataset before uploading another")
        limits = IngestLimits(
            max_bytes=s.upload_max_bytes,
            max_members=s.upload_max_members,
            max_pixels=s.upload_max_pixels,
            min_per_class=s.upload_min_per_class,
            max_classes=s.upload_max_classes,
            max_written_bytes=min(s.upload_max_bytes, left),
        )
        sweep_stale_ingests(s.uploads_dir)
        try:
            manifest = ingest_zip(zip_path, s.uploads_dir, limits, name=display, owner=owner)
        except UploadRejected as e:
            if e.code == "written_budget" and left < s.upload_max_bytes:
                raise QuotaExceeded(f"this dataset does not fit in what is left of your storage quota ({left:,} of "
                                    f"{s.user_storage_quota_bytes:,} bytes); delete a dataset first") from None
            raise
    report = {"key": manifest.key, "name": manifest.name, **manifest.report}
    report["quota"] = {"used_bytes": used + manifest.bytes, "quota_bytes": s.user_storage_quota_bytes}
    return report


def _summary(m: Manifest) -> dict:
    counts = m.split_counts()
    return {
        "key": m.key, "name": m.name, "title": m.name, "source": "upload", "num_classes": len(m.classnames),
        "classnames": list(m.classnames), "templates": list(m.templates), "num_images": len(m.files),
        "splits": counts, "bytes": m.bytes, "created_at": m.created_at, "updated_at": m.updated_at,
        "warnings": id_like_warnings(m.classnames), "tags": ["upload"],
    }


def list_user_datasets(user: str) -> list[dict]:
    """The user's uploads, newest first (metadata only: name, classes, counts, bytes, warnings)."""
    s = get_settings()
    owned = _owned_manifests(s, owner_hash(user))
    return [_summary(m) for m, _ in sorted(owned, key=lambda mf: mf[0].created_at, reverse=True)]


def show_dataset(user: str, key: str, *, preview: bool = True, per_class: int = PREVIEW_PER_CLASS,
                 max_classes: int = PREVIEW_MAX_CLASSES) -> dict:
    """Metadata, per-class counts and a preview grid PNG of one dataset (an upload of ``user`` or a catalog one).

    The grid (one row per class: its name, count and up to ``per_class`` samples) is rendered by the server
    into the export folder; ``preview_png`` is its path, or None. Catalog datasets that are not installed
    come back with ``available: False`` and the message that says how to provide them.

    Raises:
        DatasetNotFound: not one of the user's uploads, nor a catalog key.
    """
    s = get_settings()
    owner = owner_hash(user)
    if isinstance(key, str) and key.startswith("upload:"):
        m, folder = _get_owned(s, owner, key)
        out = _summary(m)
        out.update(available=True, classes=m.class_counts(), report=m.report, split=m.split)
        if preview:
            samples = _upload_samples(m, folder, per_class, max_classes)
            out["preview_png"] = str(_render_grid(s, owner, m.key, m.updated_at or m.created_at, samples,
                                                  [c["count"] for c in out["classes"]], len(m.classnames)))
        return out
    if not isinstance(key, str) or key not in DATASETS:
        raise DatasetNotFound(f"dataset {key!r} not found; choose a catalog dataset or one of your uploads")
    ctx = _ctx(s)
    info = resolve_dataset(key, ctx)
    out = info.meta()
    out.update(warnings=id_like_warnings(info.classnames), preview_png=None)
    try:
        test = info.load("test", ctx)
        labels = test.labels().tolist()
    except DatasetUnavailable as e:
        out.update(available=False, message=str(e))
        return out
    counts = [0] * len(info.classnames)
    for y in labels:
        counts[y] += 1
    out.update(available=True, classes=[{"index": i, "name": n, "test": counts[i]}
                                        for i, n in enumerate(info.classnames)])
    if preview:
        samples = _catalog_samples(test, labels, info.classnames, per_class, max_classes)
        out["preview_png"] = str(_render_grid(s, owner, key, "", samples, counts, len(info.classnames)))
    return out


def update_dataset(user: str, key: str, classnames: list[str] | None = None,
                   templates: list[str] | None = None) -> dict:
    """Edit the class names and/or prompt templates of one of the user's uploads.

    Class names: one per class in label order, non-empty, at most 200 characters, no duplicates (case and
    spacing ignored). Templates: 1 to 100, each with exactly one ``{}``. Names that look like WordNet ids
    are accepted with a warning (zero-shot prompts are built from them).

    Returns:
        The dataset summary after the edit, with ``warnings``.

    Raises:
        SpecError: every problem, each naming the field (``classnames[3]: ...``).
        DatasetNotFound: not one of the user's uploads. Catalog datasets are edited by the operator
            (``ldifs dataset edit KEY`` → ``set_catalog_overrides``).
    """
    s = get_settings()
    owner = owner_hash(user)
    if isinstance(key, str) and key in DATASETS:
        raise SpecError(f"dataset: {key!r} is a catalog dataset shared by every user; only the operator can change "
                        "its class names or templates (ldifs dataset edit)")
    with _user_lock(s, owner, wait=True):
        m, folder = _get_owned(s, owner, key)
        problems: list[str] = []
        if classnames is not None:
            problems += check_classnames(classnames, len(m.classnames))
        if templates is not None:
            problems += check_templates(templates)
        if problems:
            raise SpecError(problems)
        if classnames is not None:
            m.classnames = [normalize_classname(n) for n in classnames]
        if templates is not None:
            m.templates = [t.strip() for t in templates]
        m.updated_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
        write_manifest(folder / MANIFEST_NAME, m)
    return _summary(m)


def delete_dataset(user: str, key: str) -> dict:
    """Delete one of the user's uploads (its folder disappears atomically, then is removed)."""
    import shutil
    import uuid

    s = get_settings()
    owner = owner_hash(user)
    with _user_lock(s, owner, wait=True):
        m, folder = _get_owned(s, owner, key)
        trash = folder.parent / f".deleted-{m.id}-{uuid.uuid4().hex[:8]}"
        os.rename(folder, trash)
    shutil.rmtree(trash, ignore_errors=True)
    return {"key": m.key, "deleted": True, "freed_bytes": m.bytes}


def set_catalog_overrides(key: str, classnames: list[str] | None = None, templates: list[str] | None = None,
                          *, reset: bool = False) -> dict:
    """Operator-only: override (or ``reset``) the class names / templates of a catalog dataset for everyone.

    Raises:
        SpecError: unknown key or invalid values (every problem, naming the field).
    """
    s = get_settings()
    if not isinstance(key, str) or key not in DATASETS:
        raise SpecError(f"dataset: {key!r} is not a catalog dataset; choose one of: {', '.join(DATASETS.names())}")
    info = DATASETS.get(key)
    if reset:
        clear_overrides(s.datasets_dir, key)
    if classnames is not None or templates is not None:
        write_overrides(s.datasets_dir, key, classnames=classnames, templates=templates,
                        num_classes=len(info.classnames))
    resolved = resolve_dataset(key, _ctx(s))
    return {"key": key, "classnames": list(resolved.classnames), "templates": list(resolved.templates),
            "warnings": id_like_warnings(resolved.classnames)}


# --- preview grid -------------------------------------------------------------------------------------

def _upload_samples(m: Manifest, folder: Path, per_class: int, max_classes: int) -> list[tuple[str, list]]:
    from ldifs_engine.data.ingest import open_rgb

    rows: list[tuple[str, list]] = []
    by_class: dict[int, list[str]] = {}
    for f in m.files:
        picks = by_class.setdefault(f.label, [])
        if len(picks) < per_class:
            picks.append(f.file)
    for i, cname in enumerate(m.classnames[:max_classes]):
        thumbs = []
        for rel in by_class.get(i, []):
            try:
                im = open_rgb(folder / rel, max_pixels=64 * 1024 * 1024, formats=("PNG",))
            except Exception:  # noqa: BLE001 - a preview skips an unreadable file
                continue
            thumbs.append(im)
        rows.append((cname, thumbs))
    return rows


def _catalog_samples(ds, labels: list[int], classnames, per_class: int, max_classes: int) -> list[tuple[str, list]]:
    from PIL import Image

    picks: dict[int, list[int]] = {}
    for idx, y in enumerate(labels):
        if y < max_classes and len(picks.setdefault(y, [])) < per_class:
            picks[y].append(idx)
    rows = []
    for i, cname in enumerate(list(classnames)[:max_classes]):
        thumbs = []
        for idx in picks.get(i, []):
            try:
                img = ds[idx][0]
            except Exception:  # noqa: BLE001
                continue
            thumbs.append(Image.fromarray(img.permute(1, 2, 0).contiguous().numpy(), "RGB"))
        rows.append((cname, thumbs))
    return rows


def _render_grid(s: Settings, owner: str, key: str, version: str, rows: list[tuple[str, list]],
                 counts: list[int], total_classes: int) -> Path:
    """Draw rows of ``name (count)`` + thumbnails into ``exports/previews/<owner>/<hash>.png``."""
    from PIL import Image, ImageDraw, ImageFont

    per_class = max((len(t) for _, t in rows), default=0) or 1
    footer = 24 if total_classes > len(rows) else 0
    width = LABEL_W + per_class * (THUMB + 4) + 4
    height = max(1, len(rows)) * (THUMB + 4) + 4 + footer
    grid = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(grid)
    try:
        font = ImageFont.load_default(size=13)
    except TypeError:  # Pillow without FreeType sizing
        font = ImageFont.load_default()
    for r, (cname, thumbs) in enumerate(rows):
        y0 = 4 + r * (THUMB + 4)
        label = cname if len(cname) <= 22 else cname[:21] + "…"
        draw.text((6, y0 + THUMB // 2 - 14), label, fill=(20, 20, 20), font=font)
        draw.text((6, y0 + THUMB // 2 + 2), f"{counts[r]} images", fill=(110, 110, 110), font=font)
        for c, im in enumerate(thumbs):
            with im:
                t = im.copy()
            t.thumbnail((THUMB, THUMB))
            x = LABEL_W + c * (THUMB + 4) + (THUMB - t.width) // 2
            grid.paste(t, (x, y0 + (THUMB - t.height) // 2))
    if footer:
        draw.text((6, height - footer + 4), f"showing {len(rows)} of {total_classes} classes", fill=(110, 110, 110),
                  font=font)
    out_dir = s.exports_dir / "previews" / owner
    out_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    digest = hashlib.sha256(f"{key}|{version}|{[n for n, _ in rows]}".encode()).hexdigest()[:24]
    path = out_dir / f"{digest}.png"
    tmp = out_dir / f".{digest}.{os.getpid()}.tmp"
    grid.save(tmp, format="PNG")
    os.replace(tmp, path)
    return path
