"""Upload manifests, the datasets they describe, and per-dataset overrides of names and templates.

An uploaded dataset is a folder ``<root>/uploads/<32-hex id>/`` holding ``manifest.json`` and the
images ingestion wrote under server-generated names (``<class index>/<000123>.png``). Its catalog key
is ``upload:<id>``; the id is checked against ``^[0-9a-f]{32}$`` before it touches a path, and the
resolved folder must lie inside the uploads folder.

Catalog datasets can have their class names or templates overridden by the operator in
``<root>/overrides/<key>.json``; uploads keep their edits in the manifest itself.
``resolve_dataset`` applies both and is what the engine calls.
"""
from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..lazy import torch

from ..errors import DatasetUnavailable, SpecError
from ..files import atomic_write_json
from . import images
from .catalog import DATASETS, SPLITS, DataContext, DatasetInfo, ImageSet
from .templates import check_classnames, check_templates, normalize_classname

SCHEMA = "ldifs.upload/1"
MANIFEST_NAME = "manifest.json"
UPLOADS_DIR = "uploads"
OVERRIDES_DIR = "overrides"
UPLOAD_ID = re.compile(r"^[0-9a-f]{32}$")
UPLOAD_KEY = re.compile(r"^upload:([0-9a-f]{32})$")
CATALOG_KEY = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
STORED_FILE = re.compile(r"^(\d{1,5})/\d{6,9}\.png$")
MAX_MANIFEST_BYTES = 256 * 1024**2
# Images that ingestion wrote are already within the upload pixel limit; this only bounds a tampered file.
STORED_MAX_PIXELS = 64 * 1024 * 1024


@dataclass(frozen=True)
class ManifestFile:
    """One stored image: its server-generated relative file name, label, split and original member name."""

    file: str
    label: int
    split: str
    source: str = ""


@dataclass
class Manifest:
    """What an upload folder holds. Class names and templates are data, editable by the owner."""

    id: str
    name: str
    owner: str
    classnames: list[str]
    templates: list[str]
    files: list[ManifestFile]
    report: dict = field(default_factory=dict)
    created_at: str = ""
    source_names: list[str] = field(default_factory=list)
    split: dict = field(default_factory=dict)
    bytes: int = 0
    updated_at: str | None = None
    schema: str = SCHEMA

    @property
    def key(self) -> str:
        return f"upload:{self.id}"

    def class_counts(self) -> list[dict]:
        """Per class: index, name, train/test/total counts (from the file list, so edits never drift)."""
        rows = [{"index": i, "name": n, "train": 0, "test": 0, "count": 0} for i, n in enumerate(self.classnames)]
        for f in self.files:
            rows[f.label][f.split] += 1
            rows[f.label]["count"] += 1
        return rows

    def split_counts(self) -> dict[str, int]:
        out = dict.fromkeys(SPLITS, 0)
        for f in self.files:
            out[f.split] += 1
        return out

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["files"] = [[f.file, f.label, f.split, f.source] for f in self.files]  # compact: one row per image
        d["class_counts"] = self.class_counts()
        return d

    @classmethod
    def from_dict(cls, d: Any) -> Manifest:
        """Parse and check a manifest dict (server-written, but checked: a damaged one fails loudly).

        Raises:
            ValueError: the dict is not a valid manifest; the message says what is wrong.
        """
        if not isinstance(d, dict):
            raise ValueError("not a JSON object")
        if d.get("schema") != SCHEMA:
            raise ValueError(f"schema is {d.get('schema')!r}, expected {SCHEMA!r}")
        if not isinstance(d.get("id"), str) or not UPLOAD_ID.match(d["id"]):
            raise ValueError("id is not 32 lowercase hex digits")
        problems = check_classnames(d.get("classnames")) + check_templates(d.get("templates"))
        if problems:
            raise ValueError("; ".join(problems[:3]))
        k = len(d["classnames"])
        files = []
        for row in d.get("files") or []:
            if not (isinstance(row, list) and len(row) == 4):
                raise ValueError(f"bad file row {row!r}")
            rel, label, split, source = row
            m = STORED_FILE.match(rel) if isinstance(rel, str) else None
            if m is None or not isinstance(label, int) or not 0 <= label < k or int(m.group(1)) != label:
                raise ValueError(f"bad file row {row!r}")
            if split not in SPLITS:
                raise ValueError(f"bad split in file row {row!r}")
            files.append(ManifestFile(rel, label, split, str(source)))
        return cls(
            id=d["id"], name=str(d.get("name") or ""), owner=str(d.get("owner") or ""),
            classnames=list(d["classnames"]), templates=list(d["templates"]), files=files,
            report=d.get("report") or {}, created_at=str(d.get("created_at") or ""),
            source_names=list(d.get("source_names") or []), split=d.get("split") or {},
            bytes=int(d.get("bytes") or 0), updated_at=d.get("updated_at"), schema=SCHEMA,
        )


def write_json_atomic(path: Path, obj: Any) -> None:
    """Compact UTF-8 JSON, written atomically (readers never see half a manifest)."""
    atomic_write_json(path, obj, ensure_ascii=False, separators=(",", ":"), indent=None)


def write_manifest(path: Path, manifest: Manifest) -> None:
    write_json_atomic(path, manifest.to_dict())


def read_manifest(path: Path) -> Manifest:
    """Read and check a manifest file.

    Raises:
        DatasetUnavailable: missing, too large or damaged (the message names the file).
    """
    try:
        if path.stat().st_size > MAX_MANIFEST_BYTES:
            raise DatasetUnavailable(f"{path} is larger than {MAX_MANIFEST_BYTES:,} bytes; it is not a manifest")
        with open(path, encoding="utf-8") as f:
            return Manifest.from_dict(json.load(f))
    except FileNotFoundError:
        raise DatasetUnavailable(f"no manifest at {path}") from None
    except (OSError, ValueError) as e:  # JSONDecodeError is a ValueError
        raise DatasetUnavailable(f"the manifest {path} is damaged ({e}); delete the dataset and upload it "
                                 "again") from None


# --- paths -------------------------------------------------------------------------------------------

def upload_id_of(key: str) -> str:
    """The id of an ``upload:<32 hex>`` key.

    Raises:
        SpecError: ``key`` is not of that form (checked before any path is built).
    """
    m = UPLOAD_KEY.match(key) if isinstance(key, str) else None
    if m is None:
        raise SpecError(f"dataset: {key!r} is not an uploaded-dataset key; expected 'upload:' and 32 hex digits")
    return m.group(1)


def upload_dir(root: Path, upload_id: str) -> Path:
    """``<root>/uploads/<id>``, after checking the id and that the resolved folder stays inside."""
    if not isinstance(upload_id, str) or not UPLOAD_ID.match(upload_id):
        raise SpecError(f"dataset: {upload_id!r} is not an upload id (32 hex digits)")
    base = (Path(root) / UPLOADS_DIR).resolve()
    folder = (base / upload_id).resolve()
    if folder.parent != base:  # a symlinked upload folder pointing elsewhere is not ours
        raise DatasetUnavailable(f"upload:{upload_id} does not resolve inside {base}")
    return folder


def load_upload_manifest(key: str, ctx: DataContext) -> tuple[Manifest, Path]:
    """The manifest and folder of ``upload:<id>``.

    Raises:
        SpecError: malformed key.  DatasetUnavailable: no such upload, or a damaged manifest.
    """
    folder = upload_dir(ctx.root, upload_id_of(key))
    path = folder / MANIFEST_NAME
    if not path.is_file():
        raise DatasetUnavailable(f"the uploaded dataset {key} is not in {folder.parent}; it may have been deleted, "
                                 "upload it again")
    manifest = read_manifest(path)
    if manifest.id != folder.name:
        raise DatasetUnavailable(f"the manifest in {folder} names another upload ({manifest.id}); upload it again")
    return manifest, folder


# --- the dataset an upload describes ------------------------------------------------------------------

class ManifestImageSet(ImageSet):
    """One split of an upload: decodes the stored PNGs on access."""

    def __init__(self, folder: Path, files: list[ManifestFile], classnames: list[str], key: str):
        self.folder, self.key = folder, key
        self.files = files
        self.classnames = tuple(classnames)
        self._labels = torch.tensor([f.label for f in files], dtype=torch.long)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        f = self.files[i]
        try:
            img = images.decode_image_file(self.folder / f.file, max_pixels=STORED_MAX_PIXELS, formats=("PNG",))
        except (OSError, ValueError) as e:
            raise DatasetUnavailable(f"image {f.file} of {self.key} is missing or damaged ({e}); upload the dataset "
                                     "again") from None
        return img, f.label

    def labels(self) -> torch.Tensor:
        return self._labels


def manifest_info(manifest: Manifest, folder: Path) -> DatasetInfo:
    """The catalog entry of an upload (class names and templates as edited by its owner)."""
    key = manifest.key

    def load(split: str, ctx: DataContext) -> ImageSet:
        return ManifestImageSet(folder, [f for f in manifest.files if f.split == split], manifest.classnames, key)

    counts = manifest.split_counts()
    return DatasetInfo(
        key=key,
        title=manifest.name or key,
        classnames=tuple(manifest.classnames),
        templates=tuple(manifest.templates),
        loader=load,
        source="upload",
        description=f"Uploaded dataset: {len(manifest.classnames)} classes, {len(manifest.files)} images "
                    f"({counts['train']} train / {counts['test']} test, seeded per-class split).",
        how_to_get="Upload a zip in the Datasets tab or with `ldifs dataset import FILE.zip`.",
        splits=counts,
        tags=("upload",),
    )


def load_manifest_dataset(key: str, ctx: DataContext) -> DatasetInfo:
    """The ``DatasetInfo`` of an ``upload:<32 hex>`` key (validated before any path is touched).

    Raises:
        SpecError: malformed key.  DatasetUnavailable: no such upload, or a damaged manifest.
    """
    manifest, folder = load_upload_manifest(key, ctx)
    return manifest_info(manifest, folder)


# --- overrides of catalog datasets --------------------------------------------------------------------

def overrides_path(root: Path, key: str) -> Path:
    """``<root>/overrides/<key>.json`` for a catalog key (keys are code-defined; checked anyway)."""
    if not isinstance(key, str) or not CATALOG_KEY.match(key) or key.startswith("."):
        raise SpecError(f"dataset: {key!r} is not a catalog dataset key")
    return Path(root) / OVERRIDES_DIR / f"{key}.json"


def read_overrides(root: Path, key: str, num_classes: int | None = None) -> dict:
    """The stored overrides of ``key`` (``{"classnames": [...], "templates": [...]}``, either optional).

    Raises:
        SpecError: the override file exists but is invalid (the message names the file and the problem).
    """
    path = overrides_path(root, key)
    if not path.is_file():
        return {}
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError) as e:
        raise SpecError(f"dataset override {path}: unreadable ({e}); fix or delete the file") from None
    if not isinstance(data, dict):
        raise SpecError(f"dataset override {path}: expected a JSON object; fix or delete the file")
    out: dict = {}
    problems: list[str] = []
    if data.get("classnames") is not None:
        problems += check_classnames(data["classnames"], num_classes)
    if data.get("templates") is not None:
        problems += check_templates(data["templates"])
    if problems:
        raise SpecError([f"dataset override {path}: {p}" for p in problems])
    if data.get("classnames") is not None:
        out["classnames"] = tuple(normalize_classname(n) for n in data["classnames"])
    if data.get("templates") is not None:
        out["templates"] = tuple(data["templates"])
    return out


def write_overrides(root: Path, key: str, *, classnames: list[str] | None = None,
                    templates: list[str] | None = None, num_classes: int | None = None) -> dict:
    """Validate and store overrides for a catalog dataset (``None`` keeps the stored value).

    Raises:
        SpecError: every problem, each naming the field.
    """
    current = read_overrides(root, key, num_classes)
    problems: list[str] = []
    if classnames is not None:
        problems += check_classnames(classnames, num_classes)
    if templates is not None:
        problems += check_templates(templates)
    if problems:
        raise SpecError(problems)
    data = {k: list(v) for k, v in current.items()}
    if classnames is not None:
        data["classnames"] = [normalize_classname(n) for n in classnames]
    if templates is not None:
        data["templates"] = [t.strip() for t in templates]
    path = overrides_path(root, key)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, {"key": key, **data})
    return data


def clear_overrides(root: Path, key: str) -> bool:
    """Delete the overrides of ``key``; True if there were any."""
    path = overrides_path(root, key)
    try:
        path.unlink()
        return True
    except FileNotFoundError:
        return False


def resolve_dataset(key: str, ctx: DataContext) -> DatasetInfo:
    """The dataset behind a key: an upload's manifest entry, or the catalog entry with its overrides.

    Raises:
        SpecError: unknown key, malformed upload key, or an invalid override file.
        DatasetUnavailable: the upload does not exist (any more) or its manifest is damaged.
    """
    if isinstance(key, str) and key.startswith("upload:"):
        return load_manifest_dataset(key, ctx)
    if key not in DATASETS:
        raise SpecError(f"dataset: unknown dataset {key!r}; choose one of: {', '.join(DATASETS.names())} or an "
                        "uploaded dataset")
    info = DATASETS.get(key)
    overrides = read_overrides(ctx.root, key, len(info.classnames))
    return dataclasses.replace(info, **overrides) if overrides else info
