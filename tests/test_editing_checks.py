"""Core checks shared by every tool (no Qt): NaN/Inf replacement and world-grid comparison."""

from __future__ import annotations

import numpy as np
import pytest

from napari_cxseg.images import finite_array
from napari_cxseg.layers import grid_differences


def test_finite_array_replaces_nan_and_inf_and_counts_them():
    a = np.array([[np.nan, 1.0, 5.0], [-np.inf, np.inf, 3.0]], np.float32)
    out, n = finite_array(a)
    assert n == 3 and out.dtype == np.float32
    np.testing.assert_array_equal(out, [[1.0, 1.0, 5.0], [1.0, 5.0, 3.0]])
    assert np.isnan(a[0, 0])  # the input is left alone


def test_finite_array_leaves_finite_and_integer_arrays_as_they_are():
    f = np.arange(6.0).reshape(2, 3)
    out, n = finite_array(f)
    assert n == 0 and out is f  # no copy
    i = np.arange(6, dtype=np.int16)
    assert finite_array(i)[0] is i and finite_array(i)[1] == 0
    out, n = finite_array(np.full((2, 2), np.nan))
    assert n == 4 and not out.any()  # nothing finite at all: zeros (callers warn)


def _affine(scale=(1.0, 1.0), translate=(0.0, 0.0), rot_deg=0.0):
    t = np.deg2rad(rot_deg)
    r = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    m = np.eye(3)
    m[:2, :2] = r @ np.diag(scale)
    m[:2, 2] = translate
    return m


@pytest.mark.parametrize(
    ("other", "word"),
    [
        ({"scale": (1.0, 1.01)}, "voxel size"),
        ({"translate": (0.0, 0.5)}, "origin"),
        ({"rot_deg": 3.0}, "orientation"),
    ],
)
def test_grid_differences_name_what_differs(other, word):
    diffs = grid_differences((100, 80), _affine(), (100, 80), _affine(**other))
    assert diffs and any(word in d for d in diffs)


def test_grid_differences_tolerance_shape_and_dimensions():
    base = _affine((0.7, 0.7), (10.0, -4.0))
    assert grid_differences((512, 512), base, (512, 512), base + 1e-9) == []
    assert grid_differences((512, 512), base, (512, 512), _affine((0.7, 0.7), (10.001, -4.0))) == []
    assert grid_differences((5, 6), base, (5, 7), base) == ["shape (5, 6) vs (5, 7)"]
    assert grid_differences((5, 6), base, (2, 5, 6), np.eye(4)) == ["2D vs 3D"]
    # the same placement written differently (scale vs affine) is one grid
    assert grid_differences((4, 4), np.diag([2.0, 3.0, 1.0]), (4, 4), _affine((2.0, 3.0))) == []
