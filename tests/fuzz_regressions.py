"""The inputs that broke a reader when the fuzz suite first ran, one named case per bug.

Each is run with the fuzz cases (same child, same address-space limit) and must be refused with
a message holding the given words (no words: read or refused, but neither a crash nor memory).
``(case, words)`` pairs; the case's ``mutation`` says what the bug was and where it was fixed.
"""

from __future__ import annotations

import copy
import json
import struct
from pathlib import Path

from fuzz_cases import Builder, Case, gz


def regression_cases(root: Path) -> list[tuple[Case, str]]:
    """The regression cases and the words each refusal must contain."""
    from fuzz_bundle import NAME, bundle_files, make_zip
    from fuzz_dicom import _series_seed, radiograph_seeds, set_raw, to_bytes
    from fuzz_images import _mutated_header, _nifti_seeds

    b = Builder(root, "regression", seed=11)
    out: list[tuple[Case, str]] = []

    def add(case: Case, words: str) -> None:
        out.append((case, words))

    raw = {n: r for n, r, _ in _nifti_seeds()}["chest_ct.nii"]
    add(b.file_case("nifti_header: a NIfTI-1 header with sizeof_hdr 540 (nibabel reads it as NIfTI-2) "
                    "skipped the size check; 32767^3 voxels were allocated (check_loaded_header)",
                    "ct.nii", _mutated_header(raw, [("sizeof_hdr=540+dim[1:4]", 32767)])), "header describes")
    hdr = _mutated_header(raw[:352], [("vox_offset", 368.0)])[:348] + b"\x01\x00\x00\x00"
    add(b.file_case("nifti_header: a header extension claiming 2 GiB was allocated by nibabel before it "
                    "was read (_check_extensions)", "ct.nii.gz",
                    gz(hdr + struct.pack("<ii", 2**31 - 1, 6) + bytes(8) + raw[352:])), "header extension")
    sc = b.folder()
    (sc / "ct.nii").write_bytes(raw)
    (sc / "ct.nii.labels.json").write_bytes(b"[" * 100000 + b"]" * 100000)
    case = b.add("sidecar/documents: a sidecar nested 100000 deep raised RecursionError "
                 "(documents.parse_json)", sc / "ct.nii", sc)
    add(case, "")  # read, the sidecar ignored with a reason
    d = b.folder()
    (d / "zero.dcm").symlink_to("/dev/zero")
    add(b.add("io.read: a .dcm link to /dev/zero was parsed forever (io.read, dicom_header.dcmread)",
              d / "zero.dcm", d), "not a regular file")
    seed = _series_seed(b.root.parent / "_seeds")
    data = to_bytes(seed[0])
    i = data.find(b"\xe0\x7f\x10\x00")  # before Pixel Data: a private OB element claiming 2 GiB
    data = data[:i] + b"\x29\x00\x10\x10OB\x00\x00" + struct.pack("<I", 0x7FFFFFF0) + b"\x00" * 16 + data[i:]
    d = b.folder()
    for k, ds in enumerate(seed):
        (d / f"ct{k}.dcm").write_bytes(data if k == 0 else to_bytes(ds))
    add(b.add("dicom_header: a damaged element length made pydicom allocate what it claimed, the "
              "MemoryError hidden as 'not DICOM' (dcmread through mmap)", d / "ct0.dcm", d,
              names=["ct0.dcm", d.name]), "")
    for keyword, value, words in (("PixelSpacing", "abc\\1", "PixelSpacing"), ("ImagePositionPatient", "1\\2", "ImagePositionPatient"),
                                  ("RescaleSlope", "1e308", "float32"), ("RescaleSlope", "nan", "RescaleSlope"),
                                  ("NumberOfFrames", "abc", "NumberOfFrames")):
        d = b.folder()
        for k, ds in enumerate(seed):
            ds = copy.deepcopy(ds)
            if k == 1:
                set_raw(ds, keyword, "IS" if keyword == "NumberOfFrames" else "DS", value)
            (d / f"ct{k}.dcm").write_bytes(to_bytes(ds))
        add(b.add(f"dicom_series: {keyword} = {value!r} raised a bare ValueError/TypeError/OverflowError or "
                  "gave non-finite voxels (dicom_header.numbers, _rescale)", d, d, names=[d.name]), words)
    from fuzz_dicom import enhanced_seed, mutated

    add(b.file_case("dicom_series: an enhanced multi-frame CT with RescaleSlope NaN gave NaN voxels "
                    "without a word (_read_enhanced)", "enhanced.dcm",
                    mutated(enhanced_seed(seed), "RescaleSlope", "DS", "nan")), "not finite")
    name, ds = radiograph_seeds(b.root.parent / "_seeds")[0]
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    d2 = copy.deepcopy(ds)
    item = Dataset()
    set_raw(item, "LUTDescriptor", "US", struct.pack("<3H", 4096, 0, 16))
    set_raw(item, "LUTData", "OW", b"\x01\x00" * 3)
    d2.VOILUTSequence = Sequence([item])
    add(b.file_case("dicom_radiograph: a VOI LUT stored as OW raised ValueError, and one of 3 entries "
                    "claiming 4096 raised struct.error in pydicom (_lut_data, _lut_range)", name, to_bytes(d2)),
        "LUTData holds 3 entries")
    import pydicom

    seg = b.root.parent / "_seeds" / "seg3d.dcm"
    if not seg.is_file():  # made by fuzz_seg's seeds; this module may run on its own
        from fuzz_seg import seg_seeds

        seg_seeds(seg.parent)
    s = pydicom.dcmread(seg)
    set_raw(s.PerFrameFunctionalGroupsSequence[0].PlanePositionSequence[0], "ImagePositionPatient", "DS", "abc")
    add(b.file_case("dicom_seg: a plane position 'abc' raised numpy's UFuncTypeError inside highdicom "
                    "(check_seg_geometry)", "seg.dcm", to_bytes(s)), "ImagePositionPatient")
    import yaml

    card = (Path(__file__).resolve().parent.parent / "src" / "napari_cxseg" / "cards" / "cxr-lungs.yaml").read_text()
    doc = yaml.safe_load(card)

    def with_value(path: tuple, value: object) -> bytes:  # parsed and dumped: the card's layout may change
        new = copy.deepcopy(doc)
        node = new
        for k in path[:-1]:
            node = node[k]
        node[path[-1]] = value
        return yaml.safe_dump(new, sort_keys=False).encode()

    for what, text, words in (("bytes that are not UTF-8 raised UnicodeDecodeError", card.encode()[:50] + b"\xff\xfe" + card.encode()[50:], "UTF-8"),
                              ("20000 nested brackets raised RecursionError after seconds", b"name: " + b"[" * 20000 + b"]" * 20000, "nest"),
                              ("threshold .nan was accepted", with_value(("output", "threshold"), float("nan")), "finite"),
                              ("roi_size .inf raised OverflowError", with_value(("inference", "roi_size", 0), float("inf")), "finite"),
                              ("an integer key in input.intensity made sorting the unknown keys fail",
                               with_value(("input", "intensity", 1), 2), "intensity.1")):
        add(b.file_case(f"cards/card_schema: {what} (documents, Fields.number)", "card.yaml", text, entry="load_card"), words)
    files = bundle_files()
    b.needs = "monai"
    z = bytearray(make_zip(files))
    i = z.find(b"PK\x03\x04")
    n, extra = struct.unpack("<HH", z[i + 26:i + 30])
    z[i + 30 + n + extra + 5] ^= 0xFF
    add(b.file_case("bundle_zip: a CRC mismatch left a half-unpacked .part folder in the cache and "
                    "zlib.error escaped (unpack_bundle_zip)", f"{NAME}.zip", bytes(z), entry="bundle_zip"), "damaged")
    add(b.file_case("bundle_zip: an empty zip raised FileNotFoundError renaming the .part folder",
                    f"{NAME}.zip", make_zip({}), entry="bundle_zip"), "metadata.json")
    add(b.file_case("bundle_zip: a zip of 5000 members was unpacked without a bound (over 10 s under load; "
                    "check_members)", f"{NAME}.zip",
                    make_zip({**files, **{f"{NAME}/docs/{i}.txt": b"" for i in range(5000)}}), entry="bundle_zip"),
        "members")
    meta = json.loads(files[f"{NAME}/configs/metadata.json"])
    meta["network_data_format"]["outputs"] = 0
    add(b.file_case("find_card: a bad metadata.json in a zip was reported by its unpacked copy only "
                    "(find_card names the zip)", f"{NAME}.zip",
                    make_zip({**files, f"{NAME}/configs/metadata.json": json.dumps(meta).encode()}), entry="bundle_zip"),
        "network_data_format.outputs")
    b.needs = "monai"
    d = b.folder()
    task = d / "Task09_Spleen"
    task.mkdir()
    (task / "dataset.json").write_text(json.dumps({"training": [{"image": {"a": 1}, "label": 1.5}]}))
    add(b.add("msd: a case whose image is not a path was reported as 'no such file: {...}' without the "
              "task (MSDTask.cases)", task, d, names=[task.name]), "must be a file path")
    d = b.folder()
    task = d / "Task09_Spleen"
    task.mkdir()
    (task / "dataset.json").write_text(json.dumps({"training": [{"image": "x" * 5000, "label": "y"}]}))
    add(b.add("msd/nifti: a 5000-character image path raised OSError ENAMETOOLONG (limits.input_file_size)",
              task, d, names=[task.name]), "too long")
    return out
