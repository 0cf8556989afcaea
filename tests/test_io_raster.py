"""PNG/JPEG radiographs and masks."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image as PILImage

from napari_cxseg import io
from napari_cxseg.geometry import Geometry
from napari_cxseg.images import CxsegError, Image, LabelClass, LabelMap
from napari_cxseg.io.raster import read_raster, write_png_labels
from napari_cxseg.io.sidecar import read_sidecar, sidecar_path


def _gradient(shape=(40, 50), hi=255):
    r, c = np.mgrid[: shape[0], : shape[1]]
    return (r * shape[1] + c) * hi // (shape[0] * shape[1] - 1)


def _disc(shape=(64, 64), r=20):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return ((yy - shape[0] / 2) ** 2 + (xx - shape[1] / 2) ** 2) < r**2


def test_8bit_grey_png_kept_as_float32(tmp_path):
    data = _gradient().astype(np.uint8)
    PILImage.fromarray(data).save(tmp_path / "cxr.png")
    (img,) = io.read(tmp_path / "cxr.png")
    assert isinstance(img, Image)
    assert img.array.dtype == np.float32
    np.testing.assert_array_equal(img.array, data)
    assert img.geometry.frame == "image" and img.geometry.ndim == 2
    np.testing.assert_array_equal(img.geometry.spacing, [1.0, 1.0])
    assert img.modality == "XR"
    src = dict(img.geometry.source)
    assert src.pop("orientation") == img.meta["orientation"]
    assert src == {"path": str(tmp_path / "cxr.png"), "format": "png", "role": "image"}
    assert img.meta["window"] == (0.0, 255.0)
    # a plain PNG says nothing about its orientation: shown as stored, and the layer says so
    assert img.meta["orientation"]["known"] is False
    assert img.meta["orientation"]["source"] == "none"
    assert img.meta["orientation"]["applied"] == "none"
    assert "assumed to be shown as acquired" in img.meta["orientation"]["note"]
    assert img.geometry.disk_ornt is None


def test_16bit_grey_png_kept_as_uint16(tmp_path):
    data = _gradient(hi=60000).astype(np.uint16)
    PILImage.fromarray(data).save(tmp_path / "cxr16.png")
    img = read_raster(tmp_path / "cxr16.png")
    assert img.array.dtype == np.uint16
    np.testing.assert_array_equal(img.array, data)


@pytest.mark.parametrize("mode", ["RGB", "RGBA"])
def test_colour_png_becomes_luminance(tmp_path, mode):
    rgb = np.zeros((10, 12, 3), np.uint8)
    rgb[..., 0] = 200
    rgb[..., 1] = np.arange(12, dtype=np.uint8)[None, :] * 10
    rgb[..., 2] = 50
    pil = PILImage.fromarray(rgb).convert(mode)
    pil.save(tmp_path / "photo.png")
    img = read_raster(tmp_path / "photo.png")
    assert isinstance(img, Image) and img.array.shape == (10, 12)
    expected = 0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]
    np.testing.assert_allclose(img.array, expected, atol=1e-3)


def test_grey_stored_as_rgb_keeps_values(tmp_path):
    data = _gradient().astype(np.uint8)
    PILImage.fromarray(np.stack([data] * 3, -1)).save(tmp_path / "seg_image.jpg", quality=100)
    # "seg_image" hints at labels, but the caller says it is an image
    img = read_raster(tmp_path / "seg_image.jpg", as_labels=False)
    assert isinstance(img, Image)
    assert np.abs(img.array - data).max() <= 3  # JPEG q100 round-off only


def test_jpeg_radiograph_is_an_image(tmp_path):
    PILImage.fromarray(_gradient().astype(np.uint8)).save(tmp_path / "abc-original.jpg")
    (img,) = io.read(tmp_path / "abc-original.jpg")
    assert isinstance(img, Image)
    assert img.geometry.source["format"] == "jpeg"


def test_cxlseg_lossy_jpeg_mask_thresholded_at_half_max(tmp_path):
    disc = _disc()
    PILImage.fromarray((disc * 255).astype(np.uint8)).save(tmp_path / "abc-mask.jpg", quality=75)
    raw = np.asarray(PILImage.open(tmp_path / "abc-mask.jpg"))
    assert np.unique(raw).size > 2  # lossy: the file really holds more than two values
    (lm,) = io.read(tmp_path / "abc-mask.jpg")
    assert isinstance(lm, LabelMap)
    assert set(np.unique(lm.array)) == {0, 1}
    np.testing.assert_array_equal(lm.array, raw > raw.max() / 2)
    assert (lm.array == disc).mean() > 0.99
    assert lm.classes[1].name == "foreground"
    assert lm.geometry.frame == "image"


def test_binary_png_mask_becomes_one_class(tmp_path):
    PILImage.fromarray((_disc() * 255).astype(np.uint8)).save(tmp_path / "plain.png")
    lm = read_raster(tmp_path / "plain.png")
    assert isinstance(lm, LabelMap)
    np.testing.assert_array_equal(lm.array, _disc().astype(np.uint8))


def test_palette_png_keeps_indices(tmp_path):
    ids = np.zeros((20, 20), np.uint8)
    ids[2:5, 2:5] = 1
    ids[10:, 10:] = 7
    pil = PILImage.frombytes("P", (20, 20), ids.tobytes())
    pil.putpalette([0, 0, 0, 255, 0, 0] + [0, 255, 0] * 254)
    pil.save(tmp_path / "voc.png")
    lm = read_raster(tmp_path / "voc.png")
    assert isinstance(lm, LabelMap)
    np.testing.assert_array_equal(lm.array, ids)


def test_colour_mask_with_hint_one_class_per_colour(tmp_path):
    rgb = np.zeros((16, 16, 3), np.uint8)
    rgb[:8, :8] = (255, 0, 0)
    rgb[8:, 8:] = (0, 0, 255)
    PILImage.fromarray(rgb).save(tmp_path / "lungs_label.png")
    lm = read_raster(tmp_path / "lungs_label.png")
    assert isinstance(lm, LabelMap)
    assert {c.colour for c in lm.classes.values()} == {"#ff0000", "#0000ff"}
    red = next(k for k, c in lm.classes.items() if c.colour == "#ff0000")
    assert (lm.array[:8, :8] == red).all() and (lm.array[:8, 8:] == 0).all()


def test_png_label_round_trip_with_names_and_spacing(tmp_path):
    ids = np.zeros((30, 40), np.uint8)
    ids[5:25, 3:15] = 1
    ids[5:25, 25:37] = 2
    geom = Geometry(affine=np.diag([0.143, 0.139, 1.0]), frame="image")
    classes = {1: LabelClass("right lung", "#1f77b4"), 2: LabelClass("left lung", "#ff7f0e")}
    lm = LabelMap(ids, geom, classes, meta={"reference_image_path": "/data/cxr.dcm"})
    files = io.write_labels(lm, tmp_path / "lungs.png")
    assert files == [str(tmp_path / "lungs.png"), str(tmp_path / "lungs.png.labels.json")]
    side = read_sidecar(tmp_path / "lungs.png")
    assert side["classes"]["2"] == {"name": "left lung", "colour": "#ff7f0e"}
    assert side["geometry"]["spacing"] == pytest.approx([0.143, 0.139])
    assert side["reference_image"] == "/data/cxr.dcm"
    raw = np.asarray(PILImage.open(tmp_path / "lungs.png"))
    assert raw.dtype == np.uint8
    np.testing.assert_array_equal(raw, ids)
    (back,) = io.read(tmp_path / "lungs.png")
    assert isinstance(back, LabelMap)
    np.testing.assert_array_equal(back.array, ids)
    assert back.classes == classes
    np.testing.assert_allclose(back.geometry.spacing, [0.143, 0.139])
    assert back.meta["reference_image_path"] == "/data/cxr.dcm"


def test_png_labels_above_255_are_16bit(tmp_path):
    ids = np.zeros((8, 8), np.int32)
    ids[0, 0] = 1000
    write_png_labels(LabelMap(ids, Geometry(np.eye(3), frame="image"), {1000: LabelClass("x")}), tmp_path / "many.png")
    raw = np.asarray(PILImage.open(tmp_path / "many.png"))
    assert raw.dtype == np.uint16 and raw[0, 0] == 1000
    back = read_raster(tmp_path / "many.png")
    assert back.array[0, 0] == 1000 and back.classes[1000].name == "x"


def test_png_writer_rejects_3d_and_huge_ids(tmp_path):
    geom3 = Geometry(np.eye(4))
    with pytest.raises(CxsegError, match=r"vol\.png.*2D"):
        write_png_labels(LabelMap(np.zeros((3, 4, 4), np.uint8), geom3), tmp_path / "vol.png")
    squeezed = write_png_labels(LabelMap(np.ones((1, 4, 4), np.uint8), geom3), tmp_path / "one.png")
    assert np.asarray(PILImage.open(squeezed[0])).shape == (4, 4)
    big = np.full((4, 4), 70000, np.int32)
    with pytest.raises(CxsegError, match=r"big\.png"):
        write_png_labels(LabelMap(big, Geometry(np.eye(3), frame="image")), tmp_path / "big.png")
    assert not (tmp_path / "vol.png").exists() and not (tmp_path / "big.png").exists()


def test_sidecar_spacing_applies_to_radiograph(tmp_path):
    PILImage.fromarray(_gradient().astype(np.uint8)).save(tmp_path / "cxr.png")
    sidecar_path(tmp_path / "cxr.png").write_text(json.dumps({"geometry": {"spacing": [0.2, 0.3]}}))
    img = read_raster(tmp_path / "cxr.png")
    assert isinstance(img, Image)  # a sidecar without classes does not make it labels
    np.testing.assert_allclose(img.geometry.spacing, [0.2, 0.3])


def test_png_writer_refuses_photo(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 255, (16, 16, 3), dtype=np.uint8)
    PILImage.fromarray(rgb).save(tmp_path / "photo.png")
    before = (tmp_path / "photo.png").read_bytes()
    lm = LabelMap(np.ones((16, 16), np.uint8), Geometry(np.eye(3), frame="image"))
    with pytest.raises(CxsegError, match=r"photo\.png.*not a label map"):
        io.write_labels(lm, tmp_path / "photo.png", overwrite=True)
    assert (tmp_path / "photo.png").read_bytes() == before


def test_png_labels_are_writable_for_painting(tmp_path):
    """A label map read from PNG must be paintable (PIL hands out read-only arrays)."""
    from napari_cxseg.layers import labels_layer_data

    arr = np.zeros((8, 8), np.uint8)
    arr[2:5, 2:5] = 1
    PILImage.fromarray(arr).save(tmp_path / "lungs_mask.png")
    [lm] = io.read(tmp_path / "lungs_mask.png", as_labels=True)
    assert lm.array.flags.writeable
    data, _, _ = labels_layer_data(lm)
    data[0, 0] = 1
