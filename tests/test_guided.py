"""Click-guided networks (napari_cxseg.models.guided): grids, guidance maps, shipped weights.

The Dice floors are measured on the bundled samples with the shipped weights (the sample CXR
and CT are of the training patient, see cards/clicks/*.yaml); they fail when the working grid,
the guidance encoding or the weights break.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

torch = pytest.importorskip("torch")

from napari_cxseg.editing.interactive import PromptSession, available_backends, segment_from_prompts  # noqa: E402
from napari_cxseg.images import CxsegError  # noqa: E402
from napari_cxseg.io import read  # noqa: E402
from napari_cxseg.models import guided  # noqa: E402
from napari_cxseg.sample_data_files import sample_paths  # noqa: E402


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * np.logical_and(a, b).sum() / (a.sum() + b.sum()))


def deepest(mask: np.ndarray, spacing) -> np.ndarray:
    d = ndi.distance_transform_edt(mask, sampling=spacing)
    return np.array(np.unravel_index(int(np.argmax(d)), mask.shape), float)


@pytest.fixture(scope="module")
def sample_cxr():
    img_p, lab_p = sample_paths("chest_xray")
    img, lab = read(img_p)[0], read(lab_p)[0]
    return np.asarray(img.array, np.float32), np.asarray(img.geometry.spacing), np.asarray(lab.array)


@pytest.fixture(scope="module")
def sample_ct():
    img_p, lab_p = sample_paths("chest_ct")
    img, lab = read(img_p)[0], read(lab_p)[0]
    names = {c.name: k for k, c in lab.classes.items()}
    return np.asarray(img.array, np.float32), np.asarray(img.geometry.spacing), np.asarray(lab.array), names


@pytest.fixture(autouse=True)
def _threads():
    n = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(n)


# ---------------------------------------------------------------------- grids and maps
@pytest.mark.parametrize("nd", [2, 3])
def test_roi_grid_samples_where_to_working_says(nd):
    """Working voxel w samples the source at centre + (w - (P-1)/2) * side/P mm, and to_working inverts it."""
    shape = (40, 50, 60)[:nd]
    spacing = np.array([2.5, 0.8, 1.2])[:nd]
    coords = np.stack(np.meshgrid(*[np.arange(n, dtype=np.float32) for n in shape], indexing="ij"))
    patch = (16,) * nd
    centre = np.array([40.0, 20.0, 30.0])[:nd]
    side = 20.0
    grid = guided.roi_grid(centre, side, patch, spacing, shape)
    got = guided.sample(torch.from_numpy(coords), grid).numpy()  # (nd, *patch): source index sampled
    w = np.stack(np.meshgrid(*[np.arange(p, dtype=float) for p in patch], indexing="ij"), -1)
    mm = centre + (w - (np.array(patch) - 1) / 2) * side / np.array(patch)
    expected = np.moveaxis(mm / spacing, -1, 0)
    np.testing.assert_allclose(got, expected, atol=1e-3)
    back = guided.to_working(mm.reshape(-1, nd), centre, side, patch)
    np.testing.assert_allclose(back, w.reshape(-1, nd), atol=1e-9)


def test_click_and_box_maps():
    m = guided.click_maps(np.array([[5.0, 7.0]]), (16, 16), sigma=2.0).numpy()
    assert m[5, 7] == pytest.approx(1.0)
    assert m[5, 9] == pytest.approx(np.exp(-0.5), rel=1e-5)  # one sigma away
    assert guided.click_maps(np.zeros((0, 2)), (8, 8), 2.0).sum() == 0
    b = guided.box_map([2.0, 3.0, 4.0], [2.0, 6.0, 9.0], (8, 12, 12)).numpy()
    assert b.sum() == 4 * 6 and b[2].sum() == 24  # flat box: one slice thick


def test_normalise_windows_and_percentiles():
    hu = np.array([[-1000.0, 0.0, 1000.0]])
    out = guided.normalise(hu, {"type": "window", "windows": [[-1000, 1000], [-160, 240]]})
    np.testing.assert_allclose(out[0, 0], [0.0, 0.5, 1.0])
    np.testing.assert_allclose(out[1, 0], [0.0, 0.4, 1.0])
    p = guided.normalise(np.arange(1000.0).reshape(10, 100), {"type": "percentiles", "lower": 0, "upper": 100})
    assert p.shape == (1, 10, 100) and p.min() == 0 and p.max() == 1


def test_spec_validation_names_the_field():
    good = {
        "name": "x", "spatial_dims": 2, "patch": [64, 64], "network": {"name": "UNet", "args": {}},
        "intensity": {"type": "percentiles"}, "guidance_sigma": 3, "roi": {}, "weights": "x.pt",
    }
    assert guided.spec_from_dict(good).patch == (64, 64)
    for key in ("patch", "weights", "network"):
        bad = {k: v for k, v in good.items() if k != key}
        with pytest.raises(CxsegError, match=key):
            guided.spec_from_dict(bad, "test.yaml")
    with pytest.raises(CxsegError, match="windows"):
        guided.spec_from_dict({**good, "intensity": {"type": "window"}})
    with pytest.raises(CxsegError, match="shipped"):
        guided.load_spec("no-such-net")


@pytest.mark.parametrize("name", ["cxr-clicks", "ct-clicks"])
def test_shipped_weights_match_the_spec(name):
    spec = guided.load_spec(name)
    net = guided.build_network(spec)
    from napari_cxseg.models.weights import load_state_dict

    state = load_state_dict(spec.weights_path)  # weights_only=True
    assert set(state) == set(net.state_dict())
    assert spec.info["metrics"], "the spec must carry its measured figures"
    assert net.state_dict()[next(iter(state))].shape == state[next(iter(state))].shape
    first = next(p for k, p in state.items() if k.endswith("weight"))
    assert first.shape[1] == guided.image_channels(spec.intensity) + len(guided.PROMPT_CHANNELS)


def test_backends_registered():
    assert {"classical", "network", "vista3d"} <= set(available_backends())


# ---------------------------------------------------------------------- shipped networks
def test_clicks_segment_the_sample_cxr_lungs(sample_cxr):
    """Simulated user: first click deep in the lung, then clicks in the largest error."""
    img, sp, lab = sample_cxr
    for k, floor_1, floor_3 in ((1, 0.75, 0.82), (2, 0.75, 0.80)):
        ref = lab == k
        s = PromptSession(img, spacing=sp, backend="network", options={"device": "cpu"})
        m = s.add_point(deepest(ref, sp))
        d1 = dice(m, ref)
        assert d1 >= floor_1, (k, d1)
        # the right lung (1) is on the image's left: the mask's centre must be there too
        cx = np.argwhere(m)[:, 1].mean()
        assert (cx < img.shape[1] / 2) == (k == 1)
        for _ in range(2):
            fn, fp = ref & ~m, m & ~ref
            err = fn if fn.sum() >= fp.sum() else fp
            lab_e, n = ndi.label(err)
            big = lab_e == 1 + int(np.argmax(ndi.sum(err, lab_e, range(1, n + 1))))
            m = s.add_point(deepest(big, sp), positive=err is fn)
        assert dice(m, ref) >= floor_3, (k, dice(m, ref))
        before = s.mask.copy()
        s.add_point(deepest(ref, sp) + [0, 3], positive=True)
        np.testing.assert_array_equal(s.undo_last(), before)


def test_one_click_segments_sample_ct_organs_in_3d(sample_ct):
    img, sp, lab, names = sample_ct
    for organ, floor in (("spleen", 0.75), ("heart", 0.7), ("left kidney", 0.75)):
        ref = lab == names[organ]
        p = deepest(ref, sp)
        m = segment_from_prompts(img, [p], spacing=sp, backend="network", device="cpu")
        assert m.shape == img.shape and m.dtype == bool
        assert dice(m, ref) >= floor, (organ, dice(m, ref))
        zs = np.flatnonzero(m.any(axis=(1, 2)))
        assert len(zs) >= 3, "one click on one slice must give the 3D structure"


def test_negative_click_and_box_and_existing_mask(sample_ct):
    img, sp, lab, names = sample_ct
    spleen = lab == names["spleen"]
    p = deepest(spleen, sp)
    # a box alone (on the click's slice) finds the spleen there
    z = int(p[0])
    yx = np.argwhere(spleen[z])
    box = np.array([[z, *yx.min(0)], [z, *yx.max(0)]], float)
    m_box = segment_from_prompts(img, [], box=box, spacing=sp, backend="network", device="cpu")
    assert dice(m_box[z], spleen[z]) >= 0.7
    # refining a class with two parts (both kidneys) by a click in one keeps the other part
    left, right = lab == names["left kidney"], lab == names["right kidney"]
    refined = segment_from_prompts(
        img, [deepest(left, sp)], spacing=sp, existing_mask=left | right, backend="network", device="cpu"
    )
    assert (refined & right).sum() >= 0.8 * right.sum()
    assert dice(refined & left, left) >= 0.8
    # the heart from one click leaks into the aorta; a negative click on the aorta removes most
    heart, aorta = lab == names["heart"], lab == names["aorta"]
    pos = deepest(heart, sp)
    leaked = segment_from_prompts(img, [pos], spacing=sp, backend="network", device="cpu") & aorta
    leak = leaked.sum()
    assert leak > 300, "the case must leak without the negative click"
    # the user clicks "not this" where the leak is
    fixed = segment_from_prompts(img, [pos], [deepest(leaked, sp)], spacing=sp, backend="network", device="cpu")
    assert (fixed & aorta).sum() <= 0.5 * leak
    assert dice(fixed, heart) >= 0.7


def test_high_resolution_radiograph_gives_the_same_lungs(sample_cxr):
    """A 4x finer copy of the radiograph (pixel size unknown, 1 'mm') is block-averaged before
    sampling and sized relative to the image: the lungs come out the same."""
    img, sp, lab = sample_cxr
    big = ndi.zoom(img, 4, order=1)
    ref = lab == 1
    p = deepest(ref, sp)
    small_m = segment_from_prompts(img, [p], spacing=sp, backend="network", device="cpu")
    big_m = segment_from_prompts(big, [p * 4 + 1.5], spacing=(1.0, 1.0), backend="network", device="cpu")
    back = big_m.reshape(img.shape[0], 4, img.shape[1], 4).mean(axis=(1, 3)) > 0.5
    assert dice(back, small_m) >= 0.9
    assert dice(back, ref) >= 0.75


def test_modality_the_network_was_not_trained_on_is_refused(sample_ct):
    img, sp, lab, names = sample_ct
    p = deepest(lab == names["spleen"], sp)
    with pytest.raises(CxsegError, match="Intensity"):
        segment_from_prompts(img, [p], spacing=sp, backend="network", device="cpu", modality="MR")


def test_cached_normalisation_follows_the_image_not_its_id():
    seg = guided.get_segmenter("ct-clicks", "cpu")
    a = np.full((20, 30, 30), -1024.0, np.float32)
    seg._source(a, np.ones(3), 4.0)
    b = a.copy()
    b[5:15, 10:20, 10:20] = 500.0
    got = seg._source(b, np.ones(3), 4.0)[0]
    assert float(got.max()) > 0.5  # b's values, not a's cached ones
    seg.release()


def test_wrong_dimensionality_is_refused():
    seg = guided.get_segmenter("cxr-clicks", "cpu")
    with pytest.raises(CxsegError, match="2D"):
        seg.segment(np.zeros((8, 8, 8), np.float32), np.array([[4.0, 4.0, 4.0]]))
