"""Datasets: the catalog, the concept world, torchvision/local sets and user uploads."""
from __future__ import annotations

import importlib

from .catalog import DATASETS, DataContext, DatasetInfo, ImageSet, TensorImageSet, register_dataset

# Each module registers its entries at import; a module still missing must not break the others.
for _mod in ("concepts", "torchvision_sets", "local_sets"):
    try:
        importlib.import_module(f".{_mod}", __name__)
    except ModuleNotFoundError as _e:
        if _e.name != f"{__name__}.{_mod}":
            raise


def resolve_dataset(key: str, ctx: DataContext) -> DatasetInfo:
    """The catalog entry of ``key``, or the manifest-backed entry of an ``upload:<id>`` key."""
    try:
        from .manifest import resolve_dataset as _resolve
    except ModuleNotFoundError:
        return DATASETS.get(key)
    return _resolve(key, ctx)


__all__ = ["DATASETS", "DataContext", "DatasetInfo", "ImageSet", "TensorImageSet", "register_dataset", "resolve_dataset"]
