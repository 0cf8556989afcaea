"""Versions of a model trained in the viewer: every run is a new MONAI bundle folder.

::

    <models root>/<name>/v1/         bundle of the first run (configs/, models/model.pt, docs/, train/)
    <models root>/<name>/v2/         the next run (a fine-tuning of v1, or a new training)
    <models root>/<name>/versions.json   one record per run: started from, data, settings,
                                          Dice before/after on the held-out cases

The models root is ``<cache>/models`` (``$CXSEG_CACHE_DIR``). The user card ``<name>``
(:func:`~napari_cxseg.training.bundle_export.register_card`) points at the newest finished
version; :func:`use_version` points it at an older one again. Versions are never deleted here.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from ..images import CxsegError

_VERSION = re.compile(r"^v(\d+)$")


def models_root() -> Path:
    """``<cache>/models``: where the viewer's training runs write their bundles."""
    from ..models.weights import cache_dir

    return cache_dir() / "models"


def check_name(name: str) -> str:
    """A model name usable as a folder and a card name.

    Raises
    ------
    CxsegError
        For an empty name or one with characters other than letters, digits, ``-``, ``_``, ``.``.
    """
    name = name.strip()
    if not name or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
        raise CxsegError(f"model name {name!r}: use letters, digits, '-', '_' or '.' (no spaces or slashes)")
    return name


def version_dirs(name: str) -> list[tuple[int, Path]]:
    """``[(number, folder)]`` of a model's versions, oldest first."""
    base = models_root() / check_name(name)
    if not base.is_dir():
        return []
    out = [(int(m.group(1)), p) for p in base.iterdir() if p.is_dir() and (m := _VERSION.match(p.name))]
    return sorted(out)


def next_version_dir(name: str) -> Path:
    """The folder of the next run (``v1`` for a new model)."""
    dirs = version_dirs(name)
    n = dirs[-1][0] + 1 if dirs else 1
    return models_root() / check_name(name) / f"v{n}"


def finished(vdir: Path) -> bool:
    """Whether a version's run ended with a bundle (``models/model.pt``)."""
    return (Path(vdir) / "models" / "model.pt").is_file()


def resumable(vdir: Path) -> bool:
    """Whether a version's run stopped before the end with a checkpoint to resume from."""
    return (Path(vdir) / "train" / "last.pt").is_file() and not finished(vdir)


def lineage(card: Any) -> str | None:
    """The model name whose version folders hold this card's weights (None: not trained here)."""
    f = getattr(card.weights, "file", None)
    if card.weights.source != "file" or not f:
        return None
    try:
        p = Path(f).expanduser().resolve()
        rel = p.relative_to(models_root().resolve())
    except (OSError, ValueError):
        return None
    parts = rel.parts
    if len(parts) == 4 and _VERSION.match(parts[1]) and parts[2:] == ("models", "model.pt"):
        return parts[0]
    return None


def version_of(card: Any) -> Path | None:
    """The version folder of a card trained here (None otherwise)."""
    name = lineage(card)
    return Path(card.weights.file).expanduser().resolve().parents[1] if name else None


def read_log(name: str) -> list[dict[str, Any]]:
    """The records of ``versions.json`` (empty when there is none or it is unreadable)."""
    path = models_root() / check_name(name) / "versions.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    return [r for r in data.get("versions", []) if isinstance(r, dict)] if isinstance(data, dict) else []


def record(name: str, vdir: Path, **info: Any) -> None:
    """Add or update the record of one version in ``versions.json`` (atomically)."""
    from ..io.atomic import atomic_write

    rows = [r for r in read_log(name) if r.get("version") != Path(vdir).name]
    old = next((r for r in read_log(name) if r.get("version") == Path(vdir).name), {})
    rows.append({**old, "version": Path(vdir).name, **info})
    rows.sort(key=lambda r: int(_VERSION.match(str(r.get("version", "v0"))).group(1))
              if _VERSION.match(str(r.get("version", ""))) else 0)
    path = models_root() / check_name(name) / "versions.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps({"model": name, "versions": rows}, indent=1) + "\n"
    atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def use_version(name: str, vdir: Path) -> Path:
    """Point the user card ``name`` at a finished version (e.g. back to an older one).

    Returns
    -------
    Path
        The card file.

    Raises
    ------
    CxsegError
        When the version did not finish (no bundle) or its card cannot be read.
    """
    from dataclasses import replace

    from ..models.cards import load_card
    from .bundle_export import register_card

    vdir = Path(vdir)
    if not finished(vdir):
        raise CxsegError(f"version {vdir} has no trained weights (models/model.pt): it did not finish")
    card = load_card(vdir / "docs" / "napari_cxseg_card.yaml")
    rec = next((r for r in read_log(name) if r.get("version") == vdir.name), {})
    if rec.get("metrics"):
        card = replace(card, metrics=dict(rec["metrics"]))
    return register_card(replace(card, notes=f"version {vdir.name}"), vdir, name)
