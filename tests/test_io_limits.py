"""Inputs too large to be true fail fast: crafted headers, read under an address-space limit.

Each crafted file claims far more pixel data than it holds. It is read in a child process whose
address space is capped (``RLIMIT_AS``) at about 1 GiB, well under what the header claims, so a
reader that allocates before checking dies with ``MemoryError`` instead of the ``CxsegError``
these tests expect; the CPU time of the read itself is measured in the child (wall time is
reported too, but a shared CI machine makes it a poor assert).
"""

from __future__ import annotations

import gzip
import json
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest

from napari_cxseg import io
from napari_cxseg.images import CxsegError

sys.path.insert(0, str(Path(__file__).parent))
from dicom_factory import write_ct_series, write_radiograph  # noqa: E402

#: Address space of the child: the interpreter and the libraries take about 200 MiB.
AS_LIMIT = 1 << 30

_CHILD = r"""
import json, sys, time
from napari_cxseg import io
from napari_cxseg.images import CxsegError
t, cpu = time.perf_counter(), time.process_time()
try:
    out = io.read(sys.argv[1])
    result = {"ok": [type(o).__name__ for o in out]}
except CxsegError as e:
    result = {"error": str(e)}
except BaseException as e:  # MemoryError, ValueError ...: the failure these tests guard against
    result = {"other": f"{type(e).__name__}: {e}"}
result["seconds"] = time.perf_counter() - t
result["cpu_seconds"] = time.process_time() - cpu  # not slowed by other jobs on the machine
# VmHWM, not ru_maxrss: ru_maxrss survives execve, so a child of a big pytest process reports
# the parent's peak; VmHWM belongs to the new address space alone.
with open("/proc/self/status") as f:
    result["maxrss_kib"] = next(int(ln.split()[1]) for ln in f if ln.startswith("VmHWM:"))
print(json.dumps(result))
"""


def _read_limited(path: Path, env: dict[str, str] | None = None) -> dict:
    """``io.read(path)`` in a child process capped at :data:`AS_LIMIT` bytes of address space."""
    import resource

    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (AS_LIMIT, AS_LIMIT))

    child_env = {k: v for k, v in os.environ.items() if k != "CXSEG_MAX_INPUT_BYTES"}
    child_env.update(env or {})
    child_env.setdefault("OPENBLAS_NUM_THREADS", "1")
    r = subprocess.run(
        [sys.executable, "-c", _CHILD, str(path)],
        capture_output=True,
        text=True,
        preexec_fn=cap,
        env=child_env,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def _assert_fast_refusal(result: dict, path: Path, *fragments: str) -> str:
    assert "error" in result, result
    msg = result["error"]
    assert str(path) in msg
    for f in fragments:
        assert f in msg, msg
    assert result["cpu_seconds"] < 1.0, result
    assert result["maxrss_kib"] < 600 * 1024, result  # little memory: nothing was allocated
    return msg


# ---------------------------------------------------------------------------------- NIfTI
def _nifti_bytes(shape, dtype=np.int16, version=1, payload=100) -> bytes:
    import nibabel as nib

    hdr = (nib.Nifti1Header if version == 1 else nib.Nifti2Header)()
    hdr.set_data_dtype(dtype)
    hdr.set_data_shape(shape)
    hdr.set_sform(np.diag([1.0, 1.0, 1.0, 1.0]), code=1)
    from io import BytesIO

    buf = BytesIO()
    hdr.write_to(buf)
    raw = buf.getvalue()
    offset = int(hdr.get_data_offset())
    return raw + b"\0" * (offset - len(raw)) + bytes(range(100))[:payload]


@pytest.mark.parametrize(
    "shape, version",
    [
        ((32767, 32767, 32767), 1),  # NIfTI-1 dims are int16
        ((60000, 60000, 60000), 2),  # the example, as NIfTI-2 (int64 dims)
        ((1024, 1024, 1024), 1),  # 2 GiB: within the default budget, not within the file
    ],
)
def test_nii_header_claiming_more_than_the_file(tmp_path, shape, version):
    path = tmp_path / "claims.nii"
    path.write_bytes(_nifti_bytes(shape, version=version))
    result = _read_limited(path)
    _assert_fast_refusal(result, path, "holds only 100 bytes", "int16")


@pytest.mark.parametrize("shape", [(1024, 1024, 1024), (30000, 30000, 30000)])
def test_gzip_nifti_claiming_a_huge_volume(tmp_path, shape):
    path = tmp_path / "claims.nii.gz"
    path.write_bytes(gzip.compress(_nifti_bytes(shape)))
    result = _read_limited(path)
    _assert_fast_refusal(result, path, "can expand to at most", "1032:1")


def test_nifti_within_the_file_but_over_the_budget(tmp_path):
    import nibabel as nib

    path = tmp_path / "ct.nii.gz"
    hu = np.random.default_rng(0).integers(-1000, 1000, (64, 64, 64)).astype(np.int16)
    nib.save(nib.Nifti1Image(hu, np.eye(4)), path)
    result = _read_limited(path, {"CXSEG_MAX_INPUT_BYTES": "100K"})
    _assert_fast_refusal(result, path, "budget of 100 KiB", "CXSEG_MAX_INPUT_BYTES")
    assert _read_limited(path)["ok"] == ["Image"]  # the same file reads with the default budget


def test_genuine_small_files_still_read_under_the_cap(tmp_path):
    import nibabel as nib

    data = np.arange(40 * 30 * 20, dtype=np.int16).reshape(40, 30, 20)
    nib.save(nib.Nifti1Image(data, np.eye(4)), tmp_path / "a.nii")
    nib.save(nib.Nifti1Image(data, np.eye(4)), tmp_path / "a.nii.gz")
    assert _read_limited(tmp_path / "a.nii")["ok"] == ["Image"]
    assert _read_limited(tmp_path / "a.nii.gz")["ok"] == ["Image"]
    # a label volume that compresses very well is not mistaken for a forged one
    nib.save(nib.Nifti1Image(np.zeros((256, 256, 256), np.uint8), np.eye(4)), tmp_path / "z.nii.gz")
    assert os.path.getsize(tmp_path / "z.nii.gz") * 1032 > 256**3
    assert _read_limited(tmp_path / "z.nii.gz")["ok"] == ["LabelMap"]


# ---------------------------------------------------------------------------------- DICOM
@pytest.mark.parametrize("frames", [1000, 1])
def test_dicom_radiograph_claiming_65535_squared_by_frames(tmp_path, frames):
    import pydicom

    p = write_radiograph(tmp_path / "r.dcm", np.zeros((40, 30), np.uint16))
    ds = pydicom.dcmread(p)
    ds.Rows, ds.Columns = 65535, 65535
    if frames > 1:
        ds.NumberOfFrames = frames
    ds.save_as(p)
    result = _read_limited(p)
    _assert_fast_refusal(result, p, f"{frames} frame(s) of 65535 x 65535", "holds only 2.34 KiB (2400 bytes)")


def test_dicom_radiograph_over_the_budget(tmp_path):
    p = write_radiograph(tmp_path / "r.dcm", np.zeros((400, 300), np.uint16))
    result = _read_limited(p, {"CXSEG_MAX_INPUT_BYTES": "200000"})
    _assert_fast_refusal(result, p, "more than the budget", "CXSEG_MAX_INPUT_BYTES")
    assert _read_limited(p)["ok"] == ["Image"]


def test_dicom_series_slice_claiming_a_huge_image(tmp_path):
    import pydicom

    files, _ = write_ct_series(tmp_path / "ct", n_slices=4)
    ds = pydicom.dcmread(files[2])
    ds.Rows, ds.Columns = 40000, 40000
    ds.save_as(files[2])
    for f in files:  # all slices share the size, so the series is otherwise regular
        if f != files[2]:
            d = pydicom.dcmread(f)
            d.Rows, d.Columns = 40000, 40000
            d.save_as(f)
    result = _read_limited(tmp_path / "ct")
    _assert_fast_refusal(result, files[0], "40000 x 40000", "holds only")


def test_dicom_series_over_the_budget(tmp_path):
    write_ct_series(tmp_path / "ct", n_slices=8, shape=(64, 64))
    result = _read_limited(tmp_path / "ct", {"CXSEG_MAX_INPUT_BYTES": "64K"})
    _assert_fast_refusal(result, tmp_path / "ct", "8 slice(s) of 64 x 64", "budget")
    assert _read_limited(tmp_path / "ct")["ok"] == ["Image"]


def test_dicom_seg_claiming_huge_frames(tmp_path):
    import pydicom

    from napari_cxseg.images import LabelClass, LabelMap
    from napari_cxseg.io.dicom_radiograph import read_radiograph
    from napari_cxseg.io.dicom_seg import write_dicom_seg

    src = write_radiograph(tmp_path / "cxr.dcm", np.zeros((40, 30), np.uint16))
    img = read_radiograph(src)
    lab = np.zeros((40, 30), np.uint8)
    lab[3:9, 4:12] = 1
    seg_path = tmp_path / "seg.dcm"
    write_dicom_seg(LabelMap(lab, img.geometry, {1: LabelClass("x")}), seg_path)
    ds = pydicom.dcmread(seg_path)
    ds.Rows, ds.Columns, ds.NumberOfFrames = 65535, 65535, 1000
    ds.save_as(seg_path)
    result = _read_limited(seg_path)
    _assert_fast_refusal(result, seg_path, "1000 frame(s) of 65535 x 65535", "holds only")


# ---------------------------------------------------------------------------------- PNG/JPEG
def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def test_png_header_claiming_100000_squared(tmp_path):
    ihdr = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 0, 0, 0, 0)
    data = (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", zlib.compress(b"\0" * 1000))
        + _png_chunk(b"IEND", b"")
    )
    path = tmp_path / "bomb.png"
    path.write_bytes(data)
    result = _read_limited(path)
    _assert_fast_refusal(result, path, "100000 x 100000", "can expand to at most")


def test_jpeg_header_claiming_65000_squared(tmp_path):
    from PIL import Image as PILImage

    path = tmp_path / "bomb.jpg"
    PILImage.fromarray(np.zeros((16, 16), np.uint8)).save(path, quality=90)
    raw = bytearray(path.read_bytes())
    sof = raw.index(b"\xff\xc0")  # baseline frame header: length, precision, height, width
    raw[sof + 5 : sof + 9] = struct.pack(">HH", 65000, 65000)
    path.write_bytes(bytes(raw))
    result = _read_limited(path)
    _assert_fast_refusal(result, path, "65000 x 65000")


def test_png_over_the_budget(tmp_path):
    from PIL import Image as PILImage

    path = tmp_path / "cxr.png"
    PILImage.fromarray(np.random.default_rng(0).integers(0, 255, (300, 300), np.uint8)).save(path)
    result = _read_limited(path, {"CXSEG_MAX_INPUT_BYTES": "100000"})
    _assert_fast_refusal(result, path, "300 x 300", "budget")
    assert _read_limited(path)["ok"] == ["Image"]


# ---------------------------------------------------------------------------------- MSD, sidecar
def test_msd_dataset_json_too_large(tmp_path, monkeypatch):
    from napari_cxseg.io import limits

    task = tmp_path / "Task09_Spleen"
    task.mkdir()
    (task / "dataset.json").write_text(json.dumps({"name": "x", "training": [], "pad": "x" * 5000}))
    monkeypatch.setattr(limits, "MAX_DATASET_JSON_BYTES", 4096)
    with pytest.raises(CxsegError, match=r"dataset\.json.*too large for an MSD dataset\.json"):
        io.read(task)


def test_sidecar_too_large_is_ignored(tmp_path, monkeypatch):
    import nibabel as nib

    from napari_cxseg.io import limits

    data = np.zeros((4, 4, 4), np.uint8)
    data[0] = 1
    path = tmp_path / "lab.nii.gz"
    nib.save(nib.Nifti1Image(data, np.eye(4)), path)
    (tmp_path / "lab.nii.gz.labels.json").write_text(json.dumps({"classes": {"1": "x" * 5000}}))
    monkeypatch.setattr(limits, "MAX_SIDECAR_BYTES", 1024)
    (lm,) = io.read(path)
    assert lm.classes[1].name == "class 1"
    assert "more than a sidecar may be" in lm.meta["sidecar"]["reason"]


# ---------------------------------------------------------------------------------- the budget
def test_budget_from_environment(monkeypatch):
    from napari_cxseg.io import limits

    monkeypatch.setenv("CXSEG_MAX_INPUT_BYTES", "8G")
    assert limits.max_input_bytes() == 8 << 30
    monkeypatch.setenv("CXSEG_MAX_INPUT_BYTES", "123456")
    assert limits.max_input_bytes() == 123456
    monkeypatch.setenv("CXSEG_MAX_INPUT_BYTES", "1.5MiB")
    assert limits.max_input_bytes() == 3 << 19
    monkeypatch.setenv("CXSEG_MAX_INPUT_BYTES", "lots")
    with pytest.raises(CxsegError, match="CXSEG_MAX_INPUT_BYTES='lots'"):
        limits.max_input_bytes()
    monkeypatch.delenv("CXSEG_MAX_INPUT_BYTES")
    mem = limits.physical_memory()
    expected = int(mem * limits.DEFAULT_FRACTION) if mem else limits.FALLBACK_BYTES
    assert limits.max_input_bytes() == expected
