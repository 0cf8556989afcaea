"""Seeded growing and click-to-segment on synthetic images with known answers and on real CT."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from napari_cxseg.editing.grow import grow_from_seeds
from napari_cxseg.editing.interactive import PromptSession, segment_from_prompts

CT_SPACING = (2.5, 0.703125, 0.703125)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * np.logical_and(a, b).sum() / (a.sum() + b.sum())


def ellipsoid(shape, centre, radii_mm, spacing) -> np.ndarray:
    grids = np.indices(shape, dtype=float)
    return (
        sum(
            ((g - c) * s / r) ** 2
            for g, c, s, r in zip(grids, centre, spacing, radii_mm, strict=True)
        )
        <= 1
    )


def noisy(mask_values: np.ndarray, sigma: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (mask_values + rng.normal(0, sigma, mask_values.shape)).astype(np.float32)


@pytest.fixture(scope="module")
def blobs_2d():
    """Two bright discs (100) on a dark background (0) and a brighter bar (250) touching one."""
    shape = (160, 200)
    a = ellipsoid(shape, (80, 55), (30, 30), (1, 1))
    b = ellipsoid(shape, (80, 145), (25, 25), (1, 1))
    bar = np.zeros(shape, bool)
    bar[20:140, 86:94] = True
    values = np.where(a | b, 100.0, 0.0)
    values[bar] = 250.0
    return noisy(values, 10.0), a, b


@pytest.fixture(scope="module")
def dumbbell_3d():
    """Two spheres joined by a thick neck on a thick-slice grid, all of one intensity."""
    spacing = (2.5, 0.7, 0.7)
    shape = (24, 80, 140)
    a = ellipsoid(shape, (12, 40, 35), (18, 18, 18), spacing)
    b = ellipsoid(shape, (12, 40, 105), (18, 18, 18), spacing)
    neck = ellipsoid(shape, (12, 40, 70), (8, 8, 30), spacing)
    obj = a | b | neck
    image = noisy(np.where(obj, 60.0, -80.0), 8.0, seed=1)
    return image, a, b, obj, spacing


# ---------------------------------------------------------------------- grow from seeds


@pytest.mark.parametrize("method", ["random_walker", "watershed"])
def test_grow_from_seeds_separates_two_blobs(blobs_2d, method):
    image, a, b = blobs_2d
    # short strokes, as painted by a user
    seeds = np.zeros(image.shape, np.uint8)
    seeds[75:86, 55] = 1
    seeds[80, 140:151] = 2
    seeds[5, 5:60] = 3  # background
    seeds[60:100, 90] = 3  # the bright bar is background too
    out = grow_from_seeds(image, seeds, spacing=(0.5, 0.5), method=method)
    assert dice(out == 1, a) > 0.95 and dice(out == 2, b) > 0.95
    assert out.dtype == seeds.dtype and (seeds > 0).sum() == 11 + 11 + 55 + 40  # untouched


def test_grow_from_seeds_3d_roi_and_errors(dumbbell_3d):
    image, a, _, obj, spacing = dumbbell_3d
    seeds = np.zeros(image.shape, np.uint8)
    seeds[12, 40, 35] = 1
    seeds[12, 40, 60:75] = 0
    seeds[12, 5, 20:130] = 2
    out = grow_from_seeds(
        image, seeds, spacing=spacing, method="watershed", roi="seeds", roi_margin_mm=5
    )
    # the seeds' box grown by 5 mm (2 slices, 8 pixels) is filled; outside it stays 0
    roi = (slice(10, 15), slice(0, 49), slice(12, 138))
    assert out[roi].min() > 0 and (out > 0).sum() == out[roi].size
    assert (out[roi][obj[roi]] == 1).mean() > 0.99 and (out[roi][~obj[roi]] == 2).mean() > 0.99
    with pytest.raises(ValueError, match="at least two classes"):
        grow_from_seeds(image, (seeds == 1).astype(np.uint8))
    with pytest.raises(ValueError, match="unknown method"):
        grow_from_seeds(image, seeds, method="graphcut")


# ---------------------------------------------------------------------- click to segment


def test_click_2d_blob(blobs_2d):
    image, a, b = blobs_2d
    mask = segment_from_prompts(image, [(80, 55)], spacing=(0.5, 0.5))
    assert mask.dtype == bool and dice(mask, a) > 0.95
    assert not (mask & b).any()


def test_box_only_2d(blobs_2d):
    image, _, b = blobs_2d
    mask = segment_from_prompts(image, [], box=[(52, 118), (108, 172)], spacing=(0.5, 0.5))
    assert dice(mask, b) > 0.9


def test_one_click_on_one_slice_gives_3d_object(dumbbell_3d):
    image, a, b, obj, spacing = dumbbell_3d
    mask = segment_from_prompts(image, [(12, 40, 35)], spacing=spacing)
    assert dice(mask, obj) > 0.9
    # slices far from the clicked one are found too
    assert mask[7].sum() > 0.8 * obj[7].sum() and mask[17].sum() > 0.8 * obj[17].sum()


def test_box_on_one_slice_of_a_volume(dumbbell_3d):
    image, a, b, obj, spacing = dumbbell_3d
    # a napari rectangle drawn on slice 12 around the left sphere: 4 vertices with z = 12
    box = [(12, 15, 5), (12, 15, 62), (12, 65, 62), (12, 65, 5)]
    session = PromptSession(image, spacing=spacing)
    mask = session.add_box(box)
    footprint = np.zeros_like(obj)
    footprint[:, 15:66, 5:63] = True
    assert dice(mask, obj & footprint) > 0.9
    assert not (mask & ~footprint).any()
    np.testing.assert_array_equal(session.box, [[12, 15, 5], [12, 65, 62]])


def test_backends_plug_in_behind_the_same_interface(blobs_2d):
    from napari_cxseg.editing import interactive

    image, a, _ = blobs_2d
    calls = []

    def brightest(img, prompts, spacing, existing, roi_margin_mm, level=50.0):
        calls.append((prompts.positive.copy(), tuple(spacing), level))
        return img > level

    interactive.register_backend("test-threshold", brightest)
    try:
        assert "test-threshold" in interactive.available_backends()
        mask = segment_from_prompts(
            image, [(80, 55)], spacing=0.5, backend="test-threshold", level=175
        )
        assert (
            calls[0][1] == (0.5, 0.5) and calls[0][2] == 175 and mask.sum() == (image > 175).sum()
        )
    finally:
        interactive._BACKENDS.pop("test-threshold")


def test_negative_click_carves_and_undo_restores(dumbbell_3d):
    image, a, b, obj, spacing = dumbbell_3d
    session = PromptSession(image, spacing=spacing)
    first = session.add_point((12, 40, 35), positive=True)
    assert dice(first, obj) > 0.9
    carved = session.add_point((12, 40, 105), positive=False)
    assert carved.sum() < first.sum()
    assert (carved & b).sum() < 0.2 * b.sum()  # the far sphere is gone
    assert (carved & a).sum() > 0.9 * a.sum()  # the clicked one stays
    assert session.n_interactions == 2 and len(session.negative_points) == 1
    again = session.undo_last()
    np.testing.assert_array_equal(again, first)
    assert not again.flags.writeable
    assert session.undo_last().sum() == 0 and session.undo_last().sum() == 0


def test_existing_mask_refined_by_negative_click(dumbbell_3d):
    image, a, b, obj, spacing = dumbbell_3d
    session = PromptSession(image, spacing=spacing, initial_mask=obj)
    np.testing.assert_array_equal(session.mask, obj)
    carved = session.add_point((12, 40, 105), positive=False)
    assert (carved & b).sum() < 0.5 * b.sum() and (carved & a).sum() > 0.95 * a.sum()
    np.testing.assert_array_equal(session.reset(), np.zeros_like(obj))


def test_prompt_errors(blobs_2d):
    image, _, _ = blobs_2d
    with pytest.raises(ValueError, match="positive click, a box or an existing mask"):
        segment_from_prompts(image, [], [(3, 3)])
    with pytest.raises(ValueError, match="outside the image"):
        segment_from_prompts(image, [(500, 3)])
    with pytest.raises(ValueError, match="unknown backend"):
        segment_from_prompts(image, [(80, 55)], backend="sam")
    with pytest.raises(ValueError, match=r"\(k, 2\)"):
        segment_from_prompts(image, [(80, 55, 3)])
    session = PromptSession(image)
    with pytest.raises(ValueError, match="outside the image"):
        session.add_point((-5, 3))
    assert session.n_interactions == 0  # a failed interaction is not recorded


# ---------------------------------------------------------------------- real CT


@pytest.fixture(scope="module")
def real_ct(public_data):
    nib = pytest.importorskip("nibabel")
    # held (z, y, x) order of the LAS-stored volume: transposing is enough here
    image = np.asarray(nib.load(public_data.ct_nifti()).dataobj, dtype=np.float32).transpose(
        2, 1, 0
    )
    labels = np.asarray(nib.load(public_data.ct_mask_nifti()).dataobj).transpose(2, 1, 0)
    return image, labels


def _deepest(region: np.ndarray) -> tuple[int, ...]:
    """Where a user would click: the point of ``region`` farthest from its border (mm)."""
    box = ndi.find_objects(region.astype(np.uint8))[0]
    dt = ndi.distance_transform_edt(np.pad(region[box], 1), sampling=CT_SPACING)
    idx = np.unravel_index(np.argmax(dt), dt.shape)
    return tuple(int(i) - 1 + s.start for i, s in zip(idx, box, strict=True))


@pytest.mark.slow
@pytest.mark.parametrize(("label", "clicks"), [(1, 2), (5, 3)])  # spleen, liver
def test_clicks_on_real_ct_organ(real_ct, label, clicks):
    image, labels = real_ct
    truth = labels == label
    session = PromptSession(image, spacing=CT_SPACING)
    mask = session.add_point(_deepest(truth), positive=True)
    # simulated user: each further click goes to the middle of the largest error
    for _ in range(clicks - 1):
        missed, extra = truth & ~mask, mask & ~truth
        extra_is_worse = extra.sum() > missed.sum()
        mask = session.add_point(
            _deepest(extra if extra_is_worse else missed), positive=not extra_is_worse
        )
    assert dice(mask, truth) >= 0.8


# ---------------------------------------------------------------------- small bright objects


def _disc_and_lobe(seed: int = 0):
    """A bright disc (radius 12 px) and a lobe touching it (6 px), in pixels at any spacing."""
    shape = (64, 64)
    truth = ellipsoid(shape, (30, 30), (12, 12), (1, 1)) | ellipsoid(
        shape, (30, 48), (6, 6), (1, 1)
    )
    return noisy(np.where(truth, 100.0, 0.0), 5.0, seed), truth


@pytest.mark.parametrize("spacing", [0.5, 1.0, 2.0, 3.0])
@pytest.mark.parametrize("seed", [0, 1, 3])
def test_one_centre_click_on_a_bright_blob_at_any_spacing(spacing, seed):
    """The mm-sized settings (sampling, opening, smoothing) must not depend on the pixel size."""
    image, truth = _disc_and_lobe(seed)
    mask = segment_from_prompts(image, [(30, 30)], spacing=(spacing, spacing))
    assert dice(mask, truth) >= 0.9


@pytest.mark.parametrize("spacing", [(2.0, 1.0, 1.0), (3.0, 1.0, 1.0), (2.5, 0.7, 0.7)])
def test_one_click_on_one_slice_of_an_anisotropic_ball(spacing):
    shape = (24, 48, 48)
    truth = ellipsoid(shape, (12, 24, 24), (14, 14, 14), spacing)
    image = noisy(np.where(truth, 100.0, 0.0), 5.0, seed=1)
    mask = segment_from_prompts(image, [(12, 24, 24)], spacing=spacing)
    assert dice(mask, truth) >= 0.9


# ---------------------------------------------------------------------- bundled sample data


@pytest.fixture(scope="module")
def sample_ct():
    from napari_cxseg import io
    from napari_cxseg.sample_data_files import sample_paths

    image_path, labels_path = sample_paths("chest_ct")
    image = io.read(image_path)[0]
    labels = io.read(labels_path, as_labels=True)[0]
    names = {c.name: k for k, c in labels.classes.items()}
    return image.array.astype(np.float32), labels.array, names, tuple(image.geometry.spacing)


@pytest.mark.parametrize(("organ", "floor"), [("spleen", 0.85), ("liver", 0.8)])
def test_one_click_on_the_sample_ct(sample_ct, organ, floor):
    """The coarse sample CT (2 x 2 x 5 mm, integer HU): one click at the organ's deepest point.

    On 5 mm slices the click's adjacent voxels are 5, and the liver's tied integer values once
    gave a spread of 0: the grown region was the clicked voxel alone.
    """
    image, labels, names, spacing = sample_ct
    truth = labels == names[organ]
    dt = ndi.distance_transform_edt(truth, sampling=spacing)
    click = tuple(int(v) for v in np.unravel_index(np.argmax(dt), truth.shape))
    mask = segment_from_prompts(image, [click], spacing=spacing)
    assert dice(mask, truth) >= floor


def test_negative_clicks_in_one_homogeneous_tissue_keep_the_positive_side():
    """Negative clicks inside the same tissue as the positive click (no edge between them) must
    remove only what lies nearer to them, not flood the whole object (it used to vanish)."""
    rng = np.random.default_rng(3)
    img = rng.normal(0.0, 5.0, (40, 60, 60))
    img[5:35, 5:55, 5:55] += 100.0
    pos = [[20, 15, 15]]
    neg = [[20, 45, 45], [20, 45, 30]]
    m = segment_from_prompts(img, pos, neg, spacing=(1.0, 1.0, 1.0))
    assert m[20, 15, 15]
    assert m[5:35, 5:55, 5:55].mean() > 0.2
    assert not m[20, 45, 45] and not m[20, 45, 30]
