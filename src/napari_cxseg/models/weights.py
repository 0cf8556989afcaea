"""Where model weights live, how they are fetched and how they are loaded safely.

* The cache folder is ``$CXSEG_CACHE_DIR`` or ``~/.cache/napari-cxseg`` (weights in
  ``weights/``, MONAI bundles in ``bundles/``, user cards in ``cards/``).
* Downloads go to a temporary file, are checked against the card's sha256 and only then
  renamed into place.  Offline, the error names the missing file, the URL and the exact path
  where to put the file by hand.
* :func:`load_state_dict` always uses ``torch.load(..., weights_only=True)``: a weights file
  cannot run code.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..images import CxsegError

if TYPE_CHECKING:
    from .cards import ModelCard

#: Weights shipped inside the package.
PACKAGE_WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"

#: Where TorchXRayVision keeps its own downloads (reused when present).
TORCHXRAYVISION_DIR = Path("~/.torchxrayvision/models_data").expanduser()


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


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


# ---------------------------------------------------------------------------- locating
def expected_weights_path(card: ModelCard) -> Path:
    """Where the card's weights are (or must be put), without downloading anything."""
    w = card.weights
    if w.source == "package":
        return PACKAGE_WEIGHTS_DIR / str(w.file)
    if w.source in ("file", "torchscript"):
        p = Path(str(w.file)).expanduser()
        if p.is_absolute():
            return p
        if card.path is not None and (card.path.parent / p).exists():
            return card.path.parent / p
        return weights_dir() / p
    if w.source in ("url", "torchxrayvision"):
        name = w.file or Path(urllib.request.url2pathname(str(w.url).rsplit("/", 1)[-1])).name
        return weights_dir() / name
    if w.source == "bundle":
        return bundle_path(card) / "models" / "model.pt"
    raise CxsegError(f"model {card.name}: unknown weights source {w.source}")


def bundle_path(card: ModelCard) -> Path:
    """The bundle folder of a card with ``weights.source: bundle``."""
    if card.bundle_dir is not None:
        return card.bundle_dir
    ref = str(card.weights.bundle)
    p = Path(ref).expanduser()
    if p.is_absolute() or p.exists():
        return p
    return bundles_dir() / ref


def weights_status(card: ModelCard) -> tuple[bool, str]:
    """Whether the weights are here, and a sentence that says where they are or what to do.

    Nothing is downloaded.
    """
    w = card.weights
    if w.source == "bundle":
        bdir = bundle_path(card)
        model = _bundle_model_file(bdir)
        if model is not None:
            return True, f"bundle {bdir}"
        if card.bundle_dir is not None or Path(str(w.bundle)).expanduser().exists():
            return False, f"bundle {bdir} has no models/model.pt or models/model.ts"
        return False, (f"MONAI bundle '{w.bundle}' not downloaded yet: fetched on first use into {bdir} "
                       f"(offline: unpack the bundle there)")
    if w.source == "torchxrayvision":
        p = expected_weights_path(card)
        alt = TORCHXRAYVISION_DIR / p.name
        try:
            import importlib.util

            have_xrv = importlib.util.find_spec("torchxrayvision") is not None
        except ValueError:
            have_xrv = False
        where = p if p.is_file() else alt if alt.is_file() else None
        if not have_xrv:
            return False, "needs `pip install torchxrayvision`" + (f"; weights at {where}" if where else "")
        if where is not None:
            return True, str(where)
        return False, f"downloaded on first use from {w.url} into {p}"
    p = expected_weights_path(card)
    if p.is_file():
        return True, str(p)
    if w.source == "url":
        return False, f"downloaded on first use from {w.url} into {p}"
    if w.source == "package":
        return False, f"package file {p} is missing (reinstall napari-cxseg)"
    return False, f"missing: put the weights file at {p}" + (f" ({card.notes})" if card.notes else "")


def _bundle_model_file(bdir: Path) -> Path | None:
    for name in ("model.pt", "model.ts"):
        if (bdir / "models" / name).is_file():
            return bdir / "models" / name
    return None


# ---------------------------------------------------------------------------- resolving
def resolve_weights(card: ModelCard, download: bool = True) -> Path:
    """The local weights file of a card, downloading it into the cache when needed.

    Parameters
    ----------
    card
        The model card.
    download
        Allow network access for ``url``, ``torchxrayvision`` and ``bundle`` sources.

    Returns
    -------
    Path
        The weights file (``models/model.pt`` or ``models/model.ts`` for bundles).

    Raises
    ------
    CxsegError
        When the file is missing and cannot be fetched; the message names the file, the URL
        and where to put it.
    """
    w = card.weights
    if w.source == "bundle":
        bdir = resolve_bundle(card, download=download)
        model = _bundle_model_file(bdir)
        if model is None:
            raise CxsegError(f"model {card.name}: bundle {bdir} has no models/model.pt or models/model.ts")
        return model
    target = expected_weights_path(card)
    if w.source == "torchxrayvision" and not target.is_file() and (TORCHXRAYVISION_DIR / target.name).is_file():
        target = TORCHXRAYVISION_DIR / target.name
    if target.is_file():
        if w.sha256 and w.source in ("url", "torchxrayvision"):
            _check_sha256(target, w.sha256, card)
        return target
    if w.source in ("url", "torchxrayvision") and w.url:
        if not download:
            raise CxsegError(_missing_download_message(card, target, "downloads are disabled"))
        download_file(str(w.url), target, w.sha256, what=f"weights of model {card.name}")
        return target
    if w.source == "package":
        raise CxsegError(f"model {card.name}: package weights file {target} is missing (reinstall napari-cxseg)")
    hint = f" ({card.notes})" if card.notes else ""
    raise CxsegError(
        f"model {card.name}: weights file {target.name} not found; put it at {target}{hint}"
    )


def resolve_bundle(card: ModelCard, download: bool = True) -> Path:
    """The bundle folder of a ``bundle`` card, downloaded with ``monai.bundle.download``.

    Raises
    ------
    CxsegError
        Offline or on a failed download, naming the bundle and the folder to unpack it into.
    """
    bdir = bundle_path(card)
    if _bundle_model_file(bdir) is not None:
        return bdir
    if card.bundle_dir is not None or Path(str(card.weights.bundle)).expanduser().is_absolute():
        raise CxsegError(f"model {card.name}: bundle {bdir} has no models/model.pt or models/model.ts")
    name = str(card.weights.bundle)
    how = (f"download it on a machine with internet access (python -m monai.bundle download "
           f"--name {name} --bundle_dir <dir>) and copy the folder to {bdir}")
    if not download:
        raise CxsegError(f"model {card.name}: MONAI bundle '{name}' is not in {bdir}; {how}")
    from monai.bundle import download as bundle_download

    bundles_dir().mkdir(parents=True, exist_ok=True)
    try:
        bundle_download(name=name, version=card.weights.bundle_version, bundle_dir=str(bundles_dir()),
                        progress=False)
    except Exception as e:  # monai raises many kinds (URLError, HTTPError, ValueError, OSError)
        raise CxsegError(
            f"model {card.name}: could not download MONAI bundle '{name}' ({type(e).__name__}: {e}); {how}"
        ) from None
    if _bundle_model_file(bdir) is None:
        raise CxsegError(f"model {card.name}: downloaded bundle '{name}' has no models/model.pt in {bdir}; {how}")
    return bdir


def _missing_download_message(card: ModelCard, target: Path, why: str) -> str:
    return (f"model {card.name}: weights file {target.name} is missing and could not be downloaded "
            f"from {card.weights.url} ({why}); download it by hand and put it at {target}")


def download_file(url: str, target: str | os.PathLike, sha256: str | None = None, what: str = "file",
                  timeout: float = 60.0) -> Path:
    """Download ``url`` to ``target`` atomically, checking the sha256 when given.

    Raises
    ------
    CxsegError
        Offline / HTTP errors (naming the file, the URL and the path to put it at) and hash
        mismatches (the partial file is removed).
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=target.name + ".", suffix=".part", dir=target.parent)
    h = hashlib.sha256()
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as resp:
            while block := resp.read(1 << 20):
                h.update(block)
                out.write(block)
    except (urllib.error.URLError, OSError, ValueError) as e:
        Path(tmp).unlink(missing_ok=True)
        reason = getattr(e, "reason", None) or e
        raise CxsegError(
            f"{what}: {target.name} is missing and could not be downloaded from {url} ({reason}); "
            f"download it by hand and put it at {target}"
        ) from None
    digest = h.hexdigest()
    if sha256 and digest != sha256.lower():
        Path(tmp).unlink(missing_ok=True)
        raise CxsegError(
            f"{what}: {url} gave a file with sha256 {digest}, expected {sha256}; nothing was saved "
            f"(put the right file at {target})"
        )
    os.replace(tmp, target)
    return target


def _check_sha256(path: Path, expected: str, card: ModelCard) -> None:
    digest = sha256_file(path)
    if digest != expected.lower():
        raise CxsegError(
            f"model {card.name}: {path} has sha256 {digest}, expected {expected}; "
            f"delete it to download it again"
        )


# ---------------------------------------------------------------------------- loading
_CHECKPOINT_KEYS = ("state_dict", "model", "model_state_dict", "network", "net", "weights")
#: Prefixes that wrappers add to every key (DataParallel/DDP, torch.compile): always stripped.
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")
#: Prefixes that may or may not belong to the network's own names (MONAI's UNet keys start
#: with ``model.``): stripped or added only when that makes the keys match the network.
_OPTIONAL_PREFIXES = ("model.", "net.", "network.")


def load_state_dict(path: str | os.PathLike) -> dict[str, Any]:
    """Load a state dict with ``torch.load(path, map_location="cpu", weights_only=True)``.

    A checkpoint dict holding the weights under ``state_dict``/``model``/``network``/``net`` is
    unwrapped, and wrapper prefixes common to all keys (``module.`` from DataParallel,
    ``_orig_mod.`` from ``torch.compile``) are stripped.  :func:`load_into` also reconciles
    ``model.``-style prefixes with the network's own names.

    Raises
    ------
    CxsegError
        When the file is missing, is not a weights file, or holds anything but tensors and
        plain containers (``weights_only`` refuses pickled code).
    """
    import pickle

    import torch

    path = Path(path)
    if not path.is_file():
        raise CxsegError(f"weights file {path} does not exist")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CxsegError(
            f"weights file {path} was refused: it holds more than tensors (weights_only loading: {first}); "
            "only plain state dicts are loaded"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError, AttributeError) as e:
        raise CxsegError(f"weights file {path} could not be read as PyTorch weights: {e}") from None
    return _unwrap_state_dict(obj, path)


def _unwrap_state_dict(obj: Any, path: Path) -> dict[str, Any]:
    import torch

    for _ in range(3):
        if isinstance(obj, dict) and not _is_tensor_dict(obj):
            inner = next((obj[k] for k in _CHECKPOINT_KEYS if isinstance(obj.get(k), dict)), None)
            if inner is None:
                break
            obj = inner
    if not isinstance(obj, dict) or not obj or not _is_tensor_dict(obj):
        raise CxsegError(f"weights file {path} does not hold a state dict (name -> tensor)")
    sd = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    changed = True
    while changed:
        changed = False
        for pre in _WRAPPER_PREFIXES:
            if all(k.startswith(pre) for k in sd):
                sd = {k[len(pre):]: v for k, v in sd.items()}
                changed = True
    return sd


def load_into(network: Any, state: dict[str, Any] | str | os.PathLike, what: str = "network") -> Any:
    """Load weights (a state dict or a file) into ``network`` strictly.

    Keys that differ from the network's only by a ``model.``/``net.``/``network.`` prefix are
    reconciled.  Returns the network.

    Raises
    ------
    CxsegError
        Naming missing and unexpected keys or mismatched shapes (the card's network args do not
        fit the weights).
    """
    sd = state if isinstance(state, dict) else load_state_dict(state)
    src = "" if isinstance(state, dict) else f" from {state}"
    want = set(network.state_dict().keys())
    sd = _match_prefixes(sd, want)
    try:
        network.load_state_dict(sd, strict=True)
    except RuntimeError as e:
        missing = sorted(want - set(sd))
        unexpected = sorted(set(sd) - want)
        detail = str(e).strip().splitlines()
        msg = f"weights{src} do not fit the {what}"
        if missing or unexpected:
            msg += f": {len(missing)} missing keys (e.g. {missing[:3]}), {len(unexpected)} unexpected (e.g. {unexpected[:3]})"
        else:
            msg += f": {detail[-1].strip() if detail else e}"
        raise CxsegError(msg + "; check the card's network args") from None
    return network


def _match_prefixes(sd: dict[str, Any], want: set[str]) -> dict[str, Any]:
    keys = set(sd)
    if keys == want or not want:
        return sd
    for pre in _OPTIONAL_PREFIXES:
        if all(k.startswith(pre) for k in keys):
            stripped = {k[len(pre):]: v for k, v in sd.items()}
            if set(stripped) == want:
                return stripped
        added = {pre + k: v for k, v in sd.items()}
        if set(added) == want:
            return added
    return sd


def _is_tensor_dict(d: dict) -> bool:
    import torch

    vals = list(d.values())
    return bool(vals) and sum(isinstance(v, torch.Tensor) for v in vals) >= max(1, len(vals) // 2)


def copy_into_cache(src: str | os.PathLike, name: str | None = None) -> Path:
    """Copy a weights file into ``<cache>/weights`` (used by ``file`` cards and training)."""
    src = Path(src)
    dst = weights_dir() / (name or src.name)
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(src, dst)
    return dst
