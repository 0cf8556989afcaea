"""Downloads that are all or nothing: a file or bundle is in place complete and checked, or absent.

* :func:`download_file` streams into a temporary file in the target's own folder, checks the
  byte count against ``Content-Length`` and the sha256 when one is given, and only then renames
  the file into place.  The temporary file is removed in a ``finally``, whatever stops the
  download (network errors, any other exception, Ctrl-C).
* :func:`fetch_bundle` runs ``monai.bundle.download`` into a temporary folder beside the
  destination and moves the bundle into place only when it is complete
  (:func:`~napari_cxseg.models.cache.bundle_problems`).
* Only ``https`` is fetched (``http`` only from this machine's loopback address, for local
  mirrors and tests), and a redirect may not leave ``https``.
"""

from __future__ import annotations

import hashlib
import http.client
import ipaddress
import os
import shutil
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from ..images import CxsegError
from .cache import bundle_problems

_CHUNK = 1 << 20


def sha256_file(path: str | os.PathLike, chunk: int = _CHUNK) -> str:
    """Hex sha256 of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def url_problem(url: object, loopback_http: bool = True) -> str | None:
    """Why ``url`` may not be downloaded from, or ``None``.

    Parameters
    ----------
    url
        The URL.
    loopback_http
        Also accept ``http`` to a loopback address (``127.0.0.1``, ``::1``, ``localhost``),
        which never leaves this machine (local mirrors, tests).  Cards may not use it.

    Returns
    -------
    str or None
        A short reason, or ``None`` for ``https://host/...``.
    """
    if not isinstance(url, str) or not url:
        return "it is empty"
    if any(ord(c) <= 32 or ord(c) == 127 for c in url):
        return "it contains spaces or control characters"
    try:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname
    except ValueError as e:
        return f"it is not a valid URL ({e})"
    scheme = parts.scheme.lower()
    if scheme == "https" and host:
        return None
    if scheme == "http" and host and loopback_http and _is_loopback(host):
        return None
    if scheme == "https":
        return "it names no host"
    return f"only https:// URLs are downloaded, not {scheme or 'a URL without scheme'}:"


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _HttpsOnlyRedirects(urllib.request.HTTPRedirectHandler):
    """Follow redirects only to URLs that :func:`url_problem` accepts (no https -> http)."""

    def redirect_request(self, req: Any, fp: Any, code: int, msg: str, headers: Any,
                         newurl: str) -> Any:
        problem = url_problem(newurl)
        if problem is not None or (req.full_url.lower().startswith("https:")
                                   and not newurl.lower().startswith("https:")):
            raise urllib.error.HTTPError(newurl, code, f"refused redirect to {newurl}", headers, fp)
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _open(url: str, timeout: float) -> Any:
    """Open ``url`` for reading (the one place that touches the network)."""
    return urllib.request.build_opener(_HttpsOnlyRedirects).open(url, timeout=timeout)


def _content_length(resp: Any) -> int | None:
    headers = getattr(resp, "headers", None)
    value = headers.get("Content-Length") if headers is not None else None
    try:
        n = int(value) if value is not None else None
    except (TypeError, ValueError):
        return None
    return n if n is not None and n >= 0 else None


def download_file(url: str, target: str | os.PathLike, sha256: str | None = None, what: str = "file",
                  timeout: float = 60.0) -> Path:
    """Download ``url`` to ``target``, all or nothing.

    The data go to a temporary ``<target>.<random>.part`` in the target's folder; the file is
    renamed to ``target`` only when the stream ended, the byte count matches
    ``Content-Length`` (when the server sent one) and the sha256 matches (when given).  The
    temporary file is removed whatever stops the download, ``KeyboardInterrupt`` included, so
    no partial file ever survives and an existing ``target`` is left as it was.

    Parameters
    ----------
    url
        An ``https`` URL (see :func:`url_problem`).
    target
        Where the file goes.
    sha256
        The expected hex digest, or ``None`` to skip the check.
    what
        What the file is, for messages (e.g. ``"weights of model cxr-anatomy"``).
    timeout
        Seconds to wait for the server.

    Returns
    -------
    Path
        ``target``.

    Raises
    ------
    CxsegError
        For refused URLs, network and HTTP errors, short reads and hash mismatches; the message
        names the file, the URL and where to put the file by hand.
    """
    target = Path(target)
    problem = url_problem(url)
    if problem is not None:
        raise CxsegError(f"{what}: refused to download {url!r} ({problem}); put the file at {target}")
    by_hand = f"download it by hand and put it at {target}"
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=target.name + ".", suffix=".part", dir=target.parent)
    tmp = Path(tmp_name)
    try:
        h = hashlib.sha256()
        got = 0
        expected = None
        try:
            with os.fdopen(fd, "wb") as out, _open(url, timeout) as resp:
                expected = _content_length(resp)
                while block := resp.read(_CHUNK):
                    h.update(block)
                    out.write(block)
                    got += len(block)
                out.flush()
                os.fsync(out.fileno())
        except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as e:
            reason = getattr(e, "reason", None) or e
            raise CxsegError(
                f"{what}: {target.name} is missing and could not be downloaded from {url} "
                f"({type(e).__name__}: {reason}); nothing was saved; {by_hand}"
            ) from None
        if expected is not None and got != expected:
            raise CxsegError(
                f"{what}: the download of {target.name} from {url} gave {got} of the {expected} bytes "
                f"the server announced; nothing was saved; try again or {by_hand}"
            )
        digest = h.hexdigest()
        if sha256 and digest != sha256.lower():
            raise CxsegError(
                f"{what}: {url} gave a file with sha256 {digest}, expected {sha256}; nothing was saved "
                f"(put the right file at {target})"
            )
        try:
            os.replace(tmp, target)
        except OSError as e:
            raise CxsegError(f"{what}: could not put the downloaded file at {target} ({e})") from None
    finally:
        tmp.unlink(missing_ok=True)
    return target


def fetch_bundle(name: str, version: str | None, dest: str | os.PathLike) -> Path:
    """Download MONAI Model Zoo bundle ``name`` into the folder ``dest``, all or nothing.

    ``monai.bundle.download`` runs into a temporary folder beside ``dest``; the bundle is moved
    to ``dest`` only when it is complete (configs, metadata, weights, the version asked for),
    replacing an incomplete folder there.  The temporary folder is removed whatever happens.

    Parameters
    ----------
    name
        The zoo name (a plain name, e.g. ``spleen_ct_segmentation``).
    version
        The version to fetch, or ``None`` for the latest.
    dest
        The bundle folder to create (``<cache>/bundles/<name>``).

    Returns
    -------
    Path
        ``dest``.

    Raises
    ------
    CxsegError
        When the downloaded bundle is incomplete.  Errors of ``monai.bundle.download`` itself
        (network, HTTP, unknown name) propagate unchanged for the caller to explain.
    """
    from monai.bundle import download as bundle_download

    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent))
    try:
        bundle_download(name=name, version=version, bundle_dir=str(tmp), progress=False)
        got = tmp / name
        problems = bundle_problems(got, version)
        if problems:
            raise CxsegError(
                f"the downloaded MONAI bundle '{name}' is incomplete ({'; '.join(problems)}); "
                f"nothing was put in {dest}"
            )
        _swap_into_place(got, dest, tmp / ".previous", version)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def _swap_into_place(new: Path, dest: Path, aside: Path, version: str | None) -> None:
    """Move folder ``new`` to ``dest``; an old ``dest`` is moved to ``aside`` (then deleted)."""
    if dest.is_symlink() or dest.exists():
        os.replace(dest, aside)  # a link is moved itself, never what it points to
    try:
        os.replace(new, dest)
    except OSError:
        if bundle_problems(dest, version):  # another process may have just put a complete one
            raise
