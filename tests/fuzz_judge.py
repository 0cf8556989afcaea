"""One fuzz case, run and judged in a child of :mod:`fuzz_runner`.

:func:`run_one` calls the case's entry point, classifies what happened (see the runner's
docstring for the outcomes) and checks that nothing was written: the case's folder is
compared before and after (names, types, sizes, modes, mtimes), and so is the cache
(``CXSEG_CACHE_DIR``), where only a bundle zip's *complete* unpack (every regular member, no
``.part`` folder) may appear.
"""

from __future__ import annotations

import math
import os
import stat
import traceback
import zipfile
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import Any

import numpy as np

ZIPS = ("bundles", "_zips")


class CaseTimeout(BaseException):  # noqa: N818 - not an Exception: readers' wrappers must not catch it
    """Raised by the child's alarm when a case runs too long."""


def _tree(folder: Path, shallow: tuple[str, ...] = ()) -> dict[str, tuple[int, int, int, int]]:
    """``relative path -> (type, mode, size, mtime_ns)`` of everything under ``folder``
    (links not followed); below ``shallow`` (a relative folder) only its entries' names."""
    out: dict[str, tuple[int, int, int, int]] = {}
    if not os.path.lexists(folder):
        return out
    skip = os.path.join(*shallow) if shallow else None
    for dirpath, dirnames, filenames in os.walk(folder):
        rel_dir = os.path.relpath(dirpath, folder)
        for n in dirnames + filenames:
            rel = os.path.normpath(os.path.join(rel_dir, n))
            st = os.lstat(os.path.join(dirpath, n))
            out[rel] = (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), st.st_size, st.st_mtime_ns)
        if skip is not None and os.path.normpath(rel_dir) == skip:
            out.update({os.path.join(skip, n): (stat.S_IFDIR, 0, 0, 0) for n in dirnames})
            dirnames[:] = []
    return out


def _changes(before: dict, after: dict) -> list[str]:
    gone = [f"removed {k}" for k in before if k not in after]
    changed = [f"changed {k}" for k in before if k in after and after[k] != before[k]]
    new = [f"new {k}" for k in after if k not in before]
    return gone + changed + new


def _complete_unpack(folder: Path, zip_path: Path) -> bool:
    """True when ``folder`` holds exactly the regular members of ``zip_path``."""
    try:
        with zipfile.ZipFile(zip_path) as z:
            members = {os.path.normpath(i.filename) for i in z.infolist() if not i.is_dir()}
    except (zipfile.BadZipFile, OSError, ValueError):
        return False
    found = {os.path.normpath(os.path.relpath(os.path.join(d, n), folder))
             for d, _, names in os.walk(folder) for n in names}
    return found == members


def _cache_problems(case: dict[str, Any], cache: Path, before: dict, after: dict) -> list[str]:
    problems = []
    zips = os.path.join(*ZIPS)
    for change in _changes(before, after):
        kind, rel = change.split(" ", 1)
        if rel in (ZIPS[0], zips) and kind in ("new", "changed"):
            continue  # the bundle cache folders themselves (an unpack changes their mtime)
        unpacked = kind == "new" and os.path.dirname(rel) == zips and case["entry"] == "bundle_zip"
        if unpacked and not rel.endswith(".part") and _complete_unpack(cache / rel, Path(case["path"])):
            continue
        problems.append(f"cache: {change}")
    return problems


# ------------------------------------------------------------------------------ results
def _geometry_problem(obj: Any) -> str | None:
    from napari_cxseg.images import Image, LabelMap

    g = obj.geometry
    a = np.asarray(g.affine, dtype=float)
    n = g.ndim
    if a.shape != (n + 1, n + 1) or not np.isfinite(a).all() or abs(np.linalg.det(a[:n, :n])) == 0:
        return f"degenerate affine {a.tolist()}"
    arr = obj.array
    if not isinstance(arr, np.ndarray) or arr.size == 0:
        return f"empty or non-array data {type(arr).__name__} {getattr(arr, 'shape', '')}"
    channels = isinstance(obj, Image) and obj.channel_names
    if arr.ndim != n + (1 if channels else 0):
        return f"array of shape {arr.shape} for a {n}D geometry (channels: {obj.channel_names!r})"
    if channels and len(obj.channel_names) != arr.shape[0]:
        return f"{len(obj.channel_names)} channel names for {arr.shape[0]} channels"
    if isinstance(obj, LabelMap):
        if arr.dtype.kind not in "ui" or arr.min() < 0:
            return f"label array of dtype {arr.dtype}, min {arr.min()}"
    elif arr.dtype.kind not in "uif":
        return f"image array of dtype {arr.dtype}"
    elif arr.dtype.kind == "f" and not np.isfinite(arr).all() and not obj.meta.get("warnings"):
        return "non-finite image values without a warning"
    return None


def check_read(out: Any) -> str | None:
    """Why what ``io.read`` returned is not sound, or ``None``."""
    from napari_cxseg.images import Image, LabelMap

    if not isinstance(out, list) or not out:
        return f"returned {type(out).__name__} {out!r:.80}"
    for obj in out:
        if not isinstance(obj, Image | LabelMap):
            return f"returned a {type(obj).__name__}"
        problem = _geometry_problem(obj)
        if problem:
            return f"{type(obj).__name__}: {problem}"
    return None


def _non_finite(value: Any, where: str = "card") -> str | None:
    if isinstance(value, float) and not math.isfinite(value):
        return f"{where} = {value}"
    if is_dataclass(value) and not isinstance(value, type):
        items = [(f.name, getattr(value, f.name)) for f in fields(value)]
    elif isinstance(value, dict):
        items = [(str(k), v) for k, v in value.items()]
    elif isinstance(value, list | tuple):
        items = [(str(i), v) for i, v in enumerate(value)]
    else:
        return None
    for k, v in items:
        if k != "metrics":  # free-form facts shown to the user, not used by the engine
            found = _non_finite(v, f"{where}.{k}")
            if found:
                return found
    return None


def check_card(card: Any) -> str | None:
    """Why a card a loader returned is not sound (not a card, non-finite numbers), or ``None``."""
    from napari_cxseg.models.cards import ModelCard

    if not isinstance(card, ModelCard):
        return f"returned a {type(card).__name__}"
    return _non_finite(card)


# ------------------------------------------------------------------------------ entries
def _read(case: dict[str, Any], names: list[str]) -> str | None:
    from napari_cxseg import io

    options = dict(case.get("options", {}))
    files = options.pop("_files", None)  # a list of DICOM slices
    return check_read(io.read(files or case["path"], **options))


def _load_card(case: dict[str, Any], names: list[str]) -> str | None:
    from napari_cxseg.models import cards

    return check_card(cards.load_card(case["path"]))


def _find_card(case: dict[str, Any], names: list[str]) -> str | None:
    from napari_cxseg.models import cards

    target = case.get("options", {}).get("name", case["path"])
    return check_card(cards.find_card(target))


def _bundle(case: dict[str, Any], names: list[str]) -> str | None:
    from napari_cxseg.models import cards
    from napari_cxseg.models.bundle import BundleModel

    card = cards.find_card(case["path"])
    problem = check_card(card)
    if problem or card.bundle_dir is None:
        return problem or "a bundle card without bundle_dir"
    names.append(card.bundle_dir.name)
    BundleModel(card.bundle_dir)
    return None


ENTRIES = {"read": _read, "load_card": _load_card, "find_card": _find_card,
           "bundle_zip": _bundle, "bundle_dir": _bundle}


def _chain(e: BaseException) -> list[BaseException]:
    out: list[BaseException] = []
    while e is not None and e not in out:
        out.append(e)
        e = e.__cause__ or e.__context__
    return out


def _where(e: BaseException) -> str:
    frames = traceback.extract_tb(e.__traceback__)[-3:]
    return " <- ".join(f"{Path(f.filename).name}:{f.lineno} {f.name}" for f in reversed(frames))


def run_one(case: dict[str, Any]) -> dict[str, Any]:
    """Run one case and judge it (``{"outcome", "message"}``)."""
    from napari_cxseg.images import CxsegError

    folder = Path(case["folder"])
    default_cache = os.environ.setdefault("CXSEG_FUZZ_CACHE", os.environ["CXSEG_CACHE_DIR"])
    cache = Path(case.get("cache") or default_cache)
    os.environ["CXSEG_CACHE_DIR"] = str(cache)
    before, cache_before = _tree(folder), _tree(cache, ZIPS)
    names = list(case["names"])
    try:
        problem = ENTRIES[case["entry"]](case, names)
        outcome, message = ("ok", "") if problem is None else ("bad-result", problem)
    except CaseTimeout:
        raise
    except CxsegError as e:
        message = str(e)
        if any(isinstance(x, MemoryError) for x in _chain(e)):
            outcome = "memory"
        else:
            outcome = "refused" if any(n in message for n in names) else "unnamed"
    except MemoryError as e:
        outcome, message = "memory", f"MemoryError at {_where(e)}"
    except BaseException as e:  # noqa: BLE001 - any other type is what the fuzz looks for
        outcome, message = "crash", f"{type(e).__name__}: {str(e)[:300]} at {_where(e)}"
    wrote = [f"input: {c}" for c in _changes(before, _tree(folder))]
    wrote += _cache_problems(case, cache, cache_before, _tree(cache, ZIPS))
    if wrote:
        outcome, message = "wrote", "; ".join(wrote[:5]) + f" ({outcome}: {message[:200]})"
    if len(message) > 700:  # a long path must not hide the end of the message
        message = message[:450] + " [...] " + message[-240:]
    return {"outcome": outcome, "message": message}
