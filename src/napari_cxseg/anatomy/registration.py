"""Affine registration of a prior radiograph onto the current one (SimpleITK; no Qt).

Intensity based: Mattes mutual information (films of one patient differ in exposure, processing
and even polarity), regular-step gradient descent with physical-shift scales, a three-level
pyramid (shrink 4, 2, 1; smoothing 2, 1, 0 pixels). The levels run one after another so a napari
generator worker can report progress and be cancelled between them (:func:`iter_register_affine`).

Both images are given as held arrays with their ``(row, col)`` -> world (mm) affines; the
result maps current (fixed) world points to prior (moving) world points, as ITK transforms do,
and the prior resampled onto the current grid can be shown as a layer over the current film.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass, field

import numpy as np

#: Pyramid levels: (shrink factor, smoothing sigma in pixels, iterations).
LEVELS: tuple[tuple[int, float, int], ...] = ((4, 2.0, 200), (2, 1.0, 150), (1, 0.0, 100))


@dataclass
class RegistrationResult:
    """An affine map from current world ``(row, col)`` mm to prior world ``(row, col)`` mm.

    ``prior(p) = matrix @ p + offset`` for a current point ``p``.
    """

    matrix: np.ndarray
    offset: np.ndarray
    metric: float
    iterations: list[int] = field(default_factory=list)
    stop: str = ""
    resampled: np.ndarray | None = None  # the prior on the current grid

    def to_prior(self, points: np.ndarray) -> np.ndarray:
        """Current world points ``(n, 2)`` -> prior world points."""
        return np.asarray(points, float) @ self.matrix.T + self.offset

    def to_current(self, points: np.ndarray) -> np.ndarray:
        """Prior world points ``(n, 2)`` -> current world points (the inverse map)."""
        return (np.asarray(points, float) - self.offset) @ np.linalg.inv(self.matrix).T

    @property
    def rotation_deg(self) -> float:
        """Rotation of the map in degrees (its polar part)."""
        u, _, vt = np.linalg.svd(self.matrix)
        r = u @ vt
        return float(np.degrees(np.arctan2(r[1, 0], r[0, 0])))


def _to_sitk(array: np.ndarray, affine: np.ndarray):
    """SimpleITK image (x = column, y = row) for a held array and its (row, col) world affine."""
    import SimpleITK as sitk

    arr = np.asarray(array, dtype=np.float32)
    if arr.ndim != 2:
        raise ValueError(f"registration needs 2D radiographs, got an array of shape {arr.shape}")
    img = sitk.GetImageFromArray(arr)  # index (i, j) = (column, row)
    a = np.asarray(affine, float)
    lin = a[:2, :2][::-1, ::-1]  # (x, y) order on both sides
    spacing = np.linalg.norm(lin, axis=0)
    if np.any(spacing <= 0):
        raise ValueError("registration needs a non-degenerate pixel spacing")
    img.SetSpacing([float(s) for s in spacing])
    img.SetDirection([float(v) for v in (lin / spacing).ravel()])
    img.SetOrigin([float(a[1, 2]), float(a[0, 2])])
    return img


def _normalise(img):
    """Intensities to [0, 1] by robust percentiles (MI is scale-free, the optimiser is not)."""
    import SimpleITK as sitk

    arr = sitk.GetArrayViewFromImage(img)
    lo, hi = np.percentile(arr, [0.5, 99.5])
    out = sitk.Clamp((img - float(lo)) / float(max(hi - lo, 1e-6)), sitk.sitkFloat32, 0.0, 1.0)
    return out


def iter_register_affine(
    current: np.ndarray,
    current_affine: np.ndarray,
    prior: np.ndarray,
    prior_affine: np.ndarray,
    levels: tuple[tuple[int, float, int], ...] = LEVELS,
    sampling: float = 0.25,
    seed: int = 7,
    resample: bool = True,
) -> Generator[tuple[int, int], None, RegistrationResult]:
    """Register ``prior`` to ``current``, one pyramid level per step.

    Parameters
    ----------
    current, prior
        2D held arrays (the fixed and the moving image).
    current_affine, prior_affine
        ``3 x 3`` affines from their ``(row, col)`` indices to world mm.
    levels
        ``(shrink, smoothing sigma in pixels, iterations)`` per level, coarse to fine.
    sampling
        Fraction of pixels sampled by the metric (random, seeded: reproducible).
    seed
        Metric sampling seed.
    resample
        Also resample the prior onto the current grid (``RegistrationResult.resampled``).

    Yields
    ------
    tuple of int
        ``(levels done, levels)``; closing the generator stops between levels.

    Returns
    -------
    RegistrationResult
    """
    import SimpleITK as sitk

    fixed = _normalise(_to_sitk(current, current_affine))
    moving = _normalise(_to_sitk(prior, prior_affine))
    transform = sitk.CenteredTransformInitializer(
        fixed, moving, sitk.AffineTransform(2), sitk.CenteredTransformInitializerFilter.MOMENTS
    )
    transform = sitk.AffineTransform(transform)
    iterations: list[int] = []
    metric, stop = float("nan"), ""
    for done, (shrink, sigma, n_iter) in enumerate(levels):
        reg = sitk.ImageRegistrationMethod()
        reg.SetMetricAsMattesMutualInformation(numberOfHistogramBins=50)
        reg.SetMetricSamplingStrategy(reg.RANDOM)
        reg.SetMetricSamplingPercentage(sampling, seed)
        reg.SetInterpolator(sitk.sitkLinear)
        reg.SetOptimizerAsRegularStepGradientDescent(
            learningRate=2.0 / shrink,
            minStep=1e-4,
            numberOfIterations=n_iter,
            relaxationFactor=0.6,
            gradientMagnitudeTolerance=1e-8,
        )
        reg.SetOptimizerScalesFromPhysicalShift()
        reg.SetShrinkFactorsPerLevel([shrink])
        reg.SetSmoothingSigmasPerLevel([sigma])
        reg.SmoothingSigmasAreSpecifiedInPhysicalUnitsOff()
        reg.SetInitialTransform(transform, inPlace=True)
        reg.Execute(fixed, moving)
        iterations.append(int(reg.GetOptimizerIteration()))
        metric = float(reg.GetMetricValue())
        stop = reg.GetOptimizerStopConditionDescription()
        yield done + 1, len(levels)
    matrix, offset = _world_affine(transform)
    resampled = None
    if resample:
        raw = _to_sitk(prior, prior_affine)
        out = sitk.Resample(raw, _to_sitk(current, current_affine), transform, sitk.sitkLinear, 0.0)
        resampled = sitk.GetArrayFromImage(out).astype(np.float32)
    return RegistrationResult(matrix, offset, metric, iterations, stop, resampled)


def register_affine(
    current: np.ndarray,
    current_affine: np.ndarray,
    prior: np.ndarray,
    prior_affine: np.ndarray,
    **options,
) -> RegistrationResult:
    """:func:`iter_register_affine` run to the end (CLI, tests)."""
    gen = iter_register_affine(current, current_affine, prior, prior_affine, **options)
    while True:
        try:
            next(gen)
        except StopIteration as stop:
            return stop.value


def _world_affine(transform) -> tuple[np.ndarray, np.ndarray]:
    """ITK affine (x, y) -> ``(matrix, offset)`` on (row, col) world points."""
    m = np.asarray(transform.GetMatrix(), float).reshape(2, 2)
    c = np.asarray(transform.GetCenter(), float)
    t = np.asarray(transform.GetTranslation(), float)
    off = t + c - m @ c  # y = m (x - c) + c + t
    return m[::-1, ::-1].copy(), off[::-1].copy()


def transform_boxes(result: RegistrationResult, boxes: list[np.ndarray]) -> list[np.ndarray]:
    """Prior-world rectangles -> current-world axis-aligned rectangles (their corners mapped)."""
    out = []
    for v in boxes:
        pts = result.to_current(np.asarray(v, float)[:, -2:])
        r0, c0 = pts.min(axis=0)
        r1, c1 = pts.max(axis=0)
        out.append(np.array([[r0, c0], [r0, c1], [r1, c1], [r1, c0]]))
    return out
