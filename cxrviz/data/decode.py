"""Decode uploaded chest X-ray files (PNG/JPEG/other raster formats or DICOM)
into 2-D ``uint8`` grayscale arrays.

Every failure surfaces as :class:`ImageDecodeError` whose message is a single
readable line ``"<name>: <what is wrong>"`` so the UI can show it verbatim.

Design notes
------------
* The pixel count is checked from the header *before* any pixel decoding
  (Pillow ``im.size`` / DICOM ``Rows*Columns``) against :data:`MAX_PIXELS`.
* Pillow's global state is never modified (no ``LOAD_TRUNCATED_IMAGES``, no
  change of ``Image.MAX_IMAGE_PIXELS``): truncated files raise instead of
  decoding partially.
* Only a fixed allow-list of raster formats is opened with Pillow.  In
  particular EPS (which shells out to Ghostscript) and formats with weak
  signatures (TGA, ...) are not tried on untrusted uploads.
* ``draft_size`` enables libjpeg's DCT-domain downscaling (by 1/2, 1/4 or 1/8,
  never below ``draft_size``) and direct YCbCr->L decoding, which makes large
  camera/scanner JPEGs several times faster to decode.

It is one module (about 630 lines) because it is one concept, untrusted file
-> grayscale array: the Pillow and DICOM paths share the size check, the
error type and the one-line messages, and a hardening fix usually touches
both.
"""

from __future__ import annotations

import os
from io import BytesIO
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import CxrvizError, squash
from ..format import format_bytes

__all__ = [
    "ImageDecodeError",
    "decode_image",
    "resize_square",
    "is_dicom",
    "MAX_UPLOAD_BYTES",
    "MAX_PIXELS",
]

MAX_UPLOAD_BYTES = 50 * 1024 * 1024
MAX_PIXELS = 64_000_000

# Raster formats we are willing to hand to Pillow.
_PIL_FORMATS = (
    "PNG",
    "JPEG",
    "JPEG2000",
    "TIFF",
    "BMP",
    "GIF",
    "WEBP",
    "PPM",
    "AVIF",
    "QOI",
)


# signatures of formats in _PIL_FORMATS: an unidentifiable file starting with
# one of these is a damaged image rather than "not an image"
_KNOWN_MAGIC = (
    b"\x89PNG\r\n\x1a\n",
    b"\xff\xd8\xff",
    b"GIF87a",
    b"GIF89a",
    b"II*\x00",
    b"MM\x00*",
    b"\x00\x00\x00\x0cjP  ",
    b"\xff\x4f\xff\x51",
)


class ImageDecodeError(CxrvizError):
    """An uploaded file could not be turned into a grayscale image.

    ``str(err)`` is one line: ``"<name>: <what is wrong>"``.
    """


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------


def _exc_text(exc: BaseException) -> str:
    msg = squash(exc)
    return f"{type(exc).__name__}: {msg}" if msg else type(exc).__name__


def _fail(name: str, what: str) -> ImageDecodeError:
    return ImageDecodeError(squash(f"{name}: {what}"))




def _bomb(name: str, width: int, height: int) -> ImageDecodeError:
    return _fail(
        name,
        f"image too large ({width}x{height} = {width * height:,} pixels > "
        f"limit {MAX_PIXELS:,}); possible decompression bomb",
    )


def _to_uint8(arr: np.ndarray) -> np.ndarray:
    """Linearly map the finite min..max of ``arr`` onto 0..255 (uint8).

    A constant image maps to all zeros.
    """
    a = np.asarray(arr)
    if a.dtype == np.uint8:
        return np.ascontiguousarray(a)
    if a.dtype == np.bool_:
        return a.astype(np.uint8) * np.uint8(255)
    a = a.astype(np.float64 if a.dtype.itemsize > 4 else np.float32, copy=True)
    finite = np.isfinite(a)
    if not finite.all():
        if not finite.any():
            return np.zeros(a.shape, dtype=np.uint8)
        a[~finite] = a[finite].min()
    lo = float(a.min())
    hi = float(a.max())
    if not hi > lo:
        return np.zeros(a.shape, dtype=np.uint8)
    a -= lo
    a *= 255.0 / (hi - lo)
    np.rint(a, out=a)
    np.clip(a, 0, 255, out=a)
    return a.astype(np.uint8)


def _rgb_to_gray(rgb: np.ndarray) -> np.ndarray:
    """ITU-R 601-2 luma (same weights as Pillow's RGB->L), float output."""
    rgb = rgb.astype(np.float32, copy=False)
    return rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114


# --------------------------------------------------------------------------
# public API
# --------------------------------------------------------------------------


def is_dicom(data: bytes) -> bool:
    """True if ``data`` looks like DICOM.

    Either a Part-10 file (``b"DICM"`` at offset 128) or a bare dataset
    without preamble whose first element is a group 0002 or 0008 tag in
    little-endian explicit- or implicit-VR encoding.
    """
    try:
        head = bytes(memoryview(data)[:132])
    except TypeError:
        return False
    if len(head) >= 132 and head[128:132] == b"DICM":
        return True
    return _looks_like_bare_dicom(head)


_VRS = frozenset(
    b"AE AS AT CS DA DS DT FL FD IS LO LT OB OD OF OL OV OW PN SH SL SQ SS ST "
    b"SV TM UC UI UL UN UR US UT UV".split()
)


def _looks_like_bare_dicom(head: bytes) -> bool:
    if len(head) < 8:
        return False
    group = int.from_bytes(head[0:2], "little")
    elem = int.from_bytes(head[2:4], "little")
    if group not in (0x0002, 0x0008):
        return False
    if head[4:6] in _VRS:  # explicit VR little endian
        return True
    # implicit VR little endian: 4-byte length; a first element of group
    # 0008 is small (e.g. SpecificCharacterSet, ImageType, ...)
    length = int.from_bytes(head[4:8], "little")
    return group == 0x0008 and elem < 0x0100 and (length < 1024 or length == 0xFFFFFFFF)


def resize_square(img: np.ndarray, size: int) -> np.ndarray:
    """Resize a 2-D uint8 image to ``(size, size)`` (aspect ratio squashed).

    Uses Pillow's antialiased bilinear filter with ``reducing_gap`` (an
    integer box reduction first), which is fast and good quality for large
    downscales.
    """
    size = int(size)
    if size < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    a = np.asarray(img)
    if a.ndim != 2:
        raise ValueError(f"expected a 2-D grayscale array, got shape {a.shape}")
    if a.dtype != np.uint8:
        a = _to_uint8(a)
    if a.shape == (size, size):
        return a.copy()
    im = Image.fromarray(np.ascontiguousarray(a))
    out = im.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=2.0)
    return np.asarray(out, dtype=np.uint8).copy()


def decode_image(
    src: "str | os.PathLike | bytes",
    *,
    name: str | None = None,
    draft_size: int | None = None,
    max_bytes: int = MAX_UPLOAD_BYTES,
) -> np.ndarray:
    """Decode a PNG/JPEG/other Pillow image or DICOM into a 2-D uint8
    grayscale array (H, W).

    ``src`` is a path, raw bytes (``bytes``/``bytearray``/``memoryview``) or a
    binary file-like object (e.g. Streamlit's ``UploadedFile``).  ``name`` is
    used in error messages and defaults to the file name (or ``"upload"``).
    ``draft_size`` lets JPEGs decode at a reduced scale that is still at
    least ``draft_size`` pixels on both sides.

    Raises :class:`ImageDecodeError` (one-line message) on any failure.
    """
    if name is None:
        name = _default_name(src)
    name = squash(name) or "upload"
    try:
        data = _read_source(src, name, max_bytes)
        if is_dicom(data):
            return _decode_dicom(data, name)
        return _decode_pillow(data, name, draft_size)
    except ImageDecodeError:
        raise
    except Exception as exc:  # never let another exception type escape
        raise _fail(name, f"cannot decode image ({_exc_text(exc)})") from exc


# --------------------------------------------------------------------------
# input handling
# --------------------------------------------------------------------------


def _default_name(src: Any) -> str:
    if isinstance(src, (str, os.PathLike)):
        try:
            base = os.path.basename(os.fsdecode(src))
        except Exception:
            base = ""
        return base or "upload"
    n = getattr(src, "name", None)
    if isinstance(n, str) and n:
        return os.path.basename(n) or "upload"
    return "upload"


def _check_size(name: str, n: int, max_bytes: int) -> None:
    if n == 0:
        raise _fail(name, "empty file (0 bytes)")
    if max_bytes is not None and n > max_bytes:
        raise _fail(
            name,
            f"file too large ({format_bytes(n)} > limit {format_bytes(max_bytes)})",
        )


def _read_source(src: Any, name: str, max_bytes: int) -> bytes | memoryview:
    if isinstance(src, (bytes, bytearray, memoryview)):
        data = src if isinstance(src, bytes) else memoryview(src).cast("B").tobytes()
        _check_size(name, len(data), max_bytes)
        return data

    if isinstance(src, (str, os.PathLike)):
        try:
            st = os.stat(src)
        except OSError as exc:
            raise _fail(name, f"cannot read file ({_exc_text(exc)})") from exc
        if not os.path.isfile(src):
            raise _fail(name, "cannot read file (not a regular file)")
        _check_size(name, st.st_size, max_bytes)
        try:
            with open(src, "rb") as fh:
                data = fh.read(max_bytes + 1 if max_bytes is not None else -1)
        except OSError as exc:
            raise _fail(name, f"cannot read file ({_exc_text(exc)})") from exc
        _check_size(name, len(data), max_bytes)  # file may have changed
        return data

    if hasattr(src, "getvalue"):  # BytesIO / Streamlit UploadedFile
        size = getattr(src, "size", None)
        if isinstance(size, int):
            _check_size(name, size, max_bytes)
        data = src.getvalue()
        _check_size(name, len(data), max_bytes)
        return bytes(data)
    if hasattr(src, "read"):
        data = src.read(max_bytes + 1 if max_bytes is not None else -1)
        _check_size(name, len(data), max_bytes)
        return bytes(data)

    raise _fail(name, f"cannot read input of type {type(src).__name__}")


# --------------------------------------------------------------------------
# Pillow path
# --------------------------------------------------------------------------


def _decode_pillow(data: bytes, name: str, draft_size: int | None) -> np.ndarray:
    try:
        im = Image.open(BytesIO(data), formats=_PIL_FORMATS)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise _fail(name, f"image too large; possible decompression bomb ({squash(exc)})") from exc
    except UnidentifiedImageError as exc:
        if data.startswith(_KNOWN_MAGIC):
            raise _fail(name, "truncated or corrupt image: cannot read image header") from exc
        raise _fail(name, "not an image (unrecognised format)") from exc
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, KeyError) as exc:
        raise _fail(name, f"truncated or corrupt image: {_exc_text(exc)}") from exc

    with im:
        width, height = im.size
        if width <= 0 or height <= 0:
            raise _fail(name, f"invalid image size {width}x{height}")
        if width * height > MAX_PIXELS:
            raise _bomb(name, width, height)
        fmt = im.format or "image"

        # Animated / multi-page: Image.open positions on frame 0 already.
        if draft_size and draft_size > 0 and fmt in ("JPEG", "MPO"):
            try:
                im.draft("L", (int(draft_size), int(draft_size)))
            except Exception:
                pass  # draft is an optimisation only

        try:
            im.load()
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise _fail(name, f"image too large; possible decompression bomb ({squash(exc)})") from exc
        except MemoryError as exc:
            raise _fail(name, f"not enough memory to decode {width}x{height} {fmt}") from exc
        except Exception as exc:
            raise _fail(name, f"truncated or corrupt image: {_exc_text(exc)}") from exc

        if fmt == "PNG" and _png_end(data) < 0:  # Pillow accepts a PNG cut after its last pixel row
            raise _fail(name, "truncated or corrupt image: the PNG ends before its IEND chunk")

        im = _exif_transpose(im)
        try:
            return _pil_to_gray(im)
        except ImageDecodeError:
            raise
        except Exception as exc:
            raise _fail(
                name, f"cannot convert {fmt} image mode {im.mode} ({_exc_text(exc)})"
            ) from exc


def _png_end(data: bytes | memoryview) -> int:
    """Offset of the PNG's whole IEND chunk, type and CRC (-1: missing, i.e. the file was cut short)."""
    return (data if isinstance(data, bytes) else bytes(data)).rfind(b"IEND\xaeB`\x82")


def _exif_transpose(im: Image.Image) -> Image.Image:
    try:
        orientation = im.getexif().get(0x0112, 1)
    except Exception:
        return im  # unreadable EXIF: keep pixels as stored
    if orientation in (2, 3, 4, 5, 6, 7, 8):
        try:
            out = ImageOps.exif_transpose(im)
            if out is not None:
                return out
        except Exception:
            pass
    return im


def _composite_on_black(gray: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    out = gray.astype(np.float32) * (alpha.astype(np.float32) / 255.0)
    np.rint(out, out=out)
    return np.clip(out, 0, 255).astype(np.uint8)


def _pil_to_gray(im: Image.Image) -> np.ndarray:
    mode = im.mode

    if mode == "L":
        return np.array(im, dtype=np.uint8)
    if mode == "1":
        return np.array(im.convert("L"), dtype=np.uint8)
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F", "I;16S", "I;32", "I;32B"):
        try:
            arr = np.asarray(im)
        except Exception:
            arr = np.asarray(im.convert("I"))
        if arr.ndim != 2:
            arr = np.asarray(im.convert("I"))
        return _to_uint8(arr)

    if mode == "P" or mode == "PA":
        has_alpha = mode == "PA" or "transparency" in im.info
        im = im.convert("RGBA" if has_alpha else "RGB")
        mode = im.mode
    elif mode in ("La", "RGBa"):
        im = im.convert("LA" if mode == "La" else "RGBA")
        mode = im.mode

    if mode == "LA":
        arr = np.asarray(im)
        return _composite_on_black(arr[..., 0], arr[..., 1])
    if mode == "RGBA":
        gray = np.asarray(im.convert("RGB").convert("L"))
        alpha = np.asarray(im.getchannel("A"))
        if alpha.min() == 255:
            return np.array(gray, dtype=np.uint8)
        return _composite_on_black(gray, alpha)
    if mode == "RGB":
        return np.array(im.convert("L"), dtype=np.uint8)
    if mode == "CMYK":
        return np.array(im.convert("RGB").convert("L"), dtype=np.uint8)
    # YCbCr, LAB, HSV, RGBX, ...: go through RGB
    try:
        return np.array(im.convert("RGB").convert("L"), dtype=np.uint8)
    except Exception:
        return np.array(im.convert("L"), dtype=np.uint8)


# --------------------------------------------------------------------------
# DICOM path
# --------------------------------------------------------------------------

_PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")

# attributes needed by pydicom's modality / VOI LUT functions
_LUT_KEYWORDS = (
    "PhotometricInterpretation",
    "BitsStored",
    "BitsAllocated",
    "PixelRepresentation",
    "RescaleSlope",
    "RescaleIntercept",
    "RescaleType",
    "ModalityLUTSequence",
    "WindowCenter",
    "WindowWidth",
    "VOILUTFunction",
    "VOILUTSequence",
)


def _decode_dicom(data: bytes, name: str) -> np.ndarray:
    try:
        import pydicom
        from pydicom.dataset import Dataset
        from pydicom.errors import InvalidDicomError
        from pydicom.pixels import get_decoder, pixel_array
        from pydicom.uid import UID
    except Exception as exc:  # pragma: no cover - pydicom is a dependency
        raise _fail(name, f"DICOM support unavailable ({_exc_text(exc)})") from exc

    has_preamble = len(data) >= 132 and data[128:132] == b"DICM"
    try:
        ds = pydicom.dcmread(BytesIO(data), force=not has_preamble)
    except InvalidDicomError as exc:
        raise _fail(name, f"invalid DICOM file ({squash(exc)})") from exc
    except Exception as exc:
        raise _fail(name, f"truncated or corrupt DICOM file: {_exc_text(exc)}") from exc

    try:
        if not any(kw in ds for kw in _PIXEL_KEYWORDS):
            raise _fail(name, "DICOM has no pixel data")

        rows = int(ds.get("Rows") or 0)
        cols = int(ds.get("Columns") or 0)
        if rows <= 0 or cols <= 0:
            raise _fail(name, f"DICOM has invalid image size (Rows={rows}, Columns={cols})")
        if rows * cols > MAX_PIXELS:
            raise _bomb(name, cols, rows)
    except ImageDecodeError:
        raise
    except Exception as exc:
        raise _fail(name, f"corrupt DICOM header: {_exc_text(exc)}") from exc

    # Transfer syntax: from the file meta, else inferred from the encoding of
    # a bare (preamble-less) dataset.
    file_meta = getattr(ds, "file_meta", None)
    tsyntax = file_meta.get("TransferSyntaxUID") if file_meta is not None else None
    if tsyntax is None:
        tsyntax = _infer_tsyntax(ds)
        if tsyntax is None:
            raise _fail(name, "DICOM has no transfer syntax and it cannot be inferred")
        from pydicom.dataset import FileMetaDataset

        if file_meta is None:
            ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = tsyntax
    tsyntax = UID(str(tsyntax))

    if "PixelData" in ds:
        ts_label = tsyntax.name if tsyntax.name != str(tsyntax) else "unknown"
        try:
            decoder = get_decoder(tsyntax)
        except NotImplementedError:
            raise _fail(name, f"cannot decode DICOM transfer syntax {ts_label} ({tsyntax})") from None
        if not decoder.is_available:
            missing = "; ".join(decoder.missing_dependencies)
            hint = f"; install one of: {missing}" if missing else ""
            raise _fail(
                name, f"cannot decode DICOM transfer syntax {ts_label} ({tsyntax}){hint}"
            )

    try:
        arr = pixel_array(ds, index=0)
    except ImageDecodeError:
        raise
    except MemoryError as exc:
        raise _fail(name, f"not enough memory to decode {cols}x{rows} DICOM") from exc
    except Exception as exc:
        raise _fail(name, f"truncated or corrupt DICOM pixel data: {_exc_text(exc)}") from exc

    try:
        return _dicom_to_gray(arr, ds, Dataset)
    except ImageDecodeError:
        raise
    except Exception as exc:
        raise _fail(name, f"cannot convert DICOM pixels ({_exc_text(exc)})") from exc


def _infer_tsyntax(ds: Any) -> Any:
    from pydicom.uid import (
        ExplicitVRBigEndian,
        ExplicitVRLittleEndian,
        ImplicitVRLittleEndian,
    )

    try:
        implicit, little = ds.original_encoding
    except Exception:
        return None
    if implicit is None or little is None:
        return None
    if implicit:
        return ImplicitVRLittleEndian
    return ExplicitVRLittleEndian if little else ExplicitVRBigEndian


def _lut_dataset(ds: Any, Dataset: Any) -> Any:
    """Dataset holding the modality/VOI attributes for frame 0.

    Top-level attributes win; otherwise (enhanced multi-frame objects) they
    are taken from the shared or first per-frame functional group.
    """
    groups = []
    for seq_kw in ("PerFrameFunctionalGroupsSequence", "SharedFunctionalGroupsSequence"):
        seq = ds.get(seq_kw)
        if seq:
            groups.append(seq[0])
    if not groups:
        return ds
    out = Dataset()
    for kw in _LUT_KEYWORDS:
        if kw in ds:
            out[kw] = ds[kw]
    if getattr(ds, "file_meta", None) is not None:
        out.file_meta = ds.file_meta
    try:
        out.set_original_encoding(*ds.original_encoding)
    except Exception:
        pass
    for grp in groups:
        for sub_kw, kws in (
            ("PixelValueTransformationSequence", ("RescaleSlope", "RescaleIntercept")),
            ("FrameVOILUTSequence", ("WindowCenter", "WindowWidth", "VOILUTFunction")),
        ):
            sub = grp.get(sub_kw)
            if not sub:
                continue
            item = sub[0]
            if all(k not in out for k in kws[:2]) and all(k in item for k in kws[:2]):
                for k in kws:
                    if k in item:
                        out[k] = item[k]
    return out


def _dicom_to_gray(arr: np.ndarray, ds: Any, Dataset: Any) -> np.ndarray:
    from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi_lut

    pi = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper()
    arr = np.asarray(arr)

    if pi in ("MONOCHROME1", "MONOCHROME2") or (arr.ndim == 2 and pi not in ("PALETTE COLOR",)):
        if arr.ndim == 3:  # unexpected extra samples; keep the first
            arr = arr[..., 0]
        lut_ds = _lut_dataset(ds, Dataset)
        if "PixelData" in ds:  # float pixel data is already in real-world units
            try:
                arr = apply_modality_lut(arr, lut_ds)
            except Exception:
                pass  # broken modality LUT: continue with stored values
            if pi in ("MONOCHROME1", "MONOCHROME2"):
                try:
                    arr = apply_voi_lut(arr, lut_ds, index=0)
                except Exception:
                    pass  # broken window (e.g. width 0): fall back to min..max
        arr = np.asarray(arr, dtype=np.float64)
        if pi == "MONOCHROME1":
            finite = np.isfinite(arr)
            if finite.any():
                lo = arr[finite].min()
                hi = arr[finite].max()
                arr = (hi + lo) - arr
        return _to_uint8(arr)

    if pi == "PALETTE COLOR":
        arr = apply_color_lut(arr, ds)
        return _to_uint8(_rgb_to_gray(arr))

    # RGB / YBR_* (pydicom already converted YBR to RGB) and other colour data
    if arr.ndim == 3 and arr.shape[-1] >= 3:
        gray = _rgb_to_gray(arr[..., :3])
        if arr.dtype == np.uint8:
            return np.clip(np.rint(gray), 0, 255).astype(np.uint8)
        return _to_uint8(gray)
    if arr.ndim == 3:
        arr = arr[..., 0]
    return _to_uint8(arr)
