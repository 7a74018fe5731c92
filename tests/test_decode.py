"""Tests for cxrviz.data.decode (all inputs generated in tmp_path, plus a few
real dataset files when available)."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cxrviz.data import decode as decode_mod
from cxrviz.data.decode import (
    MAX_PIXELS,
    MAX_UPLOAD_BYTES,
    ImageDecodeError,
    decode_image,
    is_dicom,
    resize_square,
)

# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------


def _gradient(h: int = 48, w: int = 64) -> np.ndarray:
    """uint8 test image using the full 0..255 range, with structure."""
    y, x = np.mgrid[0:h, 0:w]
    img = ((x * 255) // (w - 1) + (y * 7) % 40).clip(0, 255).astype(np.uint8)
    img[0, 0] = 0
    img[-1, -1] = 255
    return img


def _save(tmp_path: Path, im: Image.Image, fname: str, **kw) -> Path:
    p = tmp_path / fname
    im.save(p, **kw)
    return p


def _png_chunk(ctype: bytes, payload: bytes) -> bytes:
    crc = zlib.crc32(ctype + payload) & 0xFFFFFFFF
    return struct.pack(">I", len(payload)) + ctype + payload + struct.pack(">I", crc)


def _forged_png(width: int, height: int) -> bytes:
    """A tiny PNG whose IHDR claims width x height (1-bit grayscale)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + _png_chunk(b"IEND", b"")
    )


def _assert_msg(exc: ImageDecodeError, name: str, *fragments: str) -> None:
    msg = str(exc)
    assert "\n" not in msg
    assert msg.startswith(f"{name}: "), msg
    for frag in fragments:
        assert frag.lower() in msg.lower(), msg


# DICOM helpers -------------------------------------------------------------

import pydicom  # noqa: E402  (in requirements.txt: a missing pydicom is a failure, not a skip)
from pydicom.dataset import Dataset, FileMetaDataset  # noqa: E402
from pydicom.encaps import encapsulate  # noqa: E402
from pydicom.uid import (  # noqa: E402
    MPEG2MPML,
    UID,
    ExplicitVRLittleEndian,
    JPEGBaseline8Bit,
    RLELossless,
    generate_uid,
)

_DX = "1.2.840.10008.5.1.4.1.1.1.1"  # Digital X-Ray Image Storage - For Presentation


def _base_ds(tsyntax=ExplicitVRLittleEndian) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = _DX
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = tsyntax
    ds.SOPClassUID = _DX
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.Modality = "DX"
    ds.PatientName = "Test^Phantom"
    return ds


def _dcm_bytes(ds: Dataset, *, preamble: bool = True) -> bytes:
    buf = io.BytesIO()
    # all transfer syntaxes used here are explicit VR little endian; saying so
    # also allows writing a made-up (private) transfer syntax UID
    ds.save_as(buf, enforce_file_format=preamble, implicit_vr=False, little_endian=True)
    return buf.getvalue()


def _mono_ds(stored: np.ndarray, pi: str, bits: int = 12, **attrs) -> Dataset:
    ds = _base_ds()
    ds.set_pixel_data(stored, pi, bits)
    for k, v in attrs.items():
        setattr(ds, k, v)
    return ds


# --------------------------------------------------------------------------
# Pillow formats and modes
# --------------------------------------------------------------------------


def test_grayscale_png_roundtrip_from_path(tmp_path):
    src = _gradient()
    p = _save(tmp_path, Image.fromarray(src), "gray.png")
    out = decode_image(p)
    assert out.dtype == np.uint8 and out.shape == src.shape
    np.testing.assert_array_equal(out, src)
    # str path and bytes give the same result
    np.testing.assert_array_equal(decode_image(str(p)), src)
    np.testing.assert_array_equal(decode_image(p.read_bytes()), src)


def test_rgb_png_matches_pillow_luma(tmp_path):
    rgb = np.stack([_gradient(), _gradient()[::-1], np.full((48, 64), 100, np.uint8)], -1)
    im = Image.fromarray(rgb)
    out = decode_image(_save(tmp_path, im, "rgb.png"))
    np.testing.assert_array_equal(out, np.asarray(im.convert("L")))


def test_rgba_png_opaque_and_composited_on_black(tmp_path):
    g = _gradient()
    rgba = np.stack([g, g, g, np.full_like(g, 255)], -1)
    out = decode_image(_save(tmp_path, Image.fromarray(rgba), "opaque.png"))
    np.testing.assert_array_equal(out, g)

    rgba[..., 3] = 0
    rgba[:, :32, 3] = 255
    out = decode_image(_save(tmp_path, Image.fromarray(rgba), "half.png"))
    np.testing.assert_array_equal(out[:, :32], g[:, :32])
    assert (out[:, 32:] == 0).all()


def test_la_png(tmp_path):
    g = _gradient()
    la = Image.fromarray(np.stack([g, np.full_like(g, 255)], -1), mode="LA")
    np.testing.assert_array_equal(decode_image(_save(tmp_path, la, "la.png")), g)


def test_palette_png(tmp_path):
    rgb = Image.fromarray(np.stack([_gradient()] * 3, -1))
    pal = rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
    out = decode_image(_save(tmp_path, pal, "pal.png"))
    assert out.shape == (48, 64)
    np.testing.assert_array_equal(out, np.asarray(pal.convert("L")))


def test_palette_with_transparency(tmp_path):
    pal = Image.new("P", (8, 4), 1)
    pal.putpalette([0, 0, 0, 200, 200, 200] + [0] * 762)
    pal.paste(0, (0, 0, 4, 4))
    p = _save(tmp_path, pal, "trans.png", transparency=1)  # index 1 transparent
    out = decode_image(p)
    assert (out == 0).all()


def test_cmyk_jpeg(tmp_path):
    g = _gradient()
    cmyk = Image.fromarray(np.stack([g, g, g], -1)).convert("CMYK")
    p = _save(tmp_path, cmyk, "cmyk.jpg", quality=95)
    assert Image.open(p).mode == "CMYK"
    out = decode_image(p, draft_size=16)  # draft must not break CMYK
    assert out.dtype == np.uint8 and out.ndim == 2
    out = decode_image(p)
    assert out.shape == g.shape
    assert np.abs(out.astype(int) - g).mean() < 6


@pytest.mark.parametrize("fmt", ["png", "tiff"])
def test_16bit_12bit_values_use_full_range(tmp_path, fmt):
    g = _gradient()
    stored = (g.astype(np.uint16) * 16 + 7)  # 12-bit data: 7 .. 4087
    im = Image.fromarray(stored)  # mode I;16
    p = _save(tmp_path, im, f"deep.{fmt}")
    assert Image.open(p).mode.startswith("I")
    out = decode_image(p)
    assert out.min() == 0 and out.max() == 255
    np.testing.assert_array_equal(out, g)  # linear min..max scaling is exact here


def test_32bit_int_and_float_images(tmp_path):
    g = _gradient()
    i32 = Image.fromarray(g.astype(np.int32) * 1000 - 50_000)  # mode I
    np.testing.assert_array_equal(decode_image(_save(tmp_path, i32, "i32.tiff")), g)
    f = Image.fromarray(g.astype(np.float32) / 255.0)  # mode F
    out = decode_image(_save(tmp_path, f, "f.tiff"))
    assert np.abs(out.astype(int) - g).max() <= 1


def test_bilevel_image(tmp_path):
    b = np.zeros((10, 12), bool)
    b[:, 6:] = True
    out = decode_image(_save(tmp_path, Image.fromarray(b), "bw.png"))
    assert out.dtype == np.uint8
    assert (out[:, :6] == 0).all() and (out[:, 6:] == 255).all()


def test_one_by_one(tmp_path):
    p = _save(tmp_path, Image.new("L", (1, 1), 77), "dot.png")
    out = decode_image(p)
    assert out.shape == (1, 1) and out[0, 0] == 77


def test_exif_orientation_applied(tmp_path):
    g = _gradient(20, 40)
    im = Image.fromarray(g)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW for display
    p = _save(tmp_path, im, "rot.jpg", exif=exif, quality=95)
    out = decode_image(p)
    assert out.shape == (40, 20)
    expected = np.rot90(g, k=-1)
    assert np.abs(out.astype(int) - expected).mean() < 3


def test_animated_gif_first_frame(tmp_path):
    frames = [Image.new("L", (6, 5), v) for v in (10, 200, 90)]
    p = tmp_path / "anim.gif"
    frames[0].save(p, save_all=True, append_images=frames[1:], duration=50)
    out = decode_image(p)
    assert out.shape == (5, 6) and (out == 10).all()


# --------------------------------------------------------------------------
# errors
# --------------------------------------------------------------------------


def test_non_image_with_png_extension(tmp_path):
    p = tmp_path / "scan.png"
    p.write_text("this is definitely not a picture\n" * 20)
    with pytest.raises(ImageDecodeError) as ei:
        decode_image(p)
    _assert_msg(ei.value, "scan.png", "not an image")


def test_zero_byte_file_and_bytes(tmp_path):
    p = tmp_path / "empty.jpg"
    p.write_bytes(b"")
    with pytest.raises(ImageDecodeError) as ei:
        decode_image(p)
    _assert_msg(ei.value, "empty.jpg", "empty file (0 bytes)")
    with pytest.raises(ImageDecodeError) as ei:
        decode_image(b"")
    _assert_msg(ei.value, "upload", "empty file (0 bytes)")


def test_missing_file(tmp_path):
    with pytest.raises(ImageDecodeError) as ei:
        decode_image(tmp_path / "nope.png")
    _assert_msg(ei.value, "nope.png", "cannot read file")


@pytest.mark.parametrize("keep", [0.1, 0.5, 0.97])
def test_truncated_jpeg(tmp_path, keep):
    rng = np.random.default_rng(1)
    im = Image.fromarray(rng.integers(0, 256, (120, 160), dtype=np.uint8))
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=90)
    data = buf.getvalue()
    p = tmp_path / "cut.jpg"
    p.write_bytes(data[: int(len(data) * keep)])
    for draft in (None, 32):
        with pytest.raises(ImageDecodeError) as ei:
            decode_image(p, draft_size=draft)
        _assert_msg(ei.value, "cut.jpg", "truncated or corrupt image")


def test_truncated_png(tmp_path):
    rng = np.random.default_rng(2)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (64, 64), dtype=np.uint8)).save(buf, "PNG")
    data = buf.getvalue()
    for cut in (20, len(data) // 2):
        with pytest.raises(ImageDecodeError) as ei:
            decode_image(data[:cut], name="cut.png")
        _assert_msg(ei.value, "cut.png", "truncated or corrupt image")


@pytest.mark.parametrize("size", [(20000, 20000), (9000, 9000)])
def test_decompression_bomb_rejected_before_decoding(size, monkeypatch):
    # 20000^2 exceeds Pillow's own hard limit; 9000^2 only ours (64M). Rejected from the header: Pillow never
    # starts decoding pixels (counted, not timed)
    data = _forged_png(*size)
    assert len(data) < 200
    loads = []
    real_load = Image.Image.load
    monkeypatch.setattr(Image.Image, "load", lambda self: (loads.append(self.size), real_load(self))[1])
    with pytest.raises(ImageDecodeError) as ei:
        decode_image(data, name="bomb.png")
    _assert_msg(ei.value, "bomb.png", "bomb")
    assert loads == []


def test_over_max_bytes(tmp_path):
    p = _save(tmp_path, Image.fromarray(_gradient()), "big.png")
    n = p.stat().st_size
    with pytest.raises(ImageDecodeError) as ei:
        decode_image(p, max_bytes=n - 1)
    _assert_msg(ei.value, "big.png", "too large")
    with pytest.raises(ImageDecodeError) as ei:
        decode_image(p.read_bytes(), max_bytes=n - 1, name="up.png")
    _assert_msg(ei.value, "up.png", "too large")
    assert decode_image(p, max_bytes=n).shape == (48, 64)
    assert MAX_UPLOAD_BYTES == 50 * 1024 * 1024


def test_unexpected_exceptions_are_wrapped(monkeypatch):
    def boom(*a, **k):
        raise RuntimeError("kaboom\nsecond line")

    monkeypatch.setattr(decode_mod, "_decode_pillow", boom)
    with pytest.raises(ImageDecodeError) as ei:
        decode_image(b"xyz", name="x.png")
    _assert_msg(ei.value, "x.png", "cannot decode image (RuntimeError: kaboom second line)")


def test_garbage_and_random_truncations_only_raise_decode_error():
    rng = np.random.default_rng(3)
    buf = io.BytesIO()
    Image.fromarray(_gradient()).save(buf, "PNG")
    png = buf.getvalue()
    ds = _mono_ds(_gradient().astype(np.uint16), "MONOCHROME2", 8)
    dcm = _dcm_bytes(ds)
    # a PNG or DICOM cut short anywhere is an error (README: "truncated ... one line"), never a picture
    for whole, name in ((png, "cut.png"), (dcm, "cut.dcm")):
        cuts = {*range(1, 40), *rng.integers(1, len(whole), 30).tolist(), *range(len(whole) - 40, len(whole))}
        for c in sorted(cuts):
            with pytest.raises(ImageDecodeError) as ei:
                decode_image(whole[:c], name=name)
            assert str(ei.value).startswith(f"{name}: ") and "\n" not in str(ei.value), c
    samples = [rng.integers(0, 256, int(n), dtype=np.uint8).tobytes() for n in (1, 7, 131, 500)]
    mutated = bytearray(png)
    mutated[40:60] = b"\xff" * 20
    samples.append(bytes(mutated))
    for s in samples:
        try:
            out = decode_image(s, name="g")
        except ImageDecodeError as exc:
            assert str(exc).startswith("g: ") and "\n" not in str(exc)
        else:
            assert out.dtype == np.uint8 and out.ndim == 2


# --------------------------------------------------------------------------
# draft mode, real files, resize
# --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def big_jpeg(tmp_path_factory) -> Path:
    side = 8000  # 64,000,000 pixels == MAX_PIXELS: allowed
    row = np.linspace(0, 255, side, dtype=np.float32)
    arr = ((row[None, :] + row[::-1, None]) / 2).astype(np.uint8)
    p = tmp_path_factory.mktemp("big") / "big.jpg"
    Image.fromarray(arr).save(p, quality=70)
    return p


def test_large_jpeg_decodes_fast_with_draft(big_jpeg):
    with Image.open(big_jpeg) as im:
        assert im.size[0] * im.size[1] == MAX_PIXELS
    out = decode_image(big_jpeg, draft_size=256)
    assert out.shape == (1000, 1000)  # decoded at 1/8 scale by JPEG draft mode (8000 / 8, still >= 256)
    small = resize_square(out, 256)
    assert small.shape == (256, 256) and small.dtype == np.uint8


def test_draft_never_goes_below_requested(tmp_path):
    im = Image.fromarray(np.kron(_gradient(), np.ones((10, 10), np.uint8)))  # 480x640
    p = _save(tmp_path, im.convert("RGB"), "mid.jpg", quality=90)
    out = decode_image(p, draft_size=200)
    assert out.shape == (240, 320)
    assert min(decode_image(p, draft_size=300).shape) >= 300
    assert decode_image(p).shape == (480, 640)


def test_resize_square():
    img = _gradient(30, 90)
    out = resize_square(img, 64)
    assert out.shape == (64, 64) and out.dtype == np.uint8
    const = np.full((300, 500), 123, np.uint8)
    assert (resize_square(const, 17) == 123).all()
    np.testing.assert_array_equal(resize_square(img[:30, :30], 30), img[:30, :30])
    assert resize_square(np.zeros((1, 1), np.uint8), 8).shape == (8, 8)
    with pytest.raises(ValueError):
        resize_square(img, 0)


# --------------------------------------------------------------------------
# DICOM
# --------------------------------------------------------------------------

# source image for DICOM tests and its 12-bit stored version
_SRC = _gradient(40, 56)
_STORED2 = _SRC.astype(np.uint16) * 16  # 0..4080, MONOCHROME2
_STORED1 = (4095 - _STORED2).astype(np.uint16)  # same image, MONOCHROME1


def test_is_dicom():
    dcm = _dcm_bytes(_mono_ds(_STORED2, "MONOCHROME2"))
    assert is_dicom(dcm)
    assert is_dicom(_dcm_bytes(_mono_ds(_STORED2, "MONOCHROME2"), preamble=False))
    buf = io.BytesIO()
    Image.fromarray(_SRC).save(buf, "PNG")
    assert not is_dicom(buf.getvalue())
    assert not is_dicom(b"")
    assert not is_dicom(b"DICM")


def test_dicom_mono2_plain_exact(tmp_path):
    ds = _mono_ds(_STORED2, "MONOCHROME2", RescaleSlope=1, RescaleIntercept=-1024)
    p = tmp_path / "image.png"  # wrong extension on purpose: detected by content
    p.write_bytes(_dcm_bytes(ds))
    np.testing.assert_array_equal(decode_image(p), _SRC)


def test_dicom_without_preamble():
    data = _dcm_bytes(_mono_ds(_STORED2, "MONOCHROME2"), preamble=False)
    assert data[128:132] != b"DICM"
    np.testing.assert_array_equal(decode_image(data, name="bare.dcm"), _SRC)


def test_dicom_mono1_is_inverted_to_match_mono2():
    d2 = decode_image(_dcm_bytes(_mono_ds(_STORED2, "MONOCHROME2")))
    d1 = decode_image(_dcm_bytes(_mono_ds(_STORED1, "MONOCHROME1")))
    np.testing.assert_array_equal(d1, d2)
    np.testing.assert_array_equal(d1, _SRC)


def test_dicom_rescale_and_window_applied():
    # modality values = stored * 2 - 1000; window covers the middle of the
    # range so the ends must be clipped
    slope, intercept = 2, -1000
    m = _STORED2.astype(float) * slope + intercept
    lo, hi = m.min() + 0.25 * np.ptp(m), m.min() + 0.75 * np.ptp(m)
    center, width = (lo + hi) / 2, hi - lo
    ds2 = _mono_ds(_STORED2, "MONOCHROME2", RescaleSlope=slope, RescaleIntercept=intercept,
                   WindowCenter=f"{center:.1f}", WindowWidth=f"{width:.1f}")
    out2 = decode_image(_dcm_bytes(ds2))
    expected = np.clip((m - lo) / (hi - lo), 0, 1) * 255
    assert np.abs(out2.astype(float) - expected).max() <= 1.5
    assert (out2[m <= lo] == 0).all() and (out2[m >= hi] == 255).all()

    # MONOCHROME1 version with the mirrored window gives the same picture
    m1 = _STORED1.astype(float) * slope + intercept
    mirror = m1.max() + m1.min()
    ds1 = _mono_ds(_STORED1, "MONOCHROME1", RescaleSlope=slope, RescaleIntercept=intercept,
                   WindowCenter=f"{mirror - center:.1f}", WindowWidth=f"{width:.1f}")
    out1 = decode_image(_dcm_bytes(ds1))
    assert np.abs(out1.astype(int) - out2.astype(int)).max() <= 2


def test_dicom_rle_lossless_exact():
    ds = _mono_ds(_STORED2, "MONOCHROME2", RescaleSlope=1, RescaleIntercept=0)
    ds.compress(RLELossless)
    data = _dcm_bytes(ds)
    assert pydicom.dcmread(io.BytesIO(data)).file_meta.TransferSyntaxUID == RLELossless
    np.testing.assert_array_equal(decode_image(data, name="rle.dcm"), _SRC)


def test_dicom_jpeg_baseline():
    buf = io.BytesIO()
    Image.fromarray(_SRC).save(buf, "JPEG", quality=95)
    ds = _base_ds(JPEGBaseline8Bit)
    ds.Rows, ds.Columns = _SRC.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = encapsulate([buf.getvalue()])
    ds["PixelData"].VR = "OB"
    out = decode_image(_dcm_bytes(ds), name="jpeg.dcm")
    assert out.shape == _SRC.shape
    assert np.abs(out.astype(int) - _SRC).mean() < 2.0


def test_dicom_multiframe_first_frame():
    frames = np.stack([_SRC, 255 - _SRC, _SRC // 2]).astype(np.uint8)
    ds = _base_ds()
    ds.set_pixel_data(frames, "MONOCHROME2", 8)
    assert int(ds.NumberOfFrames) == 3
    np.testing.assert_array_equal(decode_image(_dcm_bytes(ds)), _SRC)


def test_dicom_rgb_to_gray():
    rgb = np.stack([_SRC, _SRC, _SRC], -1)
    ds = _base_ds()
    ds.set_pixel_data(rgb, "RGB", 8)
    out = decode_image(_dcm_bytes(ds))
    assert np.abs(out.astype(int) - _SRC).max() <= 1


def test_dicom_without_pixel_data():
    with pytest.raises(ImageDecodeError) as ei:
        decode_image(_dcm_bytes(_base_ds()), name="report.dcm")
    _assert_msg(ei.value, "report.dcm", "DICOM has no pixel data")


@pytest.mark.parametrize("uid", ["1.2.3.4.5.6.7", str(MPEG2MPML)])
def test_dicom_undecodable_transfer_syntax(uid):
    ds = _base_ds(UID(uid))
    ds.Rows, ds.Columns = 16, 16
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = encapsulate([b"\x00garbage\xff" * 10])
    ds["PixelData"].VR = "OB"
    with pytest.raises(ImageDecodeError) as ei:
        decode_image(_dcm_bytes(ds), name="odd.dcm")
    _assert_msg(ei.value, "odd.dcm", "cannot decode DICOM transfer syntax", f"({uid})")
    if uid == str(MPEG2MPML):
        assert "MPEG2" in str(ei.value)


def test_dicom_header_bomb_rejected_before_decoding():
    ds = _mono_ds(np.zeros((4, 4), np.uint16), "MONOCHROME2")
    ds.Rows, ds.Columns = 10000, 10000
    with pytest.raises(ImageDecodeError) as ei:
        decode_image(_dcm_bytes(ds), name="huge.dcm")
    # from the header alone: decoding the 4x4 pixel data would have failed as truncated, not as a bomb
    _assert_msg(ei.value, "huge.dcm", "bomb")


def test_dicom_truncated_pixel_data():
    data = _dcm_bytes(_mono_ds(_STORED2, "MONOCHROME2"))
    with pytest.raises(ImageDecodeError) as ei:
        decode_image(data[:-500], name="cut.dcm")
    _assert_msg(ei.value, "cut.dcm")
