"""Which way up a radiograph is, from its file: DICOM PatientOrientation or EXIF orientation.

A radiograph is held in the standard display: for a frontal (PA/AP) view the patient's right on
the screen's left and the head up, i.e. DICOM PatientOrientation ``L\\F`` (PS3.3 C.7.6.1.1.1:
the first value is the direction of the rows, left to right across the image, the second that
of the columns, top to bottom). A file stored another way is only transposed/flipped into that
display (:func:`~napari_cxseg.geometry.radiograph_geometry`), never resampled, and the writers
invert it exactly, so labels are saved on the file's own pixel grid.

What was found is reported in ``meta["orientation"]``::

    {"known": True, "source": "DICOM PatientOrientation",  # or "EXIF", or "none"
     "stored": "R\\\\F", "applied": "columns flipped",
     "note": "one sentence for the user"}
    # DICOM also: "view_position": "PA", "laterality": "L" when the file has them

The orientation a file asks for is a nibabel orientation (``ornt[i] = (held axis, flip)`` of
stored axis ``i``), ``None`` when nothing is changed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: Anatomical axis and sign of each PatientOrientation letter (first letter of a value).
_AXIS = {"L": ("LR", +1), "R": ("LR", -1), "P": ("AP", +1), "A": ("AP", -1),
         "F": ("HF", +1), "H": ("HF", -1)}
#: Held (display) direction of the image's columns (top to bottom) and rows (left to right).
_STANDARD = {
    frozenset({"LR", "HF"}): ("F", "L"),  # frontal: head up, patient's left on the screen's right
    frozenset({"LR", "AP"}): ("P", "L"),  # axial projection: anterior up, as axial CT slices
}
#: Views whose left-right display no standard fixes (kept as stored, head up).
LATERAL_VIEWS = frozenset({"LL", "RL", "LATERAL", "LAT", "LLD", "RLD", "XTABLE LATERAL"})

#: EXIF orientation (tag 274) -> orientation that makes the stored pixels upright, with the
#: same result as ``PIL.ImageOps.exif_transpose``.
EXIF_ORNT = {
    1: None,
    2: [[0, 1], [1, -1]],  # mirrored left-right
    3: [[0, -1], [1, -1]],  # upside down (rotated 180)
    4: [[0, -1], [1, 1]],  # mirrored top-bottom
    5: [[1, 1], [0, 1]],  # transposed
    6: [[1, -1], [0, 1]],  # stored rotated 90 counter-clockwise: turn 90 clockwise
    7: [[1, -1], [0, -1]],  # transverse
    8: [[1, 1], [0, -1]],  # stored rotated 90 clockwise: turn 90 counter-clockwise
}
EXIF_ORIENTATION_TAG = 274

_AS_ACQUIRED = (
    "the image is assumed to be shown as acquired (for a PA/AP view, the patient's right on "
    "the screen's left), which the file cannot confirm"
)


@dataclass
class Orientation:
    """How to turn a stored radiograph into the standard display, and what the file said.

    Attributes
    ----------
    ornt
        nibabel orientation from the stored array to the held one, ``None`` for no change.
    info
        The ``meta["orientation"]`` dict (see the module docstring).
    """

    ornt: np.ndarray | None
    info: dict[str, Any] = field(default_factory=dict)


def describe(ornt: Any) -> str:
    """What an orientation does to the stored image, in words.

    Parameters
    ----------
    ornt
        A 2D nibabel orientation, or ``None``.

    Returns
    -------
    str
        ``"none"``, ``"columns flipped"``, ``"rows flipped"``, ``"rotated 180 degrees"``,
        ``"transposed"``, ``"rotated 90 degrees clockwise"``, ``"rotated 90 degrees
        counter-clockwise"`` or ``"transposed and rotated 180 degrees"``.
    """
    if ornt is None:
        return "none"
    o = np.asarray(ornt, int)
    key = (int(o[0, 0]), int(o[0, 1]), int(o[1, 1]))
    return {
        (0, 1, 1): "none",
        (0, 1, -1): "columns flipped",
        (0, -1, 1): "rows flipped",
        (0, -1, -1): "rotated 180 degrees",
        (1, 1, 1): "transposed",
        (1, -1, 1): "rotated 90 degrees clockwise",
        (1, 1, -1): "rotated 90 degrees counter-clockwise",
        (1, -1, -1): "transposed and rotated 180 degrees",
    }[key]


def _identity(o: np.ndarray) -> bool:
    return bool(np.array_equal(o, [[0, 1], [1, 1]]))


def _codes(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    parts = str(value).split("\\") if isinstance(value, str) else [str(v) for v in value]
    return [p.strip().upper() for p in parts]


def _text(value: Any) -> str:
    return "\\".join(_codes(value))


def unknown(what: str) -> Orientation:
    """Nothing known: no change, ``known`` False.

    Parameters
    ----------
    what
        The file kind for the note, e.g. ``"PNG/JPEG without EXIF orientation"``.

    Returns
    -------
    Orientation
    """
    note = f"{what}: {_AS_ACQUIRED}."
    return Orientation(
        None, {"known": False, "source": "none", "stored": "", "applied": "none", "note": note}
    )


def from_patient_orientation(
    value: Any, view_position: str | None = None, laterality: str | None = None
) -> Orientation:
    """The display orientation a DICOM radiograph's PatientOrientation (0020,0020) asks for.

    Parameters
    ----------
    value
        ``PatientOrientation``: two values, the directions of the rows and of the columns
        (letters L, R, A, P, H, F; the first letter of a value is its main direction).
    view_position
        ``ViewPosition`` (PA, AP, LL, RL ...), checked against the orientation and reported.
    laterality
        ``ImageLaterality`` or ``Laterality`` (R, L, U, B), reported.

    Returns
    -------
    Orientation
        Frontal images become ``L\\F`` (patient's right on the screen's left, head up); images
        in a sagittal plane (laterals) get the head up and keep their anterior/posterior side;
        an axial projection becomes ``L\\P`` (anterior up). Missing or invalid values: no
        change and ``known`` False.
    """
    codes = _codes(value)
    extra: dict[str, Any] = {}
    view = (view_position or "").strip().upper()
    if view:
        extra["view_position"] = view
    if laterality and str(laterality).strip():
        extra["laterality"] = str(laterality).strip().upper()
    if not codes or not any(codes):
        out = unknown("The file has no PatientOrientation")
        out.info.update(extra)
        return out
    axes = [_AXIS.get(c[:1]) for c in codes]
    if len(codes) != 2 or None in axes or axes[0][0] == axes[1][0]:  # type: ignore[index]
        out = unknown(f"The PatientOrientation {_text(value)!r} is not a valid pair of directions")
        out.info.update(extra, stored=_text(value))
        return out
    (row_axis, _), (col_axis, _) = axes  # type: ignore[misc]
    plane = frozenset({row_axis, col_axis})
    if plane in _STANDARD:
        down, across = _STANDARD[plane]
    else:  # sagittal plane (a lateral view): head up, anterior/posterior as stored
        down = "F"
        across = codes[0][:1] if row_axis == "AP" else codes[1][:1]
    # stored axis 0 (down the rows) runs along the columns' direction, axis 1 along the rows'
    ornt = np.zeros((2, 2))
    for axis, code in ((0, codes[1][:1]), (1, codes[0][:1])):
        held = 0 if _AXIS[code][0] == _AXIS[down][0] else 1
        target = down if held == 0 else across
        ornt[axis] = (held, 1 if code == target else -1)
    applied = describe(ornt)
    stored = _text(value)
    if plane == frozenset({"LR", "HF"}):
        shown = "shown with the patient's right on the screen's left and the head up"
    elif plane == frozenset({"LR", "AP"}):
        shown = "shown with anterior up and the patient's right on the screen's left"
    else:
        shown = "a lateral image, shown head up with its anterior/posterior side as stored"
    if applied == "none":
        note = f"PatientOrientation {stored}: stored in the standard display ({shown})."
    else:
        note = (
            f"PatientOrientation {stored}: {shown} ({applied}); labels are saved on the file's "
            "own pixel grid."
        )
    if view in LATERAL_VIEWS and plane != frozenset({"AP", "HF"}):
        note += f" ViewPosition {view} says lateral, but the orientation is not: check the file."
    elif view in ("PA", "AP") and plane != frozenset({"LR", "HF"}):
        note += f" ViewPosition {view} says frontal, but the orientation is not: check the file."
    info = {"known": True, "source": "DICOM PatientOrientation", "stored": stored,
            "applied": applied, "note": note, **extra}
    return Orientation(None if _identity(ornt) else ornt, info)


def from_exif(value: Any) -> Orientation:
    """The display orientation an EXIF orientation tag (274) asks for.

    Parameters
    ----------
    value
        The tag's value (1-8), or ``None`` when the file has no EXIF orientation.

    Returns
    -------
    Orientation
        The upright image as ``PIL.ImageOps.exif_transpose`` makes it (as a transpose/flip that
        writers invert); ``known`` False without a valid tag.
    """
    try:
        v = int(value) if value is not None else None
    except (TypeError, ValueError):
        v = None
    if v not in EXIF_ORNT:
        what = "PNG/JPEG without EXIF orientation"
        if value is not None:
            what = f"PNG/JPEG with an invalid EXIF orientation ({value!r})"
        return unknown(what)
    ornt = None if EXIF_ORNT[v] is None else np.asarray(EXIF_ORNT[v], float)
    applied = describe(ornt)
    turned = "stored upright" if applied == "none" else f"turned upright ({applied})"
    note = (
        f"EXIF orientation {v}: {turned}; EXIF does not say which side is the patient's, so "
        "a PA/AP view is assumed to show the patient's right on the screen's left."
    )
    info = {"known": True, "source": "EXIF", "stored": f"EXIF {v}", "applied": applied,
            "note": note}
    return Orientation(ornt, info)


def exif_value_of(ornt: Any) -> int:
    """The EXIF orientation (1-8) that asks for ``ornt`` (the inverse of :data:`EXIF_ORNT`).

    Parameters
    ----------
    ornt
        A 2D nibabel orientation, or ``None``.

    Returns
    -------
    int
    """
    if ornt is None:
        return 1
    o = np.asarray(ornt, int).tolist()
    for v, table in EXIF_ORNT.items():
        if table is not None and table == o:
            return v
    return 1
