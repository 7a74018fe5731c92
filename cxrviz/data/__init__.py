"""Data: finding a dataset, decoding any image or DICOM, the decode-once cache, augmentation and the
built-in synthetic set."""
from .augment import AUGMENT_LEVELS, AugmentConfig, augment_batch
from .cache import ImageCache, default_cache
from .dataset import (DatasetError, DatasetSource, ImageSet, find_duplicates, image_size_stats, load_split,
                      open_dataset, synthetic_source)
from .decode import MAX_PIXELS, MAX_UPLOAD_BYTES, ImageDecodeError, decode_image, is_dicom, resize_square

__all__ = ["AUGMENT_LEVELS", "AugmentConfig", "augment_batch", "ImageCache", "default_cache", "DatasetError",
           "DatasetSource", "ImageSet", "find_duplicates", "image_size_stats", "load_split", "open_dataset", "synthetic_source",
           "MAX_PIXELS", "MAX_UPLOAD_BYTES", "ImageDecodeError", "decode_image", "is_dicom", "resize_square"]
