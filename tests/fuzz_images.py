"""Fuzz cases for the NIfTI reader, and damaged label sidecars (see :mod:`fuzz_cases`).

Seeds: a crop of the sample chest CT and of its label map (with a keyed sidecar), and nibabel's
own test files (NIfTI-2, big-endian, 4D, float).
"""

from __future__ import annotations

import functools
import io
import json
import struct
import zlib
from pathlib import Path

import numpy as np

from fuzz_cases import Builder, Case, byte_variants, gz, gzip_variants, link_cases, sparse_file

SAMPLE = Path(__file__).resolve().parent.parent / "src" / "napari_cxseg" / "sample_data"
KERMANY = Path(__file__).resolve().parent / "data" / "kermany_cxr"
NAN, INF = float("nan"), float("inf")


# ------------------------------------------------------------------------------ sidecars
def sidecar_variants(name: str, data: bytes, good: dict) -> list[tuple[str, bytes | None, str | None]]:
    """``(what, sidecar bytes, link target)`` for the file ``name`` holding ``data``."""
    import hashlib

    keyed = {**good, "file": name, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}

    def j(d: object) -> bytes:
        return json.dumps(d).encode()

    return [
        ("a matching keyed sidecar", j(keyed), None),
        ("sidecar: invalid JSON", j(keyed)[:-7], None),
        ("sidecar: a JSON list", b"[1, 2, 3]", None),
        ("sidecar: not UTF-8", b"\xff\xfe\x00{" * 10, None),
        ("sidecar: classes a list", j({**keyed, "classes": [1, 2]}), None),
        ("sidecar: class ids not numbers", j({**keyed, "classes": {"a": {"name": "x"}}}), None),
        ("sidecar: class values numbers", j({**keyed, "classes": {"1": 5, "2": None}}), None),
        ("sidecar: negative and huge class ids", j({**keyed, "classes": {"-1": "x", "99999999999999999999": "y"}}), None),
        ("sidecar: class name a dict, colour a number", j({**keyed, "classes": {"1": {"name": {"a": 1}, "colour": 7}}}), None),
        ("sidecar: geometry a string", j({**keyed, "geometry": "up"}), None),
        ("sidecar: geometry with NaN affine", j({**keyed, "geometry": {"affine": [[NAN] * 3] * 3, "disk_ornt": [[0, 1], [1, -1]], "disk_shape": [1, 1]}}), None),
        ("sidecar: geometry with junk", j({**keyed, "geometry": {"affine": "x", "spacing": [0, -1], "disk_ornt": [[5, 5], [9, 9]], "disk_shape": "ab", "source": 4}}), None),
        ("sidecar: reference_image a list", j({**keyed, "reference_image": [1, {"a": 2}]}), None),
        ("sidecar: file a list, size a string", j({**good, "file": [name], "size": "big"}), None),
        ("sidecar: keyed to another file", j({**keyed, "file": "other.png"}), None),
        ("sidecar: wrong sha256", j({**keyed, "sha256": "00" * 32}), None),
        ("sidecar: deeply nested JSON", b"[" * 100000 + b"]" * 100000, None),
        ("sidecar: a link to /dev/zero", None, "/dev/zero"),
        ("sidecar: a link out of the folder to a missing file", None, "../../no-such-sidecar.json"),
        ("sidecar: 17 MiB (sparse)", b"", "sparse"),
    ]


def add_sidecar_cases(b: Builder, name: str, data: bytes, good: dict, suffix: str = ".labels.json") -> None:
    """One case per :func:`sidecar_variants` entry: the file and its damaged sidecar."""
    for what, sc, target in sidecar_variants(name, data, good):
        d = b.folder()
        p = d / name
        p.write_bytes(data)
        s = d / (name + suffix)
        if target == "sparse":
            sparse_file(s, 17 << 20, b'{"classes": {')
        elif target is not None:
            s.symlink_to(target)
        else:
            s.write_bytes(sc)
        b.add(what, p, d)


# ------------------------------------------------------------------------------ NIfTI
@functools.lru_cache
def _nifti_seeds() -> list[tuple[str, bytes, bool]]:
    """``(name, uncompressed single-file bytes, write gzipped)`` of the seeds."""
    import nibabel as nib
    from nibabel.testing import data_path

    ct = nib.load(SAMPLE / "chest_ct.nii.gz")
    crop = (slice(78, 102), slice(60, 80), slice(30, 36))
    ct_small = ct.slicer[crop]
    ct_small = nib.Nifti1Image(np.asarray(ct_small.dataobj), ct_small.affine, ct_small.header)
    lab = nib.load(SAMPLE / "chest_ct_labels.nii.gz").slicer[crop]
    lab = nib.Nifti1Image(np.asarray(lab.dataobj).astype(np.uint8), lab.affine, lab.header)
    scaled = nib.Nifti1Image(np.asarray(ct_small.dataobj).astype(np.int16), ct_small.affine)
    scaled.header.set_slope_inter(0.5, -100.0)
    seeds = [("chest_ct.nii", ct_small.to_bytes(), False),
             ("chest_ct.nii.gz", ct_small.to_bytes(), True),
             ("chest_ct_labels.nii.gz", lab.to_bytes(), True),
             ("ct_scaled.nii", scaled.to_bytes(), False)]
    for name in ("standard.nii.gz", "example_nifti2.nii.gz", "anatomical.nii",
                 "functional.nii", "reoriented_anat_moved.nii"):
        raw = Path(data_path, name).read_bytes()
        if name.endswith(".gz"):
            raw = zlib.decompress(raw, 31)
        seeds.append((name, raw, name.endswith(".gz")))
    return seeds


def _field_mutations() -> list[tuple[str, object]]:
    """``(field or field[index], value)`` header changes."""
    out: list[tuple[str, object]] = []
    out += [("dim[0]", v) for v in (0, -1, 1, 2, 5, 7, 8, 9, 100)]
    out += [("dim[1]", v) for v in (0, -1, -32768, 32767, 2)]
    out += [("dim[2]", v) for v in (32767, 0, 1)]
    out += [("dim[3]", v) for v in (0, -5, 32767, 1000)]
    out += [("dim[4]", v) for v in (0, 2, 32767)]
    out += [("dim[5]", 1000), ("dim[1:4]", 32767), ("dim[1:8]", 1000)]
    out += [("datatype", v) for v in (0, 1, 2, 3, 4, 8, 16, 32, 64, 128, 256, 512, 768, 1024,
                                      1280, 1536, 1792, 2048, 2304, 9999)]
    out += [("bitpix", v) for v in (0, 3, 128, -8)]
    out += [("pixdim[1]", v) for v in (0.0, -2.0, NAN, INF, 1e-30, 1e30)]
    out += [("pixdim[2]", v) for v in (0.0, -1.0, NAN)]
    out += [("pixdim[3]", v) for v in (0.0, -INF, NAN)]
    out += [("pixdim[0]", v) for v in (0.0, -1.0, 2.0, NAN)]
    out += [("pixdim[1:4]", 0.0), ("pixdim[1:4]", -1.0), ("pixdim[4]", NAN)]
    out += [("vox_offset", v) for v in (0.0, 1.0, 100.0, 347.0, 353.0, 1e6, 1e9, -352.0, NAN,
                                        INF, 2.0**62)]
    out += [("scl_slope", v) for v in (NAN, INF, -INF, 0.0, -1.0, 1e38, 1e-38)]
    out += [("scl_inter", v) for v in (NAN, INF, 1e38)]
    out += [("qform_code", v) for v in (0, 3, 5, 99, -1, 32767)]
    out += [("sform_code", v) for v in (0, 2, 4, 99, -1)]
    out += [("quatern_b", v) for v in (1.0, 2.0, -3.0, NAN, INF)]
    out += [("quatern_d", NAN), ("qoffset_x", NAN), ("qoffset_y", INF), ("qoffset_z", 1e38)]
    out += [("srow_x", v) for v in (0.0, NAN, INF, 1e38)]
    out += [("srow_y", 0.0), ("srow_z", NAN), ("srow_all", 0.0), ("srow_same", 1.0)]
    out += [("sizeof_hdr", v) for v in (0, 1, 347, 349, 540, 2**31 - 1, -1)]
    out += [("sizeof_hdr=540+dim[1:4]", 32767)]
    out += [("magic", v) for v in (b"ni1", b"n+2", b"xyz", b"")]
    out += [("intent_code", v) for v in (1002, 1007, 2003, 2004, 2005, 9999)]
    out += [("intent_p1", NAN), ("xyzt_units", 0), ("xyzt_units", 255), ("xyzt_units", 3)]
    out += [("cal_max", NAN), ("cal_min", INF), ("slice_code", 255), ("slice_end", 32767),
            ("dim_info", 255), ("qform_code+sform_code", 0)]
    return out


def _apply(hdr, fld: str, value) -> None:
    """Set one header field (``name``, ``name[i]``, ``name[a:b]`` or a combined rule)."""
    if fld == "srow_all":
        for k in ("srow_x", "srow_y", "srow_z"):
            hdr[k] = value
    elif fld == "srow_same":
        hdr["srow_y"] = hdr["srow_x"]
        hdr["srow_z"] = hdr["srow_x"]
    elif fld == "sizeof_hdr=540+dim[1:4]":  # a NIfTI-1 header nibabel reads as NIfTI-2
        _apply(hdr, "dim[1:4]", value)
        hdr["sizeof_hdr"] = 540
    elif fld == "qform_code+sform_code":
        hdr["qform_code"] = value
        hdr["sform_code"] = value
    elif "[" in fld:
        name, idx = fld[:-1].split("[")
        arr = hdr[name].copy()
        if ":" in idx:
            a, b = (int(x) for x in idx.split(":"))
            arr[a:b] = value
        else:
            arr[int(idx)] = value
        hdr[name] = arr
    else:
        hdr[fld] = value


def _mutated_header(raw: bytes, changes: list[tuple[str, object]]) -> bytes | None:
    import nibabel as nib

    size = 540 if raw[:4] in ((540).to_bytes(4, "little"), (540).to_bytes(4, "big")) else 348
    cls = nib.Nifti2Header if size == 540 else nib.Nifti1Header
    hdr = cls.from_fileobj(io.BytesIO(raw[:size]), check=False)
    try:
        with np.errstate(all="ignore"):
            for fld, value in changes:
                _apply(hdr, fld, value)
    except (ValueError, TypeError, OverflowError, KeyError):
        return None  # the field cannot hold that value in this header version
    return hdr.binaryblock + raw[size:]


def nifti_cases(root: Path) -> list[Case]:
    """NIfTI inputs (``io.read``), about 360."""
    b = Builder(root, "nifti", seed=1)
    seeds = _nifti_seeds()

    def emit(what: str, name: str, raw: bytes, gzipped: bool, **kw) -> None:
        b.file_case(what, name, gz(raw) if gzipped else raw, **kw)

    muts = _field_mutations()
    for k, (fld, value) in enumerate(muts):
        name, raw, gzipped = seeds[k % len(seeds)]
        out = _mutated_header(raw, [(fld, value)])
        if out is None:
            name, raw, gzipped = seeds[0]
            out = _mutated_header(raw, [(fld, value)])
        if out is not None:
            emit(f"{name}: {fld} = {value!r}", name, out, gzipped)
    rng = b.rng
    while len(b.cases) < 250:  # combinations: wrong dims with wrong dtype, spacing and offset
        name, raw, gzipped = rng.choice(seeds)
        changes = rng.sample(muts, rng.randint(2, 3))
        out = _mutated_header(raw, changes)
        if out is not None:
            emit(f"{name}: " + ", ".join(f"{f} = {v!r}" for f, v in changes), name, out, gzipped)
    for name, raw, gzipped in seeds:
        header = 540 if "nifti2" in name else 352
        for what, out in byte_variants(rng, raw, header, 7):
            emit(f"{name}: {what}", name, out, gzipped)
    for name, raw, _ in (seeds[1], seeds[2]):
        for what, out in gzip_variants(raw):
            b.file_case(f"{name}: {what}", name, out)
    name, raw, _ = seeds[0]
    b.file_case("extension flag set, no extension", name, raw[:348] + b"\x01\x00\x00\x00" + raw[352:])
    hdr368 = _mutated_header(raw[:352], [("vox_offset", 368.0)])[:348] + b"\x01\x00\x00\x00"
    for esize, ecode in ((16, 0), (16, 2), (16, 4), (0, 0), (7, 0), (-16, 0), (32, 0),
                         (1 << 30, 0), (2**31 - 1, 6)):
        ext = hdr368 + struct.pack("<ii", esize, ecode) + b"\x00" * 8 + raw[352:]
        b.file_case(f"header extension of esize {esize}, ecode {ecode}", name, ext)
        if esize > 1 << 20:
            b.file_case(f"header extension of esize {esize} (gzip)", name + ".gz", gz(ext))
    b.file_case("header only (no voxels)", name, raw[:352])
    b.file_case("header byte-swapped, voxels not", name, _swapped(raw))
    b.file_case(".nii.gz name, uncompressed", "chest_ct.nii.gz", raw)
    b.file_case(".nii name, gzipped", "chest_ct.nii", gz(raw))
    d = b.folder()
    big = _mutated_header(raw[:352], [("dim[1]", 2048), ("dim[2]", 2048), ("dim[3]", 200)])
    sparse_file(d / "huge.nii", 3 << 30, big)
    b.add("a 2048 x 2048 x 200 header in a 3 GiB (sparse) file", d / "huge.nii", d)
    for opts in ({"as_labels": True}, {"as_labels": False}, {"channel_names": ["a"]},
                 {"channel_names": "abc"}, {"modality": 5}):
        for name, raw, gzipped in (seeds[0], seeds[2], seeds[5]):
            emit(f"{name} read with {opts}", name, raw, gzipped, options=opts)
    lab_name, lab_raw, _ = seeds[2]
    good = {"classes": {str(i): {"name": f"organ {i}", "colour": "#1f77b4"} for i in range(1, 12)}}
    add_sidecar_cases(b, lab_name, gz(lab_raw), good)
    link_cases(b, "linked.nii.gz", SAMPLE / "chest_ct_labels.nii.gz")
    return b.cases


def _swapped(raw: bytes) -> bytes:
    import nibabel as nib

    hdr = nib.Nifti1Header.from_fileobj(io.BytesIO(raw[:348]), check=False)
    return hdr.as_byteswapped().binaryblock + raw[348:]
