"""Data: finding a dataset (one folder or several sources), decoding any image or DICOM, the decode-once
cache (parallel, memory-mapped when large), duplicates, augmentation and the built-in synthetic set.

Names are imported lazily, so a decode worker process (``cxrviz.data.cache``) starts without importing torch."""
from importlib import import_module

_EXPORTS = {
    "AUGMENT_LEVELS": "augment", "AugmentConfig": "augment", "augment_batch": "augment",
    "ImageCache": "cache", "default_cache": "cache", "ram_budget": "cache",
    "DatasetError": "dataset", "DatasetSource": "dataset", "ImageSet": "dataset", "image_size_stats": "dataset",
    "load_split": "dataset", "open_dataset": "dataset", "synthetic_source": "dataset",
    "find_duplicates": "duplicates", "near_duplicates": "duplicates",
    "dataset_spec": "sources", "parse_add": "sources",
    "MAX_PIXELS": "decode", "MAX_UPLOAD_BYTES": "decode", "ImageDecodeError": "decode", "decode_image": "decode",
    "is_dicom": "decode", "resize_square": "decode",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
