"""Where model weights are, how they are fetched and how they are loaded safely.

* Files a card names live in the cache (:mod:`.cache`: ``$CXSEG_CACHE_DIR`` or
  ``~/.cache/napari-cxseg``) or in the package; :func:`~napari_cxseg.models.cache.cache_path`
  is the one gate that turns a card field into such a path.  ``file`` and ``torchscript``
  paths are the user's own: they are only read, never written, copied over or deleted.
* Downloads are all or nothing (:mod:`.downloads`): a temporary file, checked against
  ``Content-Length`` and the card's sha256, renamed into place only when complete.  Offline,
  the error names the missing file, the URL and the exact path where to put it by hand.
* A cached MONAI bundle is used only when complete (configs, metadata, weights, the version
  the card asks for); otherwise it is fetched again, or the error says what is missing.
* Downloaded weights without a sha256 in the card (TorchXRayVision publishes none) raise an
  :class:`UnverifiedWeightsWarning` naming the file.
* :func:`load_state_dict` always uses ``torch.load(..., weights_only=True)``: a weights file
  cannot run code.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..images import CxsegError
from .cache import (
    IN_PACKAGE,
    URL_NAME,
    ZOO_NAME,
    bundle_problems,
    bundle_weights_file,
    bundles_dir,
    cache_dir,
    cache_path,
    url_file_name,
    weights_dir,
)
from .downloads import download_file, fetch_bundle, sha256_file

if TYPE_CHECKING:
    from .cards import ModelCard

__all__ = ["PACKAGE_WEIGHTS_DIR", "UnverifiedWeightsWarning", "bundle_path", "bundles_dir", "cache_dir",
           "copy_into_cache", "download_file", "expected_weights_path", "load_into", "load_state_dict",
           "resolve_bundle", "resolve_weights", "sha256_file", "weights_dir", "weights_status"]

#: Weights shipped inside the package.
PACKAGE_WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"

#: Where TorchXRayVision keeps its own downloads (reused when present).
TORCHXRAYVISION_DIR = Path("~/.torchxrayvision/models_data").expanduser()

_FETCHED = ("url", "torchxrayvision")


class UnverifiedWeightsWarning(UserWarning):
    """Downloaded weights are used without a hash check (the card gives no sha256)."""


def _where(card: ModelCard) -> str:
    return f"model card {card.path or card.name}"


# ---------------------------------------------------------------------------- locating
def expected_weights_path(card: ModelCard) -> Path:
    """Where the card's weights are (or must be put), without downloading anything.

    Raises
    ------
    CxsegError
        When a field that names a file in the cache or the package is not a plain name.
    """
    w = card.weights
    if w.source == "package":
        return cache_path(PACKAGE_WEIGHTS_DIR, w.file, _where(card), "weights.file", IN_PACKAGE)
    if w.source in ("file", "torchscript"):  # the user's own file: only ever read
        p = Path(str(w.file)).expanduser()
        if p.is_absolute():
            return p
        if card.path is not None and (card.path.parent / p).exists():
            return card.path.parent / p
        return weights_dir() / p
    if w.source in _FETCHED:
        if w.file:
            return cache_path(weights_dir(), w.file, _where(card), "weights.file")
        return cache_path(weights_dir(), url_file_name(str(w.url)), _where(card), "weights.url", URL_NAME)
    if w.source == "bundle":
        return bundle_path(card) / "models" / "model.pt"
    raise CxsegError(f"model {card.name}: unknown weights source {w.source}")


def bundle_path(card: ModelCard) -> Path:
    """The bundle folder of a ``bundle`` card: the folder the user opened, or ``<cache>/bundles/<name>``."""
    if card.bundle_dir is not None:
        return card.bundle_dir
    return cache_path(bundles_dir(), card.weights.bundle, _where(card), "weights.bundle", ZOO_NAME, zoo=True)


def _xrv_copy(target: Path) -> Path:
    """TorchXRayVision's own copy of ``target`` (same name in its models_data folder)."""
    return cache_path(TORCHXRAYVISION_DIR, target.name, "TorchXRayVision weights", "file")


def weights_status(card: ModelCard) -> tuple[bool, str]:
    """Whether the weights are here, and a sentence that says where they are or what to do.

    Nothing is downloaded and nothing is hashed (hashes are checked when the weights are used).
    """
    try:
        return _status(card)
    except CxsegError as e:
        return False, str(e)


def _status(card: ModelCard) -> tuple[bool, str]:
    w = card.weights
    if w.source == "bundle":
        bdir = bundle_path(card)
        problems = bundle_problems(bdir, w.bundle_version)
        if not problems:
            return True, f"bundle {bdir}"
        if card.bundle_dir is not None:
            return False, f"bundle {bdir} is incomplete: {'; '.join(problems)}"
        if not bdir.exists():
            return False, (f"MONAI bundle '{w.bundle}' not downloaded yet: fetched on first use into {bdir} "
                           f"(offline: unpack the bundle there)")
        return False, (f"MONAI bundle '{w.bundle}' in {bdir} is incomplete ({'; '.join(problems)}): "
                       f"fetched again on first use")
    p = expected_weights_path(card)
    unverified = "" if w.sha256 else " (unverified: the card gives no sha256)"
    if w.source == "torchxrayvision":
        import importlib.util

        try:
            have_xrv = importlib.util.find_spec("torchxrayvision") is not None
        except ValueError:
            have_xrv = False
        alt = _xrv_copy(p)
        where = p if p.is_file() else alt if alt.is_file() else None
        if not have_xrv:
            return False, "needs `pip install torchxrayvision`" + (f"; weights at {where}{unverified}" if where else "")
        if where is not None:
            return True, f"{where}{unverified}"
        return False, f"downloaded on first use from {w.url} into {p}{unverified}"
    if p.is_file():
        return True, str(p) + (unverified if w.source in _FETCHED else "")
    if w.source == "url":
        return False, f"downloaded on first use from {w.url} into {p}"
    if w.source == "package":
        return False, f"package file {p} is missing (reinstall napari-cxseg)"
    return False, f"missing: put the weights file at {p}" + (f" ({card.notes})" if card.notes else "")


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
        When the file is missing and cannot be fetched (the message names the file, the URL
        and where to put it), or when a downloaded file does not match the card's sha256.

    Warns
    -----
    UnverifiedWeightsWarning
        When downloaded weights are used and the card gives no sha256 to check them.
    """
    w = card.weights
    if w.source == "bundle":
        bdir = resolve_bundle(card, download=download)
        model = bundle_weights_file(bdir)
        if model is None:  # pragma: no cover - resolve_bundle returns complete bundles only
            raise CxsegError(f"model {card.name}: bundle {bdir} has no models/model.pt or models/model.ts")
        return model
    target = expected_weights_path(card)
    if w.source == "torchxrayvision" and not target.is_file() and _xrv_copy(target).is_file():
        target = _xrv_copy(target)
    if target.is_file():
        if w.source in _FETCHED:
            _verify(card, target)
        return target
    if w.source in _FETCHED and w.url:
        if not download:
            raise CxsegError(
                f"model {card.name}: weights file {target.name} is missing and could not be downloaded "
                f"from {w.url} (downloads are disabled); download it by hand and put it at {target}"
            )
        download_file(str(w.url), target, w.sha256, what=f"weights of model {card.name}")
        if not w.sha256:
            _warn_unverified(card, target)
        return target
    if w.source == "package":
        raise CxsegError(f"model {card.name}: package weights file {target} is missing (reinstall napari-cxseg)")
    hint = f" ({card.notes})" if card.notes else ""
    raise CxsegError(f"model {card.name}: weights file {target.name} not found; put it at {target}{hint}")


def _verify(card: ModelCard, path: Path) -> None:
    expected = card.weights.sha256
    if not expected:
        _warn_unverified(card, path)
        return
    digest = sha256_file(path)
    if digest != expected.lower():
        raise CxsegError(
            f"model {card.name}: {path} has sha256 {digest}, expected {expected}; "
            f"delete it to download it again"
        )


def _warn_unverified(card: ModelCard, path: Path) -> None:
    warnings.warn(UnverifiedWeightsWarning(
        f"model {card.name}: weights file {path} is used unverified (the card gives no sha256); "
        "use it only if you trust where it came from"
    ), stacklevel=3)


def resolve_bundle(card: ModelCard, download: bool = True) -> Path:
    """The complete bundle folder of a ``bundle`` card, fetched with ``monai.bundle.download``.

    A cached bundle is used only when complete (:func:`~napari_cxseg.models.cache.bundle_problems`:
    configs, metadata, weights and ``weights.bundle_version`` when the card gives one);
    otherwise it is downloaded again into a temporary folder and swapped in when complete.
    A bundle folder the user opened is only read.

    Raises
    ------
    CxsegError
        For an incomplete folder of the user's, offline or on a failed download, naming the
        bundle, what is missing and the folder to unpack it into.
    """
    w = card.weights
    bdir = bundle_path(card)
    problems = bundle_problems(bdir, w.bundle_version)
    if not problems:
        return bdir
    if card.bundle_dir is not None:
        raise CxsegError(f"model {card.name}: bundle {bdir} is incomplete ({'; '.join(problems)}); "
                         "it was left as it is: complete it or open a complete bundle")
    name = str(w.bundle)
    version = f" --version {w.bundle_version}" if w.bundle_version else ""
    how = (f"download it on a machine with internet access (python -m monai.bundle download "
           f"--name {name}{version} --bundle_dir <dir>) and copy the folder to {bdir}")
    state = (f"MONAI bundle '{name}' is not in {bdir}" if not bdir.exists()
             else f"MONAI bundle '{name}' in {bdir} is incomplete ({'; '.join(problems)})")
    if not download:
        raise CxsegError(f"model {card.name}: {state}; {how}")
    try:
        fetch_bundle(name, w.bundle_version, bdir)
    except CxsegError as e:
        raise CxsegError(f"model {card.name}: {e}; {how}") from None
    except Exception as e:  # monai raises many kinds (URLError, HTTPError, ValueError, OSError)
        raise CxsegError(
            f"model {card.name}: could not download MONAI bundle '{name}' ({type(e).__name__}: {e}); "
            f"{state}; {how}"
        ) from None
    return bdir


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
    """Copy a weights file into ``<cache>/weights`` (the source is only read).

    The copy goes to a temporary file in the cache and is renamed into place, so a link in
    the cache is replaced, never written through.

    Parameters
    ----------
    src
        The file to copy.
    name
        The plain file name in the cache (default: the source's name).

    Returns
    -------
    Path
        The file in the cache.
    """
    src = Path(src)
    dst = cache_path(weights_dir(), name or src.name, f"copy of {src} into the cache", "name")
    if dst.exists() and os.path.samefile(src, dst):
        return dst
    dst.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=dst.name + ".", suffix=".part", dir=dst.parent)
    try:
        with os.fdopen(fd, "wb") as out, open(src, "rb") as fin:
            shutil.copyfileobj(fin, out)
        os.replace(tmp, dst)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return dst
