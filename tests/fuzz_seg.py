"""Fuzz cases for the DICOM SEG reader (see :mod:`fuzz_cases`).

Seeds: pydicom's real ``liver_1frame.dcm`` (a 512 x 512 SEG), and the SEGs the product's own
writer makes of a ``dicom_factory`` CT series (3D, two segments) and of a radiograph (2D, no
frame of reference). Mutations: the SEG's own attributes (type, frames, segment numbers, plane
positions and orientations, pixel measures, CIELab colours) set to wrong raw values, functional
group sequences removed, emptied, shortened or duplicated, pixel data damaged, bytes damaged.
"""

from __future__ import annotations

import copy
from pathlib import Path

from fuzz_cases import Builder, Case, byte_variants, link_cases
from fuzz_dicom import (
    IMAGE_MUTATIONS,
    TRANSFER_SYNTAXES,
    _testdata,
    mutated,
    patched,
    pixel_variants,
    to_bytes,
    with_transfer_syntax,
)

#: ``(where, keyword, VR, values)``; ``where`` is ``top``, ``frame`` (every per-frame item's
#: sequence named first) or ``shared``.
SEG_MUTATIONS: list[tuple[str, str, str, list]] = [
    ("top", "SegmentationType", "CS", ["FRACTIONAL", "LABELMAP", "", "X"]),
    ("top", "NumberOfFrames", "IS", ["0", "abc", "-1", "999999", "1"]),
    ("top", "MaximumFractionalValue", "US", [0, 300]),
    ("top", "SegmentationFractionalType", "CS", ["PROBABILITY", "??"]),
    ("top", "BitsAllocated", "US", [8, 16, 0]),
    ("top", "Rows", "US", [0, 65535, 3]),
    ("top", "Columns", "US", [0, 65535]),
    ("top", "FrameOfReferenceUID", "UI", ["", "1.2"]),
    ("top", "PatientOrientation", "CS", ["R\\F", "Q\\Q", "L"]),
    ("segment", "SegmentNumber", "US", [0, 99, 65535]),
    ("segment", "SegmentLabel", "LO", ["", "\u00ff" * 70]),
    ("segment", "RecommendedDisplayCIELabValue", "US", [b"\xff\xff", b"\x00\x00" * 5]),
    ("segment", "SegmentAlgorithmType", "CS", ["", "MAGIC"]),
    ("frame:SegmentIdentificationSequence", "ReferencedSegmentNumber", "US", [0, 99, 65535]),
    ("frame:PlanePositionSequence", "ImagePositionPatient", "DS", ["nan\\0\\0", "0\\0\\0", "1\\2", "abc", ""]),
    ("frame:FrameContentSequence", "DimensionIndexValues", "UL", [0, 2**32 - 1]),
    ("shared:PixelMeasuresSequence", "PixelSpacing", "DS", ["0\\0", "nan\\1", "abc", "-1\\-1", "1e308\\1e308"]),
    ("shared:PixelMeasuresSequence", "SliceThickness", "DS", ["0", "nan", "-1"]),
    ("shared:PlaneOrientationSequence", "ImageOrientationPatient", "DS", ["0\\0\\0\\0\\0\\0", "1\\0\\0\\1\\0\\0", "nan\\0\\0\\0\\1\\0", "1"]),
]


def seg_seeds(tmp: Path) -> list[tuple[str, object]]:
    """``(name, dataset)`` of the SEG seeds."""
    import numpy as np
    import pydicom

    from dicom_factory import write_ct_series, write_radiograph
    from napari_cxseg import io
    from napari_cxseg.images import LabelClass, LabelMap

    files, _ = write_ct_series(tmp / "seg-ct", n_slices=4, shape=(16, 16))
    img = io.read(tmp / "seg-ct")[0]
    lab = np.zeros(img.array.shape, np.uint8)
    lab[1:3, 4:10, 4:10] = 1
    lab[2:4, 8:14, 2:6] = 2
    classes = {1: LabelClass("liver", "#ff0000"), 2: LabelClass("spleen")}
    io.write_labels(LabelMap(lab, img.geometry, classes), tmp / "seg3d.dcm")
    p = write_radiograph(tmp / "seg-dx" / "dx.dcm", np.random.default_rng(0).integers(0, 4095, (40, 32), dtype=np.uint16))
    film = io.read(p)[0]
    lab2 = np.zeros(film.array.shape, np.uint8)
    lab2[5:20, 3:15] = 1
    lab2[22:30, 16:30] = 2
    io.write_labels(LabelMap(lab2, film.geometry, {1: LabelClass("right lung"), 2: LabelClass("left lung")}), tmp / "seg2d.dcm")
    return [("seg3d.dcm", pydicom.dcmread(tmp / "seg3d.dcm")), ("seg2d.dcm", pydicom.dcmread(tmp / "seg2d.dcm")),
            ("liver_seg.dcm", pydicom.dcmread(_testdata("liver_1frame.dcm")))]


def _items(ds, where: str) -> list:
    """The datasets a :data:`SEG_MUTATIONS` entry changes."""
    if where == "top":
        return [ds]
    if where == "segment":
        return list(ds.get("SegmentSequence") or [])[:1]
    kind, seq = where.split(":")
    groups = ds.get("PerFrameFunctionalGroupsSequence" if kind == "frame" else "SharedFunctionalGroupsSequence") or []
    out = [g.get(seq)[0] for g in groups if g.get(seq)]
    return out[:1] if kind == "frame" else out


def structural(ds) -> list[tuple[str, object]]:
    """Functional groups and segments removed, emptied, shortened, duplicated."""
    from pydicom.sequence import Sequence

    out = []
    for keyword in ("PerFrameFunctionalGroupsSequence", "SharedFunctionalGroupsSequence", "SegmentSequence",
                    "DimensionIndexSequence", "ReferencedSeriesSequence"):
        if keyword not in ds:
            continue
        d = copy.deepcopy(ds)
        delattr(d, keyword)
        out.append((f"no {keyword}", d))
        d = copy.deepcopy(ds)
        setattr(d, keyword, Sequence([]))
        out.append((f"{keyword} empty", d))
        d = copy.deepcopy(ds)
        items = list(getattr(d, keyword))
        setattr(d, keyword, Sequence(items + [copy.deepcopy(items[0])]))
        out.append((f"{keyword} with its first item twice", d))
    if len(ds.get("PerFrameFunctionalGroupsSequence") or []) > 1:
        d = copy.deepcopy(ds)
        d.PerFrameFunctionalGroupsSequence = Sequence(list(d.PerFrameFunctionalGroupsSequence)[:-1])
        out.append(("one per-frame item fewer than frames", d))
        d = copy.deepcopy(ds)
        first = d.PerFrameFunctionalGroupsSequence[0]
        for item in d.PerFrameFunctionalGroupsSequence[1:]:
            if "PlanePositionSequence" in item:
                item.PlanePositionSequence = copy.deepcopy(first.PlanePositionSequence)
        out.append(("every frame at the first frame's position", d))
    for g in ("PlanePositionSequence", "SegmentIdentificationSequence", "DerivationImageSequence"):
        d = copy.deepcopy(ds)
        for item in d.get("PerFrameFunctionalGroupsSequence") or []:
            if g in item:
                delattr(item, g)
        out.append((f"no {g} in the frames", d))
    return out


def seg_cases(root: Path) -> list[Case]:
    """DICOM SEG inputs (``io.read`` of one file), about 320."""
    b = Builder(root, "dicom-seg", seed=6)
    seeds = seg_seeds(b.root.parent / "_seeds")
    rng = b.rng
    k = 0
    for where, keyword, vr, values in SEG_MUTATIONS:
        for value in values:
            for name, ds in seeds[:2] if where != "top" or k % 2 else seeds:
                items = _items(ds, where)
                if not items:
                    continue
                with patched([(item, keyword, vr, value) for item in items]):
                    b.file_case(f"{name}: {where} {keyword} = {value!r}", name, to_bytes(ds))
            k += 1
    for name, ds in seeds:
        for what, d in structural(ds):
            b.file_case(f"{name}: {what}", name, to_bytes(d))
        for what, data in pixel_variants(ds):
            b.file_case(f"{name}: {what}", name, data)
    flat = [(kw, vr, v) for kw, vr, values in IMAGE_MUTATIONS[:12] for v in values]
    for _ in range(40):
        name, ds = rng.choice(seeds)
        kw, vr, v = rng.choice(flat)
        b.file_case(f"{name}: {kw} = {v!r}", name, mutated(ds, kw, vr, v))
    for what, uid in TRANSFER_SYNTAXES[:5]:
        b.file_case(f"seg3d.dcm: transfer syntax {what} over explicit VR data", "seg3d.dcm",
                    with_transfer_syntax(to_bytes(seeds[0][1]), uid))
    for name, ds in seeds:
        for what, out in byte_variants(rng, to_bytes(ds), 2500, 16):
            b.file_case(f"{name}: {what}", name, out)
    link_cases(b, "linked_seg.dcm", _testdata("liver_1frame.dcm"))
    return b.cases
