"""The fast paths (back to the source grid, anti-aliased resizing) give MONAI's own results.

``source_grid.labels_on_source_grid`` must equal ``Invertd`` (trilinear, border) + argmax on
volumes whose model space is an orientation + spacing of their grid (flips, axis order,
anisotropic voxels, LPS and RAS), and must refuse oblique grids; ``largest_components`` must
equal MONAI's ``KeepLargestConnectedComponent`` (including its choice between equal islands);
a bundle with the usual postprocessing gives the same labels by the fast path as by its chain.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch


def _preprocessed(affine: np.ndarray, shape: tuple[int, int, int], pixdim: tuple[float, ...], seed: int = 0):
    from monai.data import MetaTensor
    from monai.transforms import Compose, Orientationd, Spacingd

    rng = np.random.default_rng(seed)
    img = MetaTensor(torch.as_tensor(rng.normal(size=(1, *shape)).astype(np.float32)), affine=torch.as_tensor(affine))
    img.meta["original_affine"] = affine.copy()
    compose = Compose([Orientationd(keys="image", axcodes="RAS"), Spacingd(keys="image", pixdim=pixdim, mode="bilinear")])
    d = compose({"image": img})
    return d, compose


def _monai_labels(probs, d, compose) -> np.ndarray:
    from monai.data import MetaTensor
    from monai.transforms import Invertd

    img = d["image"]
    pred = MetaTensor(probs, affine=img.affine, meta={k: v for k, v in img.meta.items() if k != "affine"})
    out = Invertd(keys="pred", transform=compose, orig_keys="image", nearest_interp=False)({"image": img, "pred": pred})
    return torch.argmax(torch.as_tensor(out["pred"]), dim=0).numpy()


def _smooth_probs(shape, k, seed):
    from scipy import ndimage as ndi

    rng = np.random.default_rng(seed)
    logits = np.stack([ndi.gaussian_filter(rng.normal(size=shape), 2.0) * 20 for _ in range(k)])
    return torch.softmax(torch.as_tensor(logits, dtype=torch.float32), dim=0)


@pytest.mark.parametrize("case", ["lps", "ras_permuted", "upsample_z", "oblique"])
def test_labels_equal_invertd_argmax(case):
    from scipy import ndimage as ndi

    from napari_cxseg.inference import largest_components
    from napari_cxseg.source_grid import labels_on_source_grid, source_mapping

    if case == "lps":
        affine = np.diag([-0.8, -0.8, 2.5, 1.0])
        affine[:3, 3] = [100.0, 120.0, -50.0]
        shape, pixdim = (61, 53, 17), (2.0, 2.0, 2.0)
    elif case == "ras_permuted":  # held axes that are not x, y, z in order, and a flipped one
        affine = np.array([[0.0, 0.0, 1.2, -30.0], [0.0, -0.9, 0.0, 40.0], [3.0, 0.0, 0.0, 5.0], [0, 0, 0, 1.0]])
        shape, pixdim = (15, 47, 39), (1.7, 2.3, 2.9)
    elif case == "upsample_z":
        affine = np.diag([1.5, 1.5, 4.0, 1.0])
        shape, pixdim = (30, 28, 9), (1.0, 1.0, 1.0)
    else:  # Spacingd keeps an oblique grid's directions: source and model grids stay aligned
        c, s = np.cos(0.3), np.sin(0.3)
        affine = np.array([[c, -s, 0, 3.0], [s, c, 0, -2.0], [0, 0, 2.0, 1.0], [0, 0, 0, 1.0]])
        shape, pixdim = (26, 24, 11), (1.5, 1.5, 1.5)
    d, compose = _preprocessed(affine, shape, pixdim)
    model_shape = tuple(d["image"].shape[1:])
    probs = _smooth_probs(model_shape, 4, seed=1)
    mapping = source_mapping(d["image"])
    assert mapping is not None and mapping[1] == shape
    lut = np.array([0, 3, 5, 7])
    ours, boxes = labels_on_source_grid(probs, mapping[0], mapping[1], lut, return_boxes=True)
    ref = lut[_monai_labels(probs, d, compose)]
    assert ours.shape == ref.shape == shape
    assert (ours != ref).mean() < 1e-5, f"{(ours != ref).sum()} of {ours.size} voxels differ"
    # the class boxes it gives are exactly find_objects' of its labels
    expected = {i + 1: b for i, b in enumerate(ndi.find_objects(ours)) if b is not None}
    assert {c: b for c, b in boxes.items() if c} == expected
    assert len(expected) >= 2
    np.testing.assert_array_equal(largest_components(ours, [3, 5, 7], boxes), largest_components(ours, [3, 5, 7]))


def test_mixed_axes_are_left_to_invertd():
    from napari_cxseg.source_grid import separable_map

    c, s = np.cos(0.3), np.sin(0.3)
    rotated = np.array([[c, -s, 0, 0], [s, c, 0, 0], [0, 0, 2.0, 0], [0, 0, 0, 1.0]])
    assert separable_map(rotated, np.eye(4)) is None
    assert separable_map(np.diag([2.0, 3.0, 4.0, 1.0]), np.eye(4)) == [(0, 2.0, 0.0), (1, 3.0, 0.0), (2, 4.0, 0.0)]


def test_nearest_spacing_is_left_to_invertd():
    from monai.data import MetaTensor
    from monai.transforms import Spacingd

    from napari_cxseg.source_grid import source_mapping

    img = MetaTensor(torch.zeros(1, 10, 10, 10), affine=torch.eye(4))
    d = Spacingd(keys="image", pixdim=(2.0, 2.0, 2.0), mode="nearest")({"image": img})
    assert source_mapping(d["image"]) is None


def test_largest_components_equal_monai_with_ties():
    from monai.transforms import KeepLargestConnectedComponent

    from napari_cxseg.inference import largest_components

    rng = np.random.default_rng(3)
    labels = rng.integers(0, 4, size=(18, 20, 22)).astype(np.uint8)
    labels[labels == 3] = 0
    # two islands of class 5 of equal size: MONAI's choice must be kept
    labels[1:3, 1:3, 1:3] = 5
    labels[10:12, 10:12, 10:12] = 5
    ids = [1, 2, 5, 9]
    ref = KeepLargestConnectedComponent(applied_labels=[1, 2, 5], is_onehot=False, independent=True)(
        torch.as_tensor(labels.astype(np.int64))[None])
    ours = largest_components(labels, ids)
    assert ours.dtype == labels.dtype
    np.testing.assert_array_equal(ours, np.asarray(ref[0]))
    np.testing.assert_array_equal(largest_components(labels, []), labels)


def test_bundle_fast_postprocess_equals_its_chain(tmp_path):
    """An exported bundle through the product: the fast path and MONAI's chain give the same labels."""
    from napari_cxseg.images import Geometry, Image
    from napari_cxseg.inference import Predictor
    from napari_cxseg.models.cards import find_card
    from napari_cxseg.models.weights import resolve_weights
    from napari_cxseg.training.bundle_export import export_bundle

    card = find_card("ct-organs-demo")
    bundle = export_bundle(card, resolve_weights(card), tmp_path / "b")
    rng = np.random.default_rng(0)
    arr = np.full((20, 48, 44), -1000.0, np.float32)
    arr[3:17, 8:40, 6:38] = rng.normal(40, 30, (14, 32, 32))
    arr[5:15, 14:30, 10:20] = -800.0
    image = Image(array=arr, geometry=Geometry(affine=np.diag([5.0, 3.0, 3.0, 1.0])), modality="CT")
    p = Predictor(bundle, device="cpu")
    assert p.load()._bundle._fast_plan() == sorted(card.classes)
    fast = p.predict(image).array
    p._bundle._fast_plan = lambda: None  # the bundle's own MONAI chain
    chain = p.predict(image).array
    np.testing.assert_array_equal(fast, chain)


@pytest.mark.parametrize("size", [(300, 260), (150, 420)])
def test_radiograph_labels_equal_invertd(size):
    """Resized + SpatialPadd radiographs (portrait and landscape): the same labels as Invertd."""
    from scipy import ndimage as ndi

    from napari_cxseg import io as cxio
    from napari_cxseg.images import Image
    from napari_cxseg.inference import Predictor
    from napari_cxseg.sample_data_files import sample_paths

    src = cxio.read(sample_paths("chest_xray")[0])[0]
    arr = ndi.zoom(np.asarray(src.array, np.float32), (size[0] / src.array.shape[0], size[1] / src.array.shape[1]),
                   order=1)
    image = Image(array=arr, geometry=src.geometry, modality=src.modality, meta=dict(src.meta))
    p = Predictor("cxr-lungs", device="cpu", largest_component=False)
    fast = p.predict(image).array
    p._fast_labels = lambda *a: (None, None)  # MONAI's Invertd + argmax
    ref = p.predict(image).array
    assert fast.shape == ref.shape == size
    assert (fast != ref).mean() < 1e-4, f"{(fast != ref).sum()} of {fast.size} pixels differ"
    assert len(np.unique(ref)) == 3


@pytest.mark.parametrize("shape,size,longest", [((2500, 2048), 256, True), ((466, 507), 256, True),
                                                ((150, 420), 256, True), ((1000, 200), (256, 256), False),
                                                ((90, 80), 256, True)])
def test_resize_smoothed_where_sampled_equals_monai_anti_aliasing(shape, size, longest):
    from monai.transforms import Resize

    from napari_cxseg.model_space import _resize_size, smoothed_where_sampled

    x = torch.as_tensor(np.random.default_rng(4).random((1, *shape), dtype=np.float32))
    mode = "longest" if longest else "all"
    ref = Resize(size, size_mode=mode, mode="bilinear", anti_aliasing=True)(x)
    pre = smoothed_where_sampled(x, _resize_size(shape, size, longest))
    if shape == (90, 80):  # upsampling: MONAI does not smooth, neither do we
        assert pre is None
        return
    ours = Resize(size, size_mode=mode, mode="bilinear", anti_aliasing=False)(pre)
    assert ours.shape == ref.shape
    np.testing.assert_allclose(np.asarray(ours), np.asarray(ref), atol=1e-6)
