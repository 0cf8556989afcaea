"""What the click networks cache between clicks (napari_cxseg.models.click_state and the
segmenter's reuse): the same results as without the cache where they must be, and a fresh
AutoZoom whenever the image, the spacing, the box, the mask to refine or the clicks changed in a
way the previous call does not cover. Also the faster equivalents of the grid helpers.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
from scipy import ndimage as ndi

torch = pytest.importorskip("torch")

from napari_cxseg.editing.interactive import PromptSession  # noqa: E402
from napari_cxseg.io import read  # noqa: E402
from napari_cxseg.models import click_grids, guided  # noqa: E402
from napari_cxseg.models.click_state import GridCache, mask_digest  # noqa: E402
from napari_cxseg.sample_data_files import sample_paths  # noqa: E402


def deepest(mask: np.ndarray, spacing) -> np.ndarray:
    d = ndi.distance_transform_edt(mask, sampling=spacing)
    return np.array(np.unravel_index(int(np.argmax(d)), mask.shape), float)


@pytest.fixture(scope="module")
def cxr():
    img_p, lab_p = sample_paths("chest_xray")
    img, lab = read(img_p)[0], read(lab_p)[0]
    return np.asarray(img.array, np.float32), np.asarray(img.geometry.spacing), np.asarray(lab.array)


@pytest.fixture()
def seg():
    """The shared 2D segmenter, with reuse on and no previous calls; restored afterwards."""
    n = torch.get_num_threads()
    torch.set_num_threads(2)
    s = guided.get_segmenter("cxr-clicks", "cpu")
    s.reuse = True
    s.forget_calls()
    yield s
    s.reuse = True
    s.release()
    torch.set_num_threads(n)


def uncached(s, *args, **kwargs):
    """``(mask, passes)`` of a call with every reuse off (the normalised image stays cached)."""
    s.reuse = False
    try:
        return s.segment(*args, **kwargs), list(s.passes)
    finally:
        s.reuse = True


def cached(s, *args, **kwargs):
    return s.segment(*args, **kwargs), list(s.passes)


# ---------------------------------------------------------------------- helpers
@pytest.mark.parametrize("nd", [2, 3])
def test_separable_click_maps_equal_the_distance_form(nd):
    patch = (24, 20, 18)[:nd]
    pts = np.array([[3.0, 4.5, 7.0], [20.2, 1.0, 17.0], [-4.0, 30.0, 2.0]])[:, :nd]
    got = guided.click_maps(pts, patch, 2.5).numpy()
    w = guided.working_coordinates(patch).numpy()
    want = np.max([np.exp(-((w - p) ** 2).sum(-1) / (2 * 2.5**2)) for p in pts], axis=0)
    np.testing.assert_allclose(got, want, atol=1e-6)


@pytest.mark.parametrize("nd", [2, 3])
def test_mask_sampled_from_its_crop_equals_the_whole_mask_sampled(nd):
    rng = np.random.default_rng(0)
    shape = (30, 70, 64)[:nd]
    mask = ndi.binary_dilation(rng.random(shape) > 0.995, iterations=4)
    sp = np.array([2.5, 0.8, 1.1])[:nd]
    patch = (16,) * nd
    whole = torch.from_numpy(mask.astype(np.float32))[None]
    for centre, side in (([30.0, 20.0, 30.0], 25.0), ([70.0, 50.0, 60.0], 40.0), ([0.0, 0.0, 0.0], 30.0)):
        c = np.array(centre[:nd])
        grid = guided.roi_grid(c, side, patch, sp, shape)
        want = (guided.sample(whole, grid)[0] > 0.5).float()
        got = click_grids.sample_mask(mask, c, side, patch, sp)
        assert torch.equal(got, want)


def test_frozen_network_gives_the_eager_output(seg):
    assert seg.frozen, "on CPU the shipped network runs as a frozen TorchScript copy"
    x = torch.rand(1, 5, *seg.spec.patch, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        np.testing.assert_allclose(seg._run(x).numpy(), seg.network(x).numpy(), atol=1e-3)


def test_digest_and_grid_cache():
    a = np.zeros((5, 6), bool)
    b = a.copy()
    b[2, 3] = True
    assert mask_digest(a) == mask_digest(a.copy()) != mask_digest(b)
    assert mask_digest(a) != mask_digest(a.reshape(6, 5)) and mask_digest(None) is None
    c = GridCache(2)
    c.put((1,), "a")
    c.put((2,), "b")
    assert c.get((1,)) == "a"
    c.put((3,), "c")  # (2,) was the least recently used
    assert c.get((2,)) is None and c.get((1,)) == "a" and len(c) == 2


# ---------------------------------------------------------------------- reuse gives the same
def test_sampled_channels_from_the_cache_equal_fresh_ones(seg, cxr):
    img, sp, _ = cxr
    centre, side = np.array([120.0, 90.0]), 200.0
    first = seg.image_channels_on(img, centre, side, sp)
    again = seg.image_channels_on(img, centre, side, sp)
    assert again is first  # cached
    seg.reuse = False
    fresh = seg.image_channels_on(img, centre, side, sp)
    assert fresh is not first and torch.equal(fresh, first)


def test_a_repeated_call_continues_on_its_final_grid_with_the_same_mask(seg, cxr):
    img, sp, lab = cxr
    p = deepest(lab == 1, sp)[None]
    want, fresh_passes = uncached(seg, img, p, spacing=sp)
    cached(seg, img, p, spacing=sp)
    got, passes = cached(seg, img, p, spacing=sp)
    assert len(fresh_passes) > 1 and passes == [fresh_passes[-1]], "one pass, on the grid the first call ended on"
    np.testing.assert_array_equal(got, want)


def test_an_added_click_starts_where_the_previous_call_ended(seg, cxr):
    img, sp, lab = cxr
    ref = lab == 1
    p1 = deepest(ref, sp)
    first, passes_1 = cached(seg, img, p1[None], spacing=sp)
    miss = ref & ~first
    p2 = deepest(miss, sp) if miss.any() else p1 + [3, 0]
    _, passes_2 = cached(seg, img, np.stack([p1, p2]), spacing=sp)
    assert passes_2[0] == passes_1[-1]
    # and the undo case: a click after an undone one continues the call from before it
    s = PromptSession(img, spacing=sp, backend="network", options={"device": "cpu"})
    seg.forget_calls()
    s.add_point(p1)
    end_1 = seg.passes[-1]
    s.add_point(p2)
    s.undo_last()
    s.add_point(p1 + [4, 4])
    assert seg.passes[0] == end_1


# ---------------------------------------------------------------------- reuse is invalidated
def _fresh_equals_uncached(seg, *args, **kwargs):
    got, passes = cached(seg, *args, **kwargs)
    want, want_passes = uncached(seg, *args, **kwargs)
    assert passes == want_passes, "the AutoZoom must start afresh"
    np.testing.assert_array_equal(got, want)


def test_what_starts_the_autozoom_afresh(seg, cxr):
    img, sp, lab = cxr
    p1 = deepest(lab == 1, sp)
    two = np.stack([p1, p1 + [5, 5]])

    def after_first(*args, **kwargs):
        seg.forget_calls()
        cached(seg, img, p1[None], spacing=sp)
        _fresh_equals_uncached(seg, *args, **kwargs)

    after_first(img.copy(), two, spacing=sp)  # another image (equal values, another array)
    after_first(img, two, spacing=sp * 1.5)  # another spacing
    box = np.array([p1 - 20, p1 + 20])
    after_first(img, two, spacing=sp, box=box)  # a box added
    existing = lab == 1
    after_first(img, two, spacing=sp, existing_mask=existing)  # a mask to refine added
    # the mask to refine changed (same object, same clicks)
    seg.forget_calls()
    cached(seg, img, two, spacing=sp, existing_mask=existing)
    changed = existing.copy()
    changed[: img.shape[0] // 2] = False
    _fresh_equals_uncached(seg, img, two, spacing=sp, existing_mask=changed)
    # a click removed
    seg.forget_calls()
    cached(seg, img, two, spacing=sp)
    _fresh_equals_uncached(seg, img, two[1:], spacing=sp)
    # release (a session ends) forgets the calls
    seg.forget_calls()
    cached(seg, img, p1[None], spacing=sp)
    seg.release()
    _fresh_equals_uncached(seg, img, np.stack([p1, p1 + [2, 2]]), spacing=sp)
    # a click outside the final grid (at the image's far side)
    seg.forget_calls()
    cached(seg, img, p1[None], spacing=sp)
    centre, side = seg._calls[-1].centre, seg._calls[-1].side
    far = np.array([p1[0], img.shape[1] - 8.0])
    assert np.any(np.abs(far * sp - centre) > 0.45 * side)
    _fresh_equals_uncached(seg, img, np.stack([p1, far]), spacing=sp)


def test_concurrent_calls_give_their_own_results(seg, cxr):
    img, sp, lab = cxr
    other = img[::-1].copy()
    jobs = [(img, deepest(lab == 1, sp)[None]), (other, deepest((lab == 2)[::-1], sp)[None])]
    want = [uncached(seg, im, p, spacing=sp)[0] for im, p in jobs]
    got: list = [None, None]

    def work(i: int) -> None:
        for _ in range(2):
            got[i] = seg.segment(jobs[i][0], jobs[i][1], spacing=sp)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for g, w in zip(got, want, strict=True):
        np.testing.assert_array_equal(g, w)
