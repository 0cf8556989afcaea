"""Where napari-cxseg writes model files, and the one gate a card field passes to become a path.

* The cache folder is ``$CXSEG_CACHE_DIR`` or ``~/.cache/napari-cxseg``: downloaded weights in
  ``weights/``, MONAI bundles in ``bundles/``, user cards in ``cards/``.
* A card names files in the cache (``weights.file``, ``weights.bundle``) by plain names only.
  :func:`cache_path` is the single place where such a name becomes a path: it refuses anything
  that is not a plain name and checks that the result lies directly inside its folder.  Card
  validation calls :func:`check_plain_name`, the same check, so a bad card fails when it is
  loaded, and code that builds cards by hand still cannot escape the cache.
* Files in the cache are only ever replaced (a temporary file in the same folder, then
  ``os.replace``), never written through, so a link placed in the cache cannot redirect a write.
* :func:`bundle_problems` says whether a bundle folder is complete (configs, metadata, weights,
  the version asked for); incomplete cached bundles are never used.

This module imports neither torch nor MONAI.
"""

from __future__ import annotations

import os
import re
import urllib.parse
from pathlib import Path

from ..images import CxsegError

#: Names Windows treats as devices whatever the extension (``NUL.pt`` is the null device).
_WINDOWS_DEVICES = frozenset(
    ["CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$"]
    + [f"{p}{i}" for p in ("COM", "LPT") for i in "123456789¹²³"]
)
#: MONAI Model Zoo bundle names and versions (``spleen_ct_segmentation``, ``0.5.9``,
#: ``1.0.0-rc1+x``): these also become parts of download URLs and zip names in MONAI.
_ZOO_WORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,127}")
#: What the name fields must be, as refusals say it.
IN_CACHE = "a plain file name inside the weights cache"
IN_PACKAGE = "a plain file name inside the package weights folder"
URL_NAME = "an https:// URL ending in a plain file name (or give weights.file)"
ZOO_NAME = "a MONAI Model Zoo bundle name (to use a bundle folder, open the folder itself)"
ZOO_VERSION = "a MONAI bundle version such as 0.5.9"
#: Where a bundle's inference config may be (as ``bundle.find_config`` looks for it).
BUNDLE_CONFIGS = ("inference.json", "inference.yaml", "inference.yml")
BUNDLE_WEIGHTS = ("model.pt", "model.ts")


def cache_dir() -> Path:
    """The cache folder (``$CXSEG_CACHE_DIR`` or ``~/.cache/napari-cxseg``)."""
    env = os.environ.get("CXSEG_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "napari-cxseg"


def weights_dir() -> Path:
    """Folder for downloaded and user-provided weight files (``<cache>/weights``)."""
    return cache_dir() / "weights"


def bundles_dir() -> Path:
    """Folder for MONAI bundles (``<cache>/bundles``)."""
    return cache_dir() / "bundles"


# ---------------------------------------------------------------------------- names
def plain_name_problem(name: object) -> str | None:
    """Why ``name`` is not a plain file name that stays inside one folder, or ``None``.

    Refused: empty names, NUL and other control characters, path separators of either OS
    (``/`` and ``\\``), ``:`` (Windows drive letters and alternate data streams), ``..`` and
    ``.``, leading or trailing spaces, a trailing dot (Windows drops it), Windows device names
    (``CON``, ``NUL.pt`` ...) and names over 255 bytes.

    Parameters
    ----------
    name
        The candidate name (anything; non-text is refused).

    Returns
    -------
    str or None
        A short reason, or ``None`` when the name is plain.
    """
    if not isinstance(name, str):
        return f"not text but {type(name).__name__}"
    if not name:
        return "it is empty"
    if "\x00" in name:
        return "it contains a NUL character"
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        return "it contains a control character"
    if "/" in name or "\\" in name:
        return "it contains a path separator"
    if ":" in name:
        return "it contains ':' (a drive letter or a stream name)"
    if ".." in name or name == ".":
        return "it contains '..'"
    if name != name.strip() or name.endswith("."):
        return "it starts or ends with a space or ends with a dot"
    if name.split(".", 1)[0].upper() in _WINDOWS_DEVICES:
        return "it is a reserved Windows device name"
    if len(name.encode("utf-8", "surrogatepass")) > 255:
        return "it is longer than 255 bytes"
    if os.path.isabs(name):  # pragma: no cover - covered by the separator and ':' rules
        return "it is an absolute path"
    return None


def zoo_name_problem(name: object) -> str | None:
    """Why ``name`` is not a MONAI Model Zoo bundle name or version, or ``None``.

    A plain name (:func:`plain_name_problem`) made of letters, digits and ``._+-`` only,
    starting with a letter or digit.
    """
    problem = plain_name_problem(name)
    if problem is None and not _ZOO_WORD.fullmatch(str(name)):
        problem = "only letters, digits and . _ + - are allowed"
    return problem


def url_file_name(url: str) -> str:
    """The file name a URL ends in (its last path segment, percent-decoded; may be unsafe)."""
    path = urllib.parse.urlsplit(str(url)).path
    return urllib.parse.unquote(path.rsplit("/", 1)[-1])


def name_error(where: str, field: str, value: object, wanted: str, problem: str) -> CxsegError:
    """The refusal of a field that should name something inside a folder.

    ``where`` names the card (``"model card /x/evil.yaml"``) or the operation.
    """
    return CxsegError(f"{where}: field '{field}' must be {wanted}, got {value!r} ({problem})")


def check_plain_name(value: object, where: str, field: str,
                     wanted: str = IN_CACHE,
                     zoo: bool = False) -> str:
    """Return ``value`` when it is a plain name, else raise naming the card and the field.

    Parameters
    ----------
    value
        The field's value.
    where, field
        The card (``"model card <file>"``) or operation, and the field, for the message.
    wanted
        What the field must be, for the message.
    zoo
        Use the stricter MONAI Model Zoo rule (:func:`zoo_name_problem`).

    Raises
    ------
    CxsegError
        ``<where>: field '<field>' must be <wanted>, got '<value>' (<why>)``.
    """
    problem = zoo_name_problem(value) if zoo else plain_name_problem(value)
    if problem is not None:
        raise name_error(where, field, value, wanted, problem)
    return str(value)


def cache_path(root: str | os.PathLike, value: object, where: str, field: str,
               wanted: str = IN_CACHE, zoo: bool = False) -> Path:
    """The path ``root / value`` for a card field, verified to lie directly inside ``root``.

    Every place that turns a card field into a path to read, download, copy or unpack into
    goes through this function.

    Parameters
    ----------
    root
        The folder (the weights cache, the package weights folder, the bundle cache).
    value
        The card field's value (a plain name).
    where, field, wanted, zoo
        As for :func:`check_plain_name`.

    Returns
    -------
    Path
        ``Path(root) / value``.

    Raises
    ------
    CxsegError
        When ``value`` is not a plain name or the path would leave ``root``.
    """
    name = check_plain_name(value, where, field, wanted, zoo)
    root = Path(root)
    path = root / name
    # Belt and braces: after normalisation the path must still be one level below root.
    if os.path.dirname(os.path.normpath(os.path.abspath(path))) != os.path.normpath(os.path.abspath(root)):
        raise name_error(where, field, value, wanted, f"it leaves {root}")
    return path


# ---------------------------------------------------------------------------- bundles
def bundle_weights_file(bdir: str | os.PathLike) -> Path | None:
    """The bundle's ``models/model.pt`` (or ``model.ts``) when present and not empty."""
    for name in BUNDLE_WEIGHTS:
        p = Path(bdir) / "models" / name
        if p.is_file() and p.stat().st_size > 0:
            return p
    return None


def _read_metadata(bdir: Path) -> dict | None:
    from ..io.documents import load_json

    try:
        meta = load_json(bdir / "configs" / "metadata.json", 16 << 20, "a bundle's metadata.json")
    except CxsegError:
        return None
    return meta if isinstance(meta, dict) else None


def bundle_version(bdir: str | os.PathLike) -> str | None:
    """The ``version`` in ``configs/metadata.json``, or ``None`` when it cannot be read."""
    meta = _read_metadata(Path(bdir))
    v = meta.get("version") if meta is not None else None
    return str(v) if isinstance(v, str | int | float) and not isinstance(v, bool) else None


def bundle_problems(bdir: str | os.PathLike, version: str | None = None) -> list[str]:
    """What is missing from a bundle folder for it to be used; empty when it is complete.

    Complete means: the folder exists, ``configs/metadata.json`` is a JSON object, an
    inference config (``configs/inference.json`` / ``.yaml`` / ``.yml``) is there, the weights
    (``models/model.pt`` or ``models/model.ts``, not empty) are there and, when ``version`` is
    given, ``metadata.json`` says that version.

    Parameters
    ----------
    bdir
        The bundle folder.
    version
        The version asked for (``weights.bundle_version``), or ``None`` for any.

    Returns
    -------
    list of str
        Short descriptions such as ``"no configs/metadata.json"`` or
        ``"metadata.json says version 0.5.8, not 0.5.9"``.
    """
    bdir = Path(bdir)
    if not bdir.is_dir():
        return ["the folder does not exist"]
    problems = []
    meta = bdir / "configs" / "metadata.json"
    if not meta.is_file():
        problems.append("no configs/metadata.json")
    if not any((bdir / "configs" / n).is_file() for n in BUNDLE_CONFIGS):
        problems.append("no configs/inference.json or configs/inference.yaml")
    if bundle_weights_file(bdir) is None:
        problems.append("no models/model.pt or models/model.ts")
    if meta.is_file():
        found = bundle_version(bdir)
        if _read_metadata(bdir) is None:
            problems.append("configs/metadata.json is not a readable JSON object")
        elif version is not None and found is None:
            problems.append(f"configs/metadata.json has no version (version {version} was asked for)")
        elif version is not None and found != str(version):
            problems.append(f"configs/metadata.json says version {found}, not {version}")
    return problems
