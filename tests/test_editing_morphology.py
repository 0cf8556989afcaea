"""Known-answer tests for interpolation, islands, smoothing and margins."""

from __future__ import annotations

import numpy as np
import pytest

from napari_cxseg.editing.interpolate import interpolate_slices
from napari_cxseg.editing.islands import component_sizes, keep_largest, remove_small, split_islands
from napari_cxseg.editing.margin import hollow, margin
from napari_cxseg.editing.smoothing import smooth

SPACING = (2.5, 0.7, 0.7)  # (z, y, x) mm: a typical thick-slice CT grid


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * np.logical_and(a, b).sum() / (a.sum() + b.sum())


def extent_mm(mask: np.ndarray, spacing) -> np.ndarray:
    """Extent of the True voxels along each axis, in mm (voxel count x spacing)."""
    out = []
    for ax in range(mask.ndim):
        hit = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != ax)))
        out.append((hit[-1] - hit[0] + 1) * spacing[ax])
    return np.array(out)


def sphere(shape, centre, radius_mm, spacing) -> np.ndarray:
    grids = np.indices(shape, dtype=float)
    d2 = sum(((g - c) * s) ** 2 for g, c, s in zip(grids, centre, spacing, strict=True))
    return d2 <= radius_mm**2


# ---------------------------------------------------------------------- interpolation


def test_interpolate_cone_between_two_slices():
    # a disc of radius 4 on slice 0 and radius 12 on slice 8: radius grows linearly between
    lab = np.zeros((9, 40, 40), np.uint8)
    lab[0][sphere((40, 40), (20, 20), 4, (1, 1))] = 3
    lab[8][sphere((40, 40), (20, 20), 12, (1, 1))] = 3
    out = interpolate_slices(lab, 3, axis=0)
    for k in range(1, 8):
        expected = sphere((40, 40), (20, 20), 4 + k, (1, 1))
        assert dice(out[k] == 3, expected) > 0.93
    np.testing.assert_array_equal(out[[0, 8]], lab[[0, 8]])
    assert lab[1:8].max() == 0  # input untouched


def test_interpolate_respects_other_classes_and_range():
    lab = np.zeros((12, 20, 20), np.uint8)
    lab[2, 5:15, 5:15] = 1
    lab[6, 5:15, 5:15] = 1
    lab[4, 8:12, 8:12] = 2  # another class in the way
    out = interpolate_slices(lab, 1, axis=0)
    assert (out[3, 5:15, 5:15] == 1).all()
    assert (out[4, 8:12, 8:12] == 2).all()  # not overwritten
    assert (out[4] == 1).sum() == 100 - 16
    assert out[:2].max() == 0 and out[7:].max() == 0  # nothing beyond the drawn range


def test_interpolate_along_other_axis_and_nothing_to_do():
    lab = np.zeros((10, 10, 10), np.uint8)
    lab[3:7, 3:7, 1] = 1
    lab[3:7, 3:7, 5] = 1
    out = interpolate_slices(lab, 1, axis=2)
    assert (out[3:7, 3:7, 1:6] == 1).all()
    single = np.zeros_like(lab)
    single[2, 2, 2] = 1
    np.testing.assert_array_equal(interpolate_slices(single, 1), single)
    with pytest.raises(ValueError, match="background"):
        interpolate_slices(lab, 0)


def test_interpolate_real_organs_every_fourth_slice(public_data):
    nib = pytest.importorskip("nibabel")
    mask = np.asarray(nib.load(public_data.ct_mask_nifti()).dataobj).transpose(2, 1, 0)
    for label in (1, 5):  # spleen, liver (TotalSegmentator ids)
        full = np.where(mask == label, label, 0).astype(np.uint8)
        z = np.flatnonzero(full.any(axis=(1, 2)))
        drawn = list(range(z[0], z[-1] + 1, 4))
        sparse = np.zeros_like(full)
        sparse[drawn] = full[drawn]
        out = interpolate_slices(sparse, label, axis=0, spacing=(2.5, 0.703125, 0.703125))
        assert dice(out == label, full == label) >= 0.9


# ---------------------------------------------------------------------- islands


def _islands():
    lab = np.zeros((20, 30, 30), np.uint8)
    lab[2:12, 2:12, 2:12] = 1  # 1000 voxels
    lab[15:17, 20:22, 20:22] = 1  # 8 voxels
    lab[2:4, 20:25, 2:4] = 1  # 20 voxels
    lab[14:18, 2:6, 2:6] = 2  # another class, 64 voxels
    return lab


def test_component_sizes_in_mm():
    sizes = component_sizes(_islands(), 1, spacing=SPACING)
    assert [n for n, _ in sizes] == [1000, 20, 8]
    assert sizes[1][1] == pytest.approx(20 * 2.5 * 0.7 * 0.7)


def test_remove_small_by_volume():
    lab = _islands()
    unit = 2.5 * 0.7 * 0.7  # mm3 per voxel
    out = remove_small(lab, min_size_mm=10 * unit, spacing=SPACING, label=1)
    assert (out[15:17, 20:22, 20:22] == 0).all()  # 8 voxels < 10: gone
    assert (out[2:4, 20:25, 2:4] == 1).all()  # 20 voxels: kept
    assert (out == 2).sum() == 64
    out_all = remove_small(lab, min_size_mm=100 * unit, spacing=SPACING)
    assert (out_all == 1).sum() == 1000 and (out_all == 2).sum() == 0
    # 2D: mm2
    img = np.zeros((10, 10), np.uint8)
    img[1:3, 1:3] = 1
    img[5:9, 5:9] = 1
    out2 = remove_small(img, min_size_mm=5.0, spacing=(0.5, 0.5))  # 4 px = 1 mm2, 16 px = 4 mm2
    assert out2.max() == 0
    out3 = remove_small(img, min_size_mm=4.0, spacing=(0.5, 0.5))
    assert (out3 == 1).sum() == 16


def test_keep_largest_and_split():
    lab = _islands()
    out = keep_largest(lab, 1)
    assert (out == 1).sum() == 1000 and (out == 2).sum() == 64
    split, new_ids = split_islands(lab, 1)
    assert new_ids == [3, 4]
    assert (split == 1).sum() == 1000 and (split == 3).sum() == 20 and (split == 4).sum() == 8
    assert (split == 2).sum() == 64
    np.testing.assert_array_equal(lab, _islands())  # input untouched
    # ids that do not fit the dtype widen it
    big = np.zeros((5, 5), np.uint8)
    big[0, 0] = big[4, 4] = 255
    out_big, ids = split_islands(big, 255)
    assert ids == [256] and out_big.dtype == np.uint16


# ---------------------------------------------------------------------- smoothing


def test_smoothing_removes_spur_keeps_volume():
    shape = (30, 60, 60)
    ball = sphere(shape, (15, 30, 30), 12.0, SPACING)
    lab = ball.astype(np.uint8)
    lab[15, 30, 30:60] = 1  # one-voxel spur out of the ball to the edge
    for method in ("median", "opening", "gaussian"):
        out = smooth(lab, 1, method=method, kernel_mm=3.0, spacing=SPACING)
        assert out[15, 30, 50:].max() == 0, method
        assert abs(int((out == 1).sum()) - int(ball.sum())) / ball.sum() < 0.05, method


def test_closing_fills_gap_but_not_other_class():
    lab = np.zeros((20, 20), np.uint8)
    lab[5:15, 3:9] = 1
    lab[5:15, 10:16] = 1  # one-pixel gap at column 9
    lab[14, 9] = 2
    out = smooth(lab, 1, method="closing", kernel_mm=3.0, spacing=(1.0, 1.0))
    assert (out[6:14, 9] == 1).all()
    assert out[14, 9] == 2
    with pytest.raises(ValueError, match="unknown method"):
        smooth(lab, 1, method="mean", kernel_mm=3.0)


# ---------------------------------------------------------------------- margin / hollow


@pytest.mark.parametrize("mm", [2.0, -2.0])
def test_margin_on_anisotropic_grid(mm):
    shape = (40, 120, 120)
    sp = np.array(SPACING)
    cube = np.pad(np.ones((10, 40, 40), bool), ((15, 15), (40, 40), (40, 40)))
    ball = sphere(shape, (20, 60, 60), 20.0, SPACING)
    for mask in (cube, ball):
        out = margin(mask.astype(np.uint8), 1, mm, spacing=SPACING) == 1
        change = (extent_mm(out, sp) - extent_mm(mask, sp)) / 2  # per side
        if mask is ball and mm < 0:
            # the voxelised sphere's pole is one voxel on a 2.5 mm slice: its flat top sits
            # 1.25 mm above the slice below, which a 2 mm shrink removes; compare in-plane
            # extents and the shape with the analytic smaller sphere instead
            assert np.all(np.abs(change[1:] - mm) <= sp[1:] / 2 + 1e-6), change
            assert dice(out, sphere(shape, (20, 60, 60), 20.0 + mm, SPACING)) > 0.95
        else:
            assert np.all(np.abs(change - mm) <= sp / 2 + 1e-6), change
        if mm > 0:
            assert dice(out, sphere(shape, (20, 60, 60), 20.0 + mm, SPACING)) > 0.95 or mask is cube


def test_margin_grows_into_background_only_unless_overwrite():
    lab = np.zeros((30, 30), np.uint8)
    lab[10:20, 10:20] = 1
    lab[10:20, 21:25] = 2
    out = margin(lab, 1, 3.0, spacing=(1.0, 1.0))
    assert (out[10:20, 21:25] == 2).all()
    assert (out[10:20, 20] == 1).all() and out[15, 7] == 1 and out[15, 6] == 0
    out_ow = margin(lab, 1, 3.0, spacing=(1.0, 1.0), overwrite=True)
    assert (out_ow[10:20, 21:23] == 1).all()


def test_hollow_thickness():
    lab = np.zeros((30, 100, 100), np.uint8)
    lab[5:25, 20:80, 20:80] = 1
    out = hollow(lab, 1, 2.1, spacing=SPACING)
    row = out[15, 50, :]
    assert list(np.flatnonzero(row == 1)) == [20, 21, 22, 77, 78, 79]  # 3 x 0.7 = 2.1 mm walls
    col = out[:, 50, 50]
    assert list(np.flatnonzero(col == 1)) == [5, 24]  # one 2.5 mm slice is the nearest wall
    outside = hollow(lab, 1, 1.4, spacing=SPACING, inside=False)
    assert (outside[15, 50, 18:20] == 1).all() and outside[15, 50, 17] == 0
    assert outside[15, 50, 50] == 0
