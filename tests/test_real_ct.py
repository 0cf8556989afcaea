"""A real CT (LIDC-IDRI-0001, DICOM) and its TotalSegmentator mask (NIfTI) through our readers.

The reference is independent of our code: SimpleITK reads the DICOM series, nibabel the mask, and
each mask voxel is looked up in the CT by its world position. Our readers must put the same CT
values under every label, and the liver (patient right) must lie at smaller world x (L) than the
spleen (patient left).
"""

from __future__ import annotations

import numpy as np
import pytest

from napari_cxseg.geometry import voxel_to_world

#: spleen, liver, the five lung lobes, heart (TotalSegmentator ids, see structures.csv).
LABELS = {
    1: "spleen",
    5: "liver",
    10: "lung_upper_lobe_left",
    11: "lung_lower_lobe_left",
    12: "lung_upper_lobe_right",
    13: "lung_middle_lobe_right",
    14: "lung_lower_lobe_right",
    51: "heart",
}

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ours(public_data):
    from napari_cxseg.io.dicom_series import read_dicom_series
    from napari_cxseg.io.nifti import read_nifti

    ct = read_dicom_series(public_data.ct_dicom_dir())
    mask = read_nifti(public_data.ct_mask_nifti(), as_labels=True)
    return ct, mask


@pytest.fixture(scope="module")
def reference(public_data):
    """Per-label CT values found by SimpleITK + nibabel, through world (LPS) positions."""
    import nibabel as nib
    import SimpleITK as sitk

    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(public_data.ct_dicom_dir())))
    ct = reader.Execute()
    ct_arr = sitk.GetArrayFromImage(ct)  # (k, j, i)
    lps_from_index = np.eye(4)
    lps_from_index[:3, :3] = np.asarray(ct.GetDirection()).reshape(3, 3) @ np.diag(ct.GetSpacing())
    lps_from_index[:3, 3] = ct.GetOrigin()
    index_from_lps = np.linalg.inv(lps_from_index)

    nii = nib.load(str(public_data.ct_mask_nifti()))
    mask = np.asarray(nii.dataobj)
    wanted = np.zeros(int(mask.max()) + 1, bool)
    wanted[list(LABELS)] = True
    ijk = np.stack(np.nonzero(wanted[mask]), axis=1)  # all voxels of the labels, one pass
    labels_at = mask[tuple(ijk.T)]
    lps_from_ras = np.diag([-1.0, -1.0, 1.0, 1.0])
    sidx = (index_from_lps @ lps_from_ras @ nii.affine @ np.c_[ijk, np.ones(len(ijk))].T).T[:, :3]
    assert np.allclose(sidx, np.round(sidx), atol=1e-2)  # same grid: lands on voxel centres
    sidx = np.round(sidx).astype(int)
    values = ct_arr[sidx[:, 2], sidx[:, 1], sidx[:, 0]]
    return {label: values[labels_at == label] for label in LABELS}


def test_same_grid(ours, public_data):
    ct, mask = ours
    assert ct.array.shape == mask.array.shape == (133, 512, 512)
    assert ct.modality == "CT"
    assert ct.array.dtype == np.int16
    assert np.allclose(ct.geometry.affine, mask.geometry.affine, atol=1e-3)
    assert len(ct.geometry.source["dicom_files"]) == 133  # the LIDC .xml is not a slice


def test_intensities_under_labels_match_reference(ours, reference):
    ct, mask = ours
    for label, name in LABELS.items():
        values = ct.array[mask.array == label]
        ref = reference[label]
        assert values.size == ref.size > 0, name
        assert np.array_equal(np.sort(values), np.sort(ref)), name
        assert abs(values.astype(float).mean() - ref.astype(float).mean()) < 1e-6, name
        assert abs(values.astype(float).std() - ref.astype(float).std()) < 1e-6, name


def test_left_right(ours):
    ct, mask = ours

    def centroid(labels) -> np.ndarray:
        lut = np.zeros(256, bool)
        lut[labels] = True
        idx = np.argwhere(lut[mask.array])
        return voxel_to_world(mask.geometry, idx).mean(axis=0)

    liver, spleen = centroid([5]), centroid([1])
    right_lung, left_lung = centroid([12, 13, 14]), centroid([10, 11])
    # world axis 2 is x = L: the patient's right has the smaller value
    assert liver[2] < spleen[2]
    assert right_lung[2] < left_lung[2]
    # and the CT puts air (lung) and soft tissue (liver) where the mask says
    assert ct.array[mask.array == 12].mean() < -500
    assert 0 < ct.array[mask.array == 5].mean() < 200


def test_nifti_mask_saved_as_seg_of_the_dicom_series(ours, tmp_path):
    """The NIfTI-stored (LAS) mask saved as a SEG of the DICOM slices lands on the same voxels."""
    from napari_cxseg.geometry import world_to_voxel
    from napari_cxseg.images import LabelClass, LabelMap
    from napari_cxseg.io.dicom_seg import read_dicom_seg, write_dicom_seg

    ct, mask = ours
    lut = np.zeros(256, np.uint8)
    lut[[1, 5]] = [1, 2]
    organs = LabelMap(
        lut[mask.array],
        mask.geometry,
        {1: LabelClass("spleen", "#9d6cb0"), 2: LabelClass("liver", "#dd8265")},
    )
    write_dicom_seg(organs, tmp_path / "seg.dcm", source_files=ct.geometry.source["dicom_files"])
    back = read_dicom_seg(tmp_path / "seg.dcm")
    start = world_to_voxel(ct.geometry, back.geometry.origin)[0]
    assert np.allclose(start, np.round(start), atol=1e-3)
    block = tuple(
        slice(int(s), int(s) + n) for s, n in zip(np.round(start), back.array.shape, strict=True)
    )
    assert np.array_equal(organs.array[block], back.array)
    assert (back.array > 0).sum() == (organs.array > 0).sum()
    assert [c.name for c in back.classes.values()] == ["spleen", "liver"]
