"""Affine registration of a prior film onto the current one, on a real radiograph."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from PIL import Image as PILImage

from napari_cxseg.anatomy.registration import iter_register_affine, register_affine, transform_boxes

FILM = Path(__file__).parent / "data" / "kermany_cxr" / "normal_1427.png"  # CC BY 4.0, SOURCE.md


def _film() -> np.ndarray:
    return np.asarray(PILImage.open(FILM), dtype=np.float32)


def _moved(film: np.ndarray, spacing: float, angle_deg: float, shift_xy: tuple[float, float],
           out_spacing: float | None = None, gamma: float = 1.0) -> tuple[np.ndarray, sitk.Transform]:  # fmt: skip
    """The film seen through a known rigid motion (optionally on another pixel grid/exposure).

    Returns the moved image and the transform T with ``moved(q) = film(T(q))`` (x, y mm).
    """
    img = sitk.GetImageFromArray(film)
    img.SetSpacing([spacing, spacing])
    rows, cols = film.shape
    t = sitk.Euler2DTransform([cols * spacing / 2, rows * spacing / 2], np.radians(angle_deg), shift_xy)
    ref = img
    if out_spacing is not None:
        size = [int(cols * spacing / out_spacing), int(rows * spacing / out_spacing)]
        ref = sitk.Image(size, sitk.sitkFloat32)
        ref.SetSpacing([out_spacing, out_spacing])
    moved = sitk.GetArrayFromImage(sitk.Resample(img, ref, t, sitk.sitkLinear, 0.0))
    moved = 255.0 * (np.clip(moved, 0, 255) / 255.0) ** gamma
    return moved.astype(np.float32), t


def _expected_prior_points(t: sitk.Transform, points_rc: np.ndarray) -> np.ndarray:
    """Registration maps current points p to prior points q with moved(q) = film(p): T^-1(p)."""
    inv = t.GetInverse()
    return np.array([inv.TransformPoint((float(c), float(r)))[::-1] for r, c in points_rc])


def _probe_points(film: np.ndarray, spacing: float) -> np.ndarray:
    rows, cols = film.shape
    r, c = rows * spacing, cols * spacing
    return np.array([[0.25 * r, 0.25 * c], [0.25 * r, 0.75 * c], [0.75 * r, 0.5 * c], [0.5 * r, 0.5 * c]])


@pytest.mark.parametrize(
    "angle, shift, out_spacing, gamma",
    [(5.0, (6.0, -4.0), None, 0.8), (-4.0, (-5.0, 3.0), 0.625, 1.2)],
)
def test_recovers_a_known_shift_and_rotation(angle, shift, out_spacing, gamma):
    film, spacing = _film(), 0.5
    prior, t = _moved(film, spacing, angle, shift, out_spacing, gamma)
    prior_spacing = out_spacing or spacing
    result = register_affine(film, np.diag([spacing, spacing, 1.0]), prior,
                             np.diag([prior_spacing, prior_spacing, 1.0]))  # fmt: skip
    pts = _probe_points(film, spacing)
    err = np.linalg.norm(result.to_prior(pts) - _expected_prior_points(t, pts), axis=1)
    assert err.max() < 0.5, err  # mm; a pixel is 0.5 mm (0.625 mm on the prior)
    assert abs(abs(result.rotation_deg) - abs(angle)) < 0.3
    # the prior resampled onto the current grid lines up with the current film
    assert result.resampled.shape == film.shape
    core = (slice(60, 200), slice(60, 260))
    corr = np.corrcoef(result.resampled[core].ravel(), film[core].ravel())[0, 1]
    assert corr > 0.95
    # boxes of the prior map back onto the current exam
    q = result.to_prior(np.array([[40.0, 50.0], [80.0, 90.0]]))
    box = np.array([[q[0, 0], q[0, 1]], [q[0, 0], q[1, 1]], [q[1, 0], q[1, 1]], [q[1, 0], q[0, 1]]])
    back = transform_boxes(result, [box])[0]
    # its corners q0, q1 come back to the points they were mapped from
    assert np.all(back.min(axis=0) <= [40.001, 50.001]) and np.all(back.max(axis=0) >= [79.999, 89.999])
    assert np.all(back.min(axis=0) > [30.0, 40.0]) and np.all(back.max(axis=0) < [90.0, 100.0])


def test_levels_can_be_cancelled_between_steps():
    film = _film()
    gen = iter_register_affine(film, np.eye(3), film, np.eye(3))
    assert next(gen) == (1, 3)
    gen.close()  # a worker's quit(): no more levels run


def test_refuses_non_2d_input():
    with pytest.raises(ValueError, match="2D radiographs"):
        register_affine(np.zeros((3, 4, 4)), np.eye(3), np.zeros((4, 4)), np.eye(3))
