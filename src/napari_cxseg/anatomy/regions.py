"""Chest ImaGenome regions computed from the structures of a frontal radiograph.

Masks lie on the radiograph's held grid (rows, columns). Sides are the patient's: *lateral*
means away from the other lung (the rules read it from where the two lungs are, so they hold
for PA and for mirrored displays alike); *medial* toward it. A lung's height ``H`` runs from its
top row (apex) to its bottom row, its width ``W`` is the width of its box. Boxes are in pixel
edges: a box over columns ``c0..c1`` has ``x1 = c0``, ``x2 = c1 + 1``.

Rules per region (the structures each needs in brackets; a region whose structures are missing,
or whose rule finds no pixel, is LEFT OUT and the reason is kept in ``RegionSet.left_out``):

* ``right lung``, ``left lung`` [that lung]: the lung's box.
* ``* upper / mid / lower lung zone`` [that lung]: the box of the lung pixels in the upper,
  middle and lower third of the lung's height (radiological zones follow the anterior rib ends;
  equal thirds of the lung height is the usual image-based stand-in).
* ``* apical zone`` [that lung, that clavicle]: the lung above the clavicle - in each column,
  the lung pixels above the clavicle's lower border (columns the clavicle does not reach take
  the border of the nearest column it does), at most down to the end of the upper zone.
* ``* costophrenic angle`` [that lung]: the lateral-inferior corner of the lung field: its
  lowest pixel in the lateral half of the lung (ties: the most lateral); a square box of side
  ``W/4`` whose lower and lateral edges pass through that tip and the lung's lateral border.
* ``* hemidiaphragm`` [that lung; the heart for the left side]: the diaphragm line is the lowest
  pixel of (lung + heart) in each column on that side of the midline (medially the heart rests
  on the diaphragm), in the columns where that pixel lies in the lower third of the lung's
  height (elsewhere it is the mediastinal border of the upper lung); the box spans that line,
  from the dome's top down to its lowest point plus ``H/50``. A ``diaphragm`` mask (TorchXRayVision), split at the midline, is used when given.
  Without a heart the left lung's lower-medial border is the heart, so the left side is left out.
* ``* hilar structures`` [that lung, or a hilum mask]: the hilum mask's box; otherwise the
  medial third of the lung's width (from the lung's most medial pixel in the band) over the
  middle third of its height, where the hila lie.
* ``cardiac silhouette`` [heart]: the heart's box.
* ``upper mediastinum`` [both lungs, heart; or a mediastinum mask and the heart]: from the top
  of the lungs to the top of the heart, between the lungs' medial borders (the widest gap over
  the rows where both lungs are at least a third of their width wide, which leaves out the
  apical caps); with a mediastinum mask, its part above the heart.
* ``mediastinum`` [upper mediastinum, heart]: the union of the upper mediastinum's and the
  cardiac silhouette's boxes (with a mediastinum mask: mask + heart).
* ``trachea`` [trachea mask], ``spine`` [spine mask], ``right/left clavicle`` [that clavicle]:
  the mask's box.
* ``aortic arch`` [aorta mask, heart]: the aorta above the top of the heart.
* ``abdomen`` [both hemidiaphragms, both lungs]: below the higher dome, between the lungs'
  lateral borders, down to the image's lower edge.
* Left out always: ``svc``, ``cavoatrial junction``, ``right atrium``, ``carina`` (no shipped
  model segments them and no sound rule derives them from the structures above).

The midline is the spine's (or trachea's) median column when given, else the median midpoint
between the lungs' medial borders over the rows both lungs share.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from .box_geometry import Box, box_iou, mask_box
from .ctr import CardiothoracicRatio, cardiothoracic_ratio

__all__ = ["Box", "Region", "RegionSet", "box_iou", "compute_regions", "mask_box"]

NEVER_COMPUTED: dict[str, str] = {
    n: "no model segments it and no sound rule derives it" for n in ("svc", "cavoatrial junction", "right atrium", "carina")
}


@dataclass
class Region:
    """One computed region: its box, the rule that made it and the structures it used."""

    name: str
    box: Box
    rule: str
    structures: tuple[str, ...]


@dataclass
class RegionSet:
    """The regions of one radiograph, the regions left out (with why) and the CTR."""

    shape: tuple[int, int]
    regions: dict[str, Region] = field(default_factory=dict)
    left_out: dict[str, str] = field(default_factory=dict)
    ctr: CardiothoracicRatio | None = None
    midline: float | None = None

    def boxes(self) -> dict[str, Box]:
        """``{region name: box}``."""
        return {k: r.box for k, r in self.regions.items()}


# ---------------------------------------------------------------------------- helpers
def _row_band(mask: np.ndarray, r0: float, r1: float) -> np.ndarray:
    """The mask with only rows in ``[r0, r1)`` kept."""
    out = np.zeros_like(mask)
    a, b = max(int(round(r0)), 0), min(int(round(r1)), mask.shape[0])
    out[a:b] = mask[a:b]
    return out


def _edges_per_row(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows that hold pixels, and each row's first and last column."""
    has = np.any(mask, axis=1)
    rows = np.flatnonzero(has)
    first = np.argmax(mask[rows], axis=1)
    last = mask.shape[1] - 1 - np.argmax(mask[rows, ::-1], axis=1)
    return rows, first, last


def find_midline(s: Mapping[str, np.ndarray]) -> float | None:
    """Midline column (see the module docstring)."""
    for name in ("spine", "trachea"):
        if name in s:
            return float(np.median(np.nonzero(s[name])[1])) + 0.5
    if "right lung" not in s or "left lung" not in s:
        return None
    rr, rf, rl = _edges_per_row(s["right lung"])
    lr, lf, ll = _edges_per_row(s["left lung"])
    common, ir, il = np.intersect1d(rr, lr, return_indices=True)
    if common.size == 0:
        return None
    right_is_low = np.mean(np.nonzero(s["right lung"])[1]) < np.mean(np.nonzero(s["left lung"])[1])
    inner_r = rl[ir] + 1 if right_is_low else rf[ir]
    inner_l = lf[il] if right_is_low else ll[il] + 1
    return float(np.median((inner_r + inner_l) / 2.0))


def _lateral_sign(s: Mapping[str, np.ndarray], side: str) -> int:
    """-1 when the lateral direction of ``side`` is toward column 0, else +1 (PA default)."""
    if "right lung" in s and "left lung" in s:
        right_low = np.mean(np.nonzero(s["right lung"])[1]) < np.mean(np.nonzero(s["left lung"])[1])
    else:
        right_low = True
    return (-1 if right_low else 1) * (1 if side == "right" else -1)


# ---------------------------------------------------------------------------- lung rules
def lung_zones(lung: np.ndarray) -> dict[str, Box]:
    """``{"upper", "mid", "lower"}`` boxes: the lung in thirds of its height."""
    b = mask_box(lung)
    out: dict[str, Box] = {}
    if b is None:
        return out
    h = b.height
    for i, zone in enumerate(("upper", "mid", "lower")):
        zb = mask_box(_row_band(lung, b.y1 + i * h / 3.0, b.y1 + (i + 1) * h / 3.0))
        if zb is not None:
            out[zone] = zb
    return out


def apical_zone(lung: np.ndarray, clavicle: np.ndarray) -> Box | None:
    """The lung above the clavicle's lower border (see the module docstring)."""
    lb, cb = mask_box(lung), mask_box(clavicle)
    if lb is None or cb is None:
        return None
    cols = np.flatnonzero(np.any(clavicle, axis=0))
    lower = clavicle.shape[0] - 1 - np.argmax(clavicle[::-1, cols], axis=0)
    allc = np.arange(lung.shape[1])
    border = np.interp(allc, cols, lower)  # nearest columns' border beyond the clavicle's ends
    rows = np.arange(lung.shape[0])[:, None]
    limit = np.minimum(border[None, :], lb.y1 + lb.height / 3.0 - 1)
    return mask_box(lung & (rows <= limit))


def costophrenic_angle(lung: np.ndarray, lateral: int) -> Box | None:
    """Square box at the lung's lateral-inferior tip (see the module docstring)."""
    b = mask_box(lung)
    if b is None:
        return None
    centre = (b.x1 + b.x2) / 2.0
    half = lung.copy()
    if lateral < 0:
        half[:, int(np.ceil(centre)):] = False
    else:
        half[:, : int(np.floor(centre))] = False
    r, c = np.nonzero(half)
    if r.size == 0:
        return None
    low = r.max()
    at = c[r == low]
    tip_c = at.min() if lateral < 0 else at.max()
    side = b.width / 4.0
    band = _row_band(lung, low + 1 - side, low + 1)
    _, first, last = _edges_per_row(band)
    if lateral < 0:
        x1 = float(min(first.min(), tip_c))
        box = Box(x1, low + 1 - side, x1 + side, low + 1.0)
    else:
        x2 = float(max(last.max(), tip_c) + 1)
        box = Box(x2 - side, low + 1 - side, x2, low + 1.0)
    return box.clip(*lung.shape)


def diaphragm_line(lung: np.ndarray, heart: np.ndarray | None, midline: float | None, lateral: int) -> Box | None:
    """Box of the hemidiaphragm line under one lung (see the module docstring)."""
    b = mask_box(lung)
    if b is None:
        return None
    m = lung | heart if heart is not None else lung.copy()
    if midline is not None:
        cols = np.arange(m.shape[1]) + 0.5
        m = m & ((cols < midline) if lateral < 0 else (cols > midline))[None, :]
    has = np.flatnonzero(np.any(m, axis=0))
    if has.size == 0:
        return None
    bottom = m.shape[0] - 1 - np.argmax(m[::-1, has], axis=0)
    low = bottom >= b.y1 + 2.0 * b.height / 3.0  # the diaphragm is under the lower zone; higher
    has, bottom = has[low], bottom[low]  # bottoms are the mediastinal border of the upper lung
    if has.size == 0:
        return None
    pad = b.height / 50.0
    return Box(float(has[0]), float(bottom.min()), float(has[-1] + 1), float(bottom.max() + 1 + pad)).clip(*m.shape)


def hilum_from_lung(lung: np.ndarray, lateral: int) -> Box | None:
    """Medial third of the lung's width over the middle third of its height."""
    b = mask_box(lung)
    if b is None:
        return None
    band = _row_band(lung, b.y1 + b.height / 3.0, b.y1 + 2.0 * b.height / 3.0)
    rows, first, last = _edges_per_row(band)
    if rows.size == 0:
        return None
    w = b.width / 3.0
    y1, y2 = float(rows[0]), float(rows[-1] + 1)
    if lateral < 0:  # medial is toward higher columns
        x2 = float(last.max() + 1)
        return Box(x2 - w, y1, x2, y2)
    x1 = float(first.min())
    return Box(x1, y1, x1 + w, y2)


def _split_at(mask: np.ndarray, midline: float, lateral: int) -> np.ndarray:
    cols = np.arange(mask.shape[1]) + 0.5
    return mask & ((cols < midline) if lateral < 0 else (cols > midline))[None, :]


# ---------------------------------------------------------------------------- central rules
def upper_mediastinum(s: Mapping[str, np.ndarray]) -> Box | None:
    """Top of the lungs to the top of the heart, between the lungs' medial borders."""
    hb = mask_box(s.get("heart"))
    if hb is None:
        return None
    if "mediastinum" in s:
        return mask_box(_row_band(s["mediastinum"], 0, hb.y1))
    rb, lb = mask_box(s.get("right lung")), mask_box(s.get("left lung"))
    if rb is None or lb is None:
        return None
    top = min(rb.y1, lb.y1)
    if top >= hb.y1:
        return None
    rr, rf, rl = _edges_per_row(_row_band(s["right lung"], top, hb.y1))
    lr, lf, ll = _edges_per_row(_row_band(s["left lung"], top, hb.y1))
    common, ir, il = np.intersect1d(rr, lr, return_indices=True)
    # rows where both lungs are at least a third of their width wide: not the apical caps
    wide = ((rl[ir] - rf[ir] + 1) >= rb.width / 3.0) & ((ll[il] - lf[il] + 1) >= lb.width / 3.0)
    ir, il = ir[wide], il[wide]
    if ir.size == 0:
        return None
    if _lateral_sign(s, "right") < 0:
        x1, x2 = float((rl[ir] + 1).min()), float(lf[il].max())
    else:
        x1, x2 = float((ll[il] + 1).min()), float(rf[ir].max())
    if x2 <= x1:
        return None
    return Box(x1, float(top), x2, float(hb.y1))


def compute_regions(structures: Mapping[str, np.ndarray], shape: tuple[int, int] | None = None) -> RegionSet:
    """The Chest ImaGenome regions that the given structures support.

    Parameters
    ----------
    structures
        ``{structure name: bool mask}`` on one radiograph's held grid (names of
        :data:`~napari_cxseg.anatomy.structures.STRUCTURE_NAMES`).
    shape
        ``(rows, columns)`` of the radiograph (default: the masks' shape).

    Returns
    -------
    RegionSet
        Boxes in held pixel edges, the regions left out with the reason, the CTR.
    """
    from .imagenome import REGION_NAMES

    s = {k: np.asarray(v, bool) for k, v in structures.items() if v is not None and np.any(v)}
    if shape is None:
        if not s:
            raise ValueError("no structure given and no shape")
        shape = next(iter(s.values())).shape
    rs = RegionSet(shape=(int(shape[0]), int(shape[1])))
    mid = find_midline(s)
    rs.midline = mid

    def add(name: str, box: Box | None, rule: str, used: tuple[str, ...]) -> None:
        missing = [u for u in used if u not in s]
        if missing:
            rs.left_out[name] = f"needs {', '.join(missing)}"
        elif box is None or box.area <= 0:
            rs.left_out[name] = f"the rule ({rule}) found no pixel"
        else:
            rs.regions[name] = Region(name, box.clip(*rs.shape), rule, used)

    for side in ("right", "left"):
        lung_name = f"{side} lung"
        lung = s.get(lung_name)
        lat = _lateral_sign(s, side)
        add(lung_name, mask_box(lung), "lung box", (lung_name,))
        zones = lung_zones(lung) if lung is not None else {}
        for z in ("upper", "mid", "lower"):
            add(f"{side} {z} lung zone", zones.get(z), f"{z} third of the lung height", (lung_name,))
        clav = s.get(f"{side} clavicle")
        apex = apical_zone(lung, clav) if lung is not None and clav is not None else None
        add(f"{side} apical zone", apex, "lung above the clavicle", (lung_name, f"{side} clavicle"))
        cp = costophrenic_angle(lung, lat) if lung is not None else None
        add(f"{side} costophrenic angle", cp, "lateral-inferior lung tip", (lung_name,))
        if "diaphragm" in s and mid is not None:
            add(f"{side} hemidiaphragm", mask_box(_split_at(s["diaphragm"], mid, lat)), "diaphragm mask, this side",
                ("diaphragm",))
        else:
            need = (lung_name,) if side == "right" else (lung_name, "heart")
            hd = diaphragm_line(lung, s.get("heart"), mid, lat) if lung is not None else None
            add(f"{side} hemidiaphragm", hd, "lowest lung/heart pixel per column", need)
        if f"{side} hilum" in s:
            add(f"{side} hilar structures", mask_box(s[f"{side} hilum"]), "hilum mask", (f"{side} hilum",))
        else:
            hil = hilum_from_lung(lung, lat) if lung is not None else None
            add(f"{side} hilar structures", hil, "medial third, middle third of the lung", (lung_name,))
        add(f"{side} clavicle", mask_box(s.get(f"{side} clavicle")), "clavicle box", (f"{side} clavicle",))

    add("cardiac silhouette", mask_box(s.get("heart")), "heart box", ("heart",))
    add("trachea", mask_box(s.get("trachea")), "trachea mask box", ("trachea",))
    add("spine", mask_box(s.get("spine")), "spine mask box", ("spine",))
    um = upper_mediastinum(s)
    um_need = ("mediastinum", "heart") if "mediastinum" in s else ("right lung", "left lung", "heart")
    add("upper mediastinum", um, "lung tops to heart top, between the lungs", um_need)
    hb = mask_box(s.get("heart"))
    med = None
    if "mediastinum" in s and hb is not None:
        med = mask_box(s["mediastinum"] | s["heart"])
    elif um is not None and hb is not None:
        med = um.union(hb)
    add("mediastinum", med, "upper mediastinum + cardiac silhouette", um_need)
    arch = mask_box(_row_band(s["aorta"], 0, hb.y1)) if "aorta" in s and hb is not None else None
    add("aortic arch", arch, "aorta above the heart", ("aorta", "heart"))
    hds = [rs.regions.get(f"{side} hemidiaphragm") for side in ("right", "left")]
    rb, lb = mask_box(s.get("right lung")), mask_box(s.get("left lung"))
    abd = None
    if all(hds) and rb is not None and lb is not None:
        top = min(h.box.y1 for h in hds if h is not None)
        abd = Box(min(rb.x1, lb.x1), top, max(rb.x2, lb.x2), float(rs.shape[0]))
    add("abdomen", abd, "below the higher dome, between the lungs' lateral borders",
        ("right lung", "left lung", *([] if all(hds) else ["both hemidiaphragms"])))
    for name, why in NEVER_COMPUTED.items():
        rs.left_out[name] = why
    rs.regions = {n: rs.regions[n] for n in REGION_NAMES if n in rs.regions}
    rs.left_out = {n: rs.left_out[n] for n in REGION_NAMES if n in rs.left_out}
    if "heart" in s and "right lung" in s and "left lung" in s:
        rs.ctr = cardiothoracic_ratio(s["heart"], s["right lung"], s["left lung"])
    return rs
