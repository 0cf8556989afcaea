"""Regenerate the bundled sample data (src/napari_cxseg/sample_data) from the public CT.

Needs the public data (``python scripts/fetch_public_data.py``): LIDC-IDRI-0001 with its
TotalSegmentator labels. Writes

* ``chest_ct.nii.gz``: the CT cropped to the body and resampled to 2 x 2 x 5 mm, int16 HU;
* ``chest_ct_labels.nii.gz`` + ``chest_ct_labels.labels.json``: 13 classes on the same grid;
* ``chest_xray.png``: a PA radiograph (DRR) of the same CT, 8-bit;
* ``chest_xray_lungs.png`` + ``chest_xray_lungs.png.labels.json``: 1 right lung, 2 left lung, as
  radiographic lung fields (:mod:`napari_cxseg.drr_fields`).

Usage::

    python scripts/make_sample_data.py [--out DIR]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage as ndi

from napari_cxseg import public_data
from napari_cxseg.drr import Projection, Rendering, compose, project_ct
from napari_cxseg.drr_fields import FIELD_GROUPS, lung_fields
from napari_cxseg.geometry import Geometry
from napari_cxseg.hu_lungs import body_mask
from napari_cxseg.images import LabelClass, LabelMap
from napari_cxseg.io import read, write_labels
from napari_cxseg.io.sidecar import write_sidecar
from napari_cxseg.training.datasets import nifti_image

OUT = Path(__file__).resolve().parents[1] / "src" / "napari_cxseg" / "sample_data"

#: sample class id -> (name, colour, TotalSegmentator ids)
CT_CLASSES: dict[int, tuple[str, str, tuple[int, ...]]] = {
    1: ("right lung", "#1f77b4", (12, 13, 14)),
    2: ("left lung", "#ff7f0e", (10, 11)),
    3: ("heart", "#d62728", (51,)),
    4: ("aorta", "#e377c2", (52,)),
    5: ("trachea", "#2ca02c", (16,)),
    6: ("esophagus", "#98df8a", (15,)),
    7: ("liver", "#8c564b", (5,)),
    8: ("spleen", "#9467bd", (1,)),
    9: ("right kidney", "#bcbd22", (2,)),
    10: ("left kidney", "#dbdb8d", (3,)),
    11: ("stomach", "#17becf", (6,)),
    12: ("vertebrae", "#7f7f7f", tuple(range(25, 51))),
    13: ("ribs", "#c7c7c7", tuple(range(92, 116))),
}
CT_SPACING = (2.0, 2.0, 5.0)  # NIfTI voxel axes (L, A, S of the source file), mm
XRAY_PIXEL_MM = 0.8


def _resample_disk(arr: np.ndarray, affine: np.ndarray, lo: np.ndarray, hi: np.ndarray,
                   spacing: np.ndarray, labels: dict | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Resample the disk box ``lo..hi`` (voxel indices) to ``spacing`` along the disk axes."""
    old = np.linalg.norm(affine[:3, :3], axis=0)
    step = np.asarray(spacing, float) / old
    shape = np.floor((hi - lo) / step).astype(int) + 1
    start = lo.astype(float)
    new_aff = affine @ np.block([[np.diag(step), start[:, None]], [np.zeros((1, 3)), np.ones((1, 1))]])
    if labels is None:
        src = ndi.gaussian_filter(arr.astype(np.float32), sigma=np.maximum(0, (step - 1) * 0.4))
        out = ndi.affine_transform(src, step, start, output_shape=tuple(shape), order=1, cval=-1024.0)
        return np.round(out).astype(np.int16), new_aff
    best = np.zeros(tuple(shape), np.float32)
    out = np.zeros(tuple(shape), np.uint8)
    for k, ids in labels.items():
        p = ndi.affine_transform(np.isin(arr, ids).astype(np.float32), step, start, output_shape=tuple(shape), order=1)
        sel = (p > 0.5) & (p > best)
        out[sel] = k
        best = np.maximum(best, p)
    return out, new_aff


def _save_nifti(arr: np.ndarray, affine: np.ndarray, path: Path) -> None:
    img = nib.Nifti1Image(arr, affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    img.header.set_xyzt_units("mm", "sec")
    nib.save(img, str(path))


def make_ct(out: Path) -> None:
    """Cropped, downsampled CT and 13-class labels on one grid."""
    ct = nib.load(str(public_data.ct_nifti()))
    mask = nib.load(str(public_data.ct_mask_nifti()))
    hu = np.asarray(ct.dataobj).astype(np.float32)
    lab = np.asarray(mask.dataobj).astype(np.uint8)
    sp = np.linalg.norm(ct.affine[:3, :3], axis=0)
    # body box on the disk grid (body_mask works on any axis order given the spacing)
    body = body_mask(hu.transpose(2, 1, 0), sp[::-1]).transpose(2, 1, 0)
    idx = np.argwhere(body)
    margin = np.ceil(6.0 / sp).astype(int)
    lo = np.maximum(idx.min(axis=0) - margin, 0)
    hi = np.minimum(idx.max(axis=0) + margin, np.asarray(hu.shape) - 1)
    lo[2], hi[2] = 0, hu.shape[2] - 1  # keep every slice
    hu_small, aff = _resample_disk(hu, ct.affine, lo, hi, np.asarray(CT_SPACING))
    ids = {k: v[2] for k, v in CT_CLASSES.items()}
    lab_small, aff2 = _resample_disk(lab, mask.affine, lo, hi, np.asarray(CT_SPACING), labels=ids)
    assert np.allclose(aff, aff2, atol=1e-4)
    _save_nifti(hu_small, aff, out / "chest_ct.nii.gz")
    _save_nifti(lab_small, aff, out / "chest_ct_labels.nii.gz")
    back = read(out / "chest_ct_labels.nii.gz", as_labels=True)[0]
    back.classes = {k: LabelClass(n, c) for k, (n, c, _) in CT_CLASSES.items()}
    write_sidecar(back, out / "chest_ct_labels.nii.gz")
    print(f"chest_ct: {hu_small.shape} at {CT_SPACING} mm, labels {sorted(np.unique(lab_small).tolist())}")


def make_xray(out: Path) -> None:
    """A PA DRR of the full-resolution CT and its radiographic lung fields."""
    from PIL import Image as PILImage

    ct = nifti_image(public_data.ct_nifti())
    m = nifti_image(public_data.ct_mask_nifti())
    labels = LabelMap(m.array.astype(np.uint8), m.geometry, {})
    proj = Projection(source_distance=1800.0, object_distance=1600.0, pixel_spacing=XRAY_PIXEL_MM, step_mm=1.0)
    stack = project_ct(ct, labels, FIELD_GROUPS, projection=proj)
    img, _ = compose(stack, Rendering())
    lungs = lung_fields(stack)  # radiographic lung fields, as SCR and CXLSeg draw them
    png = (np.clip(img.array, 0, 1) * 255.0 + 0.5).astype(np.uint8)
    dpi = 25.4 / XRAY_PIXEL_MM
    PILImage.fromarray(png).save(out / "chest_xray.png", dpi=(dpi, dpi), optimize=True)
    # the PNG reader gives radiographs 1 mm pixels: the lungs get the same grid so layers overlay
    image_geom = read(out / "chest_xray.png")[0].geometry
    lungs = LabelMap(lungs.array, Geometry(affine=image_geom.affine.copy(), frame="image"),
                     lungs.classes, {"name": "chest_xray_lungs"})
    write_labels(lungs, out / "chest_xray_lungs.png", overwrite=True)
    print(f"chest_xray: {png.shape}, detector pixel {XRAY_PIXEL_MM} mm, magnification 1.125")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--only", choices=["ct", "xray"], default=None)
    args = ap.parse_args()
    if not public_data.available():
        public_data.fetch()
    args.out.mkdir(parents=True, exist_ok=True)
    t = time.time()
    if args.only in (None, "ct"):
        make_ct(args.out)
    if args.only in (None, "xray"):
        make_xray(args.out)
    for f in sorted(args.out.iterdir()):
        print(f"  {f.name}: {f.stat().st_size / 1e6:.2f} MB")
    print(f"done in {time.time() - t:.0f} s")


if __name__ == "__main__":
    main()
