"""Tiny labelled datasets written by the tests (2D radiograph-like films, 3D volumes in MSD layout)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def film(rng: np.random.Generator, size: int = 96, shift: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A radiograph-like film: bright body, two dark lung fields (1 right on the image's left, 2 left)."""
    yy, xx = np.mgrid[:size, :size].astype(float)
    img = 180 + 30 * np.exp(-((xx - size / 2) ** 2) / (2 * (size / 3) ** 2))
    lab = np.zeros((size, size), np.uint8)
    for k, cx in ((1, 0.3 * size + shift), (2, 0.7 * size + shift)):
        ry, rx = (0.3 + 0.05 * rng.random()) * size, (0.12 + 0.03 * rng.random()) * size
        m = ((yy - 0.5 * size) / ry) ** 2 + ((xx - cx) / rx) ** 2 < 1
        lab[m] = k
        img[m] -= 110
    img += rng.normal(0, 6, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8), lab


def write_structure_set(root: Path, n: int = 8, size: int = 96, seed: int = 0, combined: bool = False) -> Path:
    """``images/`` + ``masks/lungs/`` (or ``masks/lungs_combined/``) PNG films."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    mdir = root / "masks" / ("lungs_combined" if combined else "lungs")
    mdir.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        img, lab = film(rng, size, shift=int(rng.integers(-4, 5)))
        Image.fromarray(img).save(root / "images" / f"case{i:02d}.png")
        Image.fromarray((lab > 0).astype(np.uint8) if combined else lab).save(mdir / f"case{i:02d}.png")
    return root


def write_msd_volumes(root: Path, n: int = 3, shape: tuple[int, int, int] = (24, 32, 32), seed: int = 0) -> Path:
    """An MSD task of CT-like volumes (RAS 2 mm) with a bright sphere labelled 1."""
    import nibabel as nib

    rng = np.random.default_rng(seed)
    for sub in ("imagesTr", "labelsTr", "imagesTs"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    entries = []
    for i in range(n):
        zz, yy, xx = np.mgrid[: shape[0], : shape[1], : shape[2]]
        c = np.array(shape) / 2 + rng.integers(-3, 4, 3)
        r = 6 + rng.random() * 2
        m = (zz - c[0]) ** 2 + (yy - c[1]) ** 2 + (xx - c[2]) ** 2 < r * r
        vol = rng.normal(-100, 30, shape)
        vol[m] = 200 + rng.normal(0, 20, int(m.sum()))
        aff = np.diag([2.0, 2.0, 2.0, 1.0])
        # nibabel's axes are (x, y, z): store the arrays transposed
        nib.save(nib.Nifti1Image(vol.transpose(2, 1, 0).astype(np.int16), aff), root / "imagesTr" / f"vol_{i:03d}.nii.gz")
        nib.save(nib.Nifti1Image(m.transpose(2, 1, 0).astype(np.uint8), aff), root / "labelsTr" / f"vol_{i:03d}.nii.gz")
        entries.append({"image": f"./imagesTr/vol_{i:03d}.nii.gz", "label": f"./labelsTr/vol_{i:03d}.nii.gz"})
    meta = {"name": "TaskXX_Sphere", "modality": {"0": "CT"}, "labels": {"0": "background", "1": "sphere"},
            "numTraining": n, "training": entries, "test": []}
    (root / "dataset.json").write_text(json.dumps(meta))
    return root
