"""Fuzz cases for the DICOM series and radiograph readers (see :mod:`fuzz_cases`).

Seeds: pydicom's real test files (CT_small, MR_small in four encodings, secondary captures in
RLE, JPEG and deflate) and the files ``dicom_factory`` writes (a 4-slice CT series, DX/CR/RGB
radiographs). Mutations set header elements to raw bytes of any VR and value (so that values
pydicom would refuse to write, like ``PixelSpacing = abc\\nan``, still reach the readers),
change the transfer syntax under unchanged data, damage the pixel data, mix, drop and duplicate
slices, and damage bytes.
"""

from __future__ import annotations

import contextlib
import copy
import io
import shutil
import struct
import warnings
from pathlib import Path

from fuzz_cases import Builder, Case, byte_variants, link_cases

SEG_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"
DX_CLASS = "1.2.840.10008.5.1.4.1.1.1.1"
DICOMDIR_CLASS = "1.2.840.10008.1.3.10"
_NUMERIC = {"US": "<H", "SS": "<h", "UL": "<I", "SL": "<i", "FL": "<f", "FD": "<d"}

#: ``(keyword, VR, values)`` set as raw element bytes.
IMAGE_MUTATIONS: list[tuple[str, str, list]] = [
    ("Rows", "US", [0, 1, 65535, 17]),
    ("Columns", "US", [0, 65535, 15]),
    ("BitsAllocated", "US", [0, 1, 7, 8, 12, 32, 64, 65535]),
    ("BitsStored", "US", [0, 17, 64, 65535]),
    ("HighBit", "US", [0, 31, 65535]),
    ("PixelRepresentation", "US", [1, 2, 65535]),
    ("SamplesPerPixel", "US", [0, 2, 3, 4, 65535]),
    ("PlanarConfiguration", "US", [1, 7]),
    ("PhotometricInterpretation", "CS", ["MONOCHROME1", "RGB", "YBR_FULL", "PALETTE COLOR", "", "HSV"]),
    ("NumberOfFrames", "IS", ["0", "-1", "2", "abc", "99999999", "1.5", ""]),
    ("PixelSpacing", "DS", ["0\\0", "-1\\-1", "nan\\nan", "inf\\1", "abc\\1", "1", "1\\2\\3", "",
                            "1e308\\1e308", "1e-300\\1"]),
    ("ImageOrientationPatient", "DS", ["0\\0\\0\\0\\0\\0", "1\\0\\0\\1\\0\\0", "nan\\0\\0\\0\\1\\0",
                                       "1\\0\\0", "1\\0\\0\\0\\1\\0\\5", "abc", "", "1e308\\0\\0\\0\\1e308\\0",
                                       "inf\\0\\0\\0\\1\\0"]),
    ("ImagePositionPatient", "DS", ["nan\\0\\0", "inf\\inf\\inf", "1\\2", "", "abc\\0\\0",
                                    "1e308\\1e308\\1e308"]),
    ("SliceThickness", "DS", ["0", "-5", "nan", "abc", "1e308"]),
    ("SpacingBetweenSlices", "DS", ["0", "-2.5", "nan", "inf"]),
    ("RescaleSlope", "DS", ["0", "-1", "nan", "inf", "abc", "1e308", ""]),
    ("RescaleIntercept", "DS", ["nan", "-inf", "abc", "1e308"]),
    ("WindowCenter", "DS", ["nan", "abc", "", "1\\2\\3"]),
    ("WindowWidth", "DS", ["0", "-10", "nan", "inf", "abc"]),
    ("SeriesInstanceUID", "UI", ["", "1.2.3", "9" * 64]),
    ("SOPClassUID", "UI", [SEG_CLASS, DX_CLASS, DICOMDIR_CLASS, "", "9.9"]),
    ("Modality", "CS", ["SEG", "DX", "CR", "", "MG", "??"]),
    ("PatientOrientation", "CS", ["R\\F", "L\\L", "X\\Y", "L", "L\\F\\A", "", "\u00ff\u00fe"]),
    ("ViewPosition", "CS", ["LL", "AP", "", "ZZZ"]),
    ("ImageLaterality", "CS", ["R", "Q"]),
    ("ImagerPixelSpacing", "DS", ["0\\0", "nan\\1", "abc", "-1\\-1"]),
    ("EstimatedRadiographicMagnificationFactor", "DS", ["0", "nan", "abc", "-1"]),
    ("VOILUTFunction", "CS", ["SIGMOID", "LINEAR_EXACT", "BOGUS"]),
]
TRANSFER_SYNTAXES = [
    ("JPEG baseline", "1.2.840.10008.1.2.4.50"), ("RLE", "1.2.840.10008.1.2.5"),
    ("implicit VR", "1.2.840.10008.1.2"), ("big endian", "1.2.840.10008.1.2.2"),
    ("deflate", "1.2.840.10008.1.2.1.99"), ("JPEG 2000", "1.2.840.10008.1.2.4.90"),
    ("unknown", "1.2.3.4"), ("empty", ""),
]


# ------------------------------------------------------------------------------ helpers
def set_raw(ds, keyword: str, vr: str, value) -> None:
    """Set an element to raw bytes (no validation), so any value reaches the reader."""
    from pydicom.datadict import tag_for_keyword
    from pydicom.dataelem import RawDataElement
    from pydicom.tag import Tag

    tag = Tag(tag_for_keyword(keyword))
    if vr in _NUMERIC and not isinstance(value, bytes):
        data = struct.pack(_NUMERIC[vr], value)
    else:
        data = value.encode("latin-1") if isinstance(value, str) else bytes(value)
        if len(data) % 2:
            data += b"\x00" if vr == "UI" else b" "
    ds[tag] = RawDataElement(tag, vr, len(data), data, 0, False, True)


def to_bytes(ds) -> bytes:
    """The dataset as a DICOM file (no validation)."""
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds.save_as(buf, enforce_file_format=False)
    return buf.getvalue()


def with_transfer_syntax(data: bytes, uid: str) -> bytes:
    """The file with its meta header claiming ``uid``, the data set left as it was encoded."""
    import pydicom
    from pydicom.filewriter import write_file_meta_info

    group_len = struct.unpack("<I", data[140:144])[0]
    body = data[144 + group_len:]
    meta = copy.deepcopy(pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True).file_meta)
    set_raw(meta, "TransferSyntaxUID", "UI", uid)
    buf = io.BytesIO()
    buf.write(b"\x00" * 128 + b"DICM")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        write_file_meta_info(buf, meta, enforce_standard=False)
    return buf.getvalue() + body


@contextlib.contextmanager
def patched(changes: list[tuple]):
    """Datasets with elements set to raw values (``(ds, keyword, VR, value)``), put back after
    (deep copies of every seed for every case made the generation slow)."""
    from pydicom.datadict import tag_for_keyword

    saved = []
    for ds, keyword, vr, value in changes:
        tag = tag_for_keyword(keyword)
        saved.append((ds, tag, ds.get_item(tag) if tag in ds else None))
        set_raw(ds, keyword, vr, value)
    try:
        yield
    finally:
        for ds, tag, old in reversed(saved):
            if old is None:
                del ds[tag]
            else:
                ds[tag] = old


def mutated(ds, keyword: str, vr: str, value) -> bytes:
    with patched([(ds, keyword, vr, value)]):
        return to_bytes(ds)


def pixel_variants(ds) -> list[tuple[str, bytes]]:
    """The pixel data shortened, lengthened, emptied, removed, or given as float pixel data."""
    px = bytes(ds.PixelData)
    out = []
    for what, value in (("empty", b""), ("half", px[: len(px) // 2]), ("doubled", px * 2),
                        ("one byte", b"\x00\x01"), ("odd length", px[:-1])):
        d = copy.deepcopy(ds)
        set_raw(d, "PixelData", "OW" if ds.get("BitsAllocated", 8) > 8 else "OB", value)
        out.append((f"PixelData {what}", to_bytes(d)))
    d = copy.deepcopy(ds)
    del d.PixelData
    out.append(("no PixelData", to_bytes(d)))
    d = copy.deepcopy(ds)
    del d.PixelData
    set_raw(d, "FloatPixelData", "OF", px[: len(px) // 4 * 4])
    out.append(("FloatPixelData instead of PixelData", to_bytes(d)))
    return out


def lut_variants(ds) -> list[tuple[str, bytes]]:
    """Modality and VOI LUT sequences with wrong descriptors or data."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    out = []
    for what, desc, lut in (("descriptor 0\\0\\0", [0, 0, 0], b""), ("4096 entries, 3 given", [4096, 0, 16], b"\x01\x00" * 3),
                            ("descriptor of 2 values", [16, 0], b"\x01\x00" * 16), ("64-bit entries", [16, 0, 64], b"\x01" * 32)):
        for seq in ("VOILUTSequence", "ModalityLUTSequence"):
            d = copy.deepcopy(ds)
            item = Dataset()
            set_raw(item, "LUTDescriptor", "US", b"".join(struct.pack("<H", v & 0xFFFF) for v in desc))
            set_raw(item, "LUTData", "OW", lut)
            setattr(d, seq, Sequence([item]))
            out.append((f"{seq}: {what}", to_bytes(d)))
    d = copy.deepcopy(ds)
    d.VOILUTSequence = Sequence([])
    out.append(("VOILUTSequence empty", to_bytes(d)))
    return out


def _testdata(name: str) -> Path:
    from pydicom.data import get_testdata_file

    return Path(get_testdata_file(name))


# ------------------------------------------------------------------------------ series
def _series_seed(tmp: Path) -> list:
    import pydicom

    from dicom_factory import write_ct_series

    files, _ = write_ct_series(tmp / "seed-series", n_slices=4, shape=(16, 16))
    return [pydicom.dcmread(f) for f in files]


def _write_series(b: Builder, what: str, datas: list[tuple[str, bytes]], entry: str = "folder") -> None:
    d = b.folder()
    for name, data in datas:
        (d / name).write_bytes(data)
    if entry == "folder":
        b.add(what, d, d, names=[d.name])
    elif entry == "file":
        p = d / datas[0][0]
        b.add(f"{what} (opened by its first file)", p, d, names=[p.name, d.name])
    else:
        b.add(f"{what} (opened as a list of files)", d / datas[0][0], d, names=[d.name],
              options={"_files": [str(d / n) for n, _ in datas]})


def series_cases(root: Path) -> list[Case]:
    """DICOM series inputs (``io.read`` of a folder, a slice or a list of slices), about 310."""
    b = Builder(root, "dicom-series", seed=3)
    seed = _series_seed(b.root.parent / "_seeds")
    names = [f"ct{k + 1:03d}.dcm" for k in range(len(seed))]
    good = [to_bytes(ds) for ds in seed]
    rng = b.rng
    entries = ("folder", "folder", "file", "list")
    k = 0
    for keyword, vr, values in IMAGE_MUTATIONS:
        for value in values:
            which = rng.randrange(len(seed))
            datas = list(zip(names, good, strict=True))
            datas[which] = (names[which], mutated(seed[which], keyword, vr, value))
            if rng.random() < 0.3:  # the same change in every slice
                datas = [(n, mutated(ds, keyword, vr, value)) for n, ds in zip(names, seed, strict=True)]
            _write_series(b, f"{keyword} = {value!r} in {names[which]}", datas, entries[k % 4])
            k += 1
    flat = [(kw, vr, v) for kw, vr, values in IMAGE_MUTATIONS for v in values]
    for _ in range(70):  # two wrong values at once, in one slice or two
        (k1, vr1, v1), (k2, vr2, v2) = rng.sample(flat, 2)
        i, j = rng.randrange(len(seed)), rng.randrange(len(seed))
        datas = list(zip(names, good, strict=True))
        if i == j:
            with patched([(seed[i], k1, vr1, v1), (seed[i], k2, vr2, v2)]):
                datas[i] = (names[i], to_bytes(seed[i]))
        else:
            datas[j] = (names[j], mutated(seed[j], k2, vr2, v2))
            datas[i] = (names[i], mutated(seed[i], k1, vr1, v1))
        _write_series(b, f"{k1} = {v1!r} in {names[i]}, {k2} = {v2!r} in {names[j]}", datas, entries[k % 4])
        k += 1
    for what, uid in TRANSFER_SYNTAXES:
        datas = list(zip(names, good, strict=True))
        datas[1] = (names[1], with_transfer_syntax(good[1], uid))
        _write_series(b, f"transfer syntax {what} over explicit VR data in {names[1]}", datas)
    for what, data in pixel_variants(seed[2]) + lut_variants(seed[2]):
        _write_series(b, f"{what} in {names[2]}", [*zip(names[:2], good[:2], strict=True), (names[2], data), (names[3], good[3])])
    base = list(zip(names, good, strict=True))
    other = copy.deepcopy(seed[0])
    set_raw(other, "SeriesInstanceUID", "UI", "1.2.826.0.1.3680043.99.1")
    coronal = mutated(seed[3], "ImageOrientationPatient", "DS", "1\\0\\0\\0\\0\\-1")
    small = copy.deepcopy(seed[1])
    import numpy as np

    small.set_pixel_data(np.zeros((8, 8), np.uint16), "MONOCHROME2", 12)
    shifted = mutated(seed[2], "ImagePositionPatient", "DS", "0\\40\\35")
    structural = [
        ("a slice missing", base[:2] + base[3:]),
        ("a slice duplicated under another name", base + [("dup.dcm", good[1])]),
        ("all slices at one position", [(n, mutated(seed[0], "InstanceNumber", "IS", str(i))) for i, n in enumerate(names)]),
        ("a slice of another series", base + [("other.dcm", to_bytes(other))]),
        ("a coronal slice among axial ones", base[:3] + [(names[3], coronal)]),
        ("an 8 x 8 slice among 16 x 16 ones", [base[0], (names[1], to_bytes(small))] + base[2:]),
        ("mixed pixel spacing", base[:3] + [(names[3], mutated(seed[3], "PixelSpacing", "DS", "0.5\\0.5"))]),
        ("a slice off the line", base[:2] + [(names[2], shifted), base[3]]),
        ("two slices only", base[:2]),
        ("one slice only", base[:1]),
        ("a text file among the slices", base + [("notes.dcm", b"not dicom\n" * 20)]),
        ("an empty file among the slices", base + [("empty.dcm", b"")]),
        ("a DICOMDIR among the slices", base + [("DICOMDIR", mutated(seed[0], "SOPClassUID", "UI", DICOMDIR_CLASS))]),
        ("a truncated slice", base[:3] + [(names[3], good[3][:400])]),
        ("only junk files", [("a.dcm", b"\x00" * 200), ("b.dcm", b"DICM" * 50)]),
        ("300 empty files", [(f"e{i:03d}.dcm", b"") for i in range(300)]),
        ("files without preamble", [(n, g[128:]) for n, g in base]),
    ]
    for what, datas in structural:
        for entry in ("folder", "file"):
            _write_series(b, what, datas, entry)
    for path, name in ((_testdata("CT_small.dcm"), "CT_small.dcm"), (_testdata("MR_small_implicit.dcm"), "MR.dcm"),
                       (_testdata("MR_small_bigendian.dcm"), "MR_be.dcm"), (_testdata("MR_small_RLE.dcm"), "MR_rle.dcm")):
        data = path.read_bytes()
        for what, out in byte_variants(rng, data, 1200, 6):
            _write_series(b, f"{name}: {what}", [(name, out)], "file")
    for k, (n, g) in enumerate(base):
        for what, out in byte_variants(rng, g, 700, 3):
            _write_series(b, f"{n}: {what}", base[:k] + [(n, out)] + base[k + 1:])
    _enhanced_cases(b, seed)
    d = b.folder()
    for n, g in base[:3]:
        (d / n).write_bytes(g)
    (d / "outside.dcm").symlink_to(_testdata("CT_small.dcm"))
    (d / "zero.dcm").symlink_to("/dev/zero")
    (d / "sub").mkdir()
    shutil.copy(d / names[0], d / "sub" / names[0])
    b.add("links out of the folder (a real slice elsewhere, /dev/zero) and a sub-folder", d, d, names=[d.name])
    link_cases(b, "linked.dcm", _testdata("CT_small.dcm"))
    return b.cases


_ENHANCED: list = []


def enhanced_seed(seed: list):
    """An enhanced multi-frame CT: highdicom's legacy conversion of the seed series (made once)."""
    import highdicom as hd
    from pydicom.uid import generate_uid

    if not _ENHANCED:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _ENHANCED.append(hd.legacy.LegacyConvertedEnhancedCTImage(
                legacy_datasets=seed, series_instance_uid=generate_uid(), series_number=2,
                sop_instance_uid=generate_uid(), instance_number=1))
    return _ENHANCED[0]


def _enhanced_cases(b: Builder, seed: list) -> None:
    """The enhanced multi-frame CT of :func:`enhanced_seed`, damaged."""
    from fuzz_seg import structural

    enh = enhanced_seed(seed)
    flat = [(kw, vr, v) for kw, vr, values in IMAGE_MUTATIONS[:20] for v in values]
    for kw, vr, v in b.rng.sample(flat, 24):
        b.file_case(f"enhanced CT: {kw} = {v!r}", "enhanced.dcm", mutated(enh, kw, vr, v))
    for what, d in structural(enh)[:12]:
        b.file_case(f"enhanced CT: {what}", "enhanced.dcm", to_bytes(d))
    for what, data in byte_variants(b.rng, to_bytes(enh), 1500, 8):
        b.file_case(f"enhanced CT: {what}", "enhanced.dcm", data)


# ------------------------------------------------------------------------------ radiographs
def radiograph_seeds(tmp: Path) -> list[tuple[str, object]]:
    """``(name, dataset)``: factory DX/CR/RGB radiographs and pydicom's secondary captures."""
    import numpy as np
    import pydicom

    from dicom_factory import write_radiograph

    rng = np.random.default_rng(5)
    films = [
        ("dx.dcm", dict(window=(2000, 4000))),
        ("cr_mono1.dcm", dict(photometric="MONOCHROME1", modality="CR", intercept=-10, slope=2)),
        ("mirrored.dcm", dict(patient_orientation="R\\F", view_position="AP", spacing_tag="PixelSpacing")),
        ("sigmoid.dcm", dict(window=(1500, 3000), voi_lut_function="SIGMOID", spacing_tag=None)),
    ]
    out = []
    for name, kw in films:
        p = write_radiograph(tmp / name, rng.integers(0, 4095, (48, 40), dtype=np.uint16), **kw)
        out.append((name, pydicom.dcmread(p)))
    p = write_radiograph(tmp / "rgb.dcm", rng.integers(0, 255, (24, 20, 3), dtype=np.uint8),
                         photometric="RGB", modality="OT")
    out.append(("rgb.dcm", pydicom.dcmread(p)))
    for name in ("SC_rgb_small_odd.dcm", "SC_rgb_rle.dcm", "SC_rgb_jpeg_dcmtk.dcm"):
        out.append((name, pydicom.dcmread(_testdata(name))))
    return out


def radiograph_cases(root: Path) -> list[Case]:
    """DICOM radiograph inputs (``io.read`` of one file), about 330."""
    b = Builder(root, "radiograph", seed=4)
    seeds = radiograph_seeds(b.root.parent / "_seeds")
    rng = b.rng
    k = 0
    for keyword, vr, values in IMAGE_MUTATIONS:
        if keyword in ("ImageOrientationPatient", "ImagePositionPatient", "SliceThickness", "SpacingBetweenSlices"):
            values = values[:2]
        for value in values:
            name, ds = seeds[k % 5] if k % 3 else seeds[k % len(seeds)]
            b.file_case(f"{name}: {keyword} = {value!r}", name, mutated(ds, keyword, vr, value))
            k += 1
    flat = [(kw, vr, v) for kw, vr, values in IMAGE_MUTATIONS for v in values]
    for _ in range(80):  # two wrong values at once
        name, ds = rng.choice(seeds)
        (k1, vr1, v1), (k2, vr2, v2) = rng.sample(flat, 2)
        with patched([(ds, k1, vr1, v1), (ds, k2, vr2, v2)]):
            b.file_case(f"{name}: {k1} = {v1!r}, {k2} = {v2!r}", name, to_bytes(ds))
    for name, ds in seeds[:2]:
        data = to_bytes(ds)
        for what, uid in TRANSFER_SYNTAXES:
            b.file_case(f"{name}: transfer syntax {what} over explicit VR data", name, with_transfer_syntax(data, uid))
        for what, out in pixel_variants(ds) + lut_variants(ds):
            b.file_case(f"{name}: {what}", name, out)
    for name, ds in seeds:
        for what, out in byte_variants(rng, to_bytes(ds), 600, 6):
            b.file_case(f"{name}: {what}", name, out)
    name, ds = seeds[0]
    for keyword, vr, value in (("Rows", "US", 65535), ("Columns", "US", 65535), ("NumberOfFrames", "IS", "1000")):
        d = copy.deepcopy(ds)
        set_raw(d, "Rows", "US", 65535)
        set_raw(d, keyword, vr, value)
        b.file_case(f"{name}: Rows = 65535, {keyword} = {value!r}", name, to_bytes(d))
    link_cases(b, "linked.dcm", _testdata("SC_rgb_small_odd.dcm"))
    return b.cases
