"""Unpacking a MONAI bundle zip into the cache: all or nothing, and nothing outside its folder.

The zip's member list is checked before anything is written: plain relative names (no ``..``,
no absolute or drive paths, no NUL, parts of at most 255 bytes), no links, no member twice, no
file that is also another member's folder, no encryption, compression that Python can undo,
sizes that the compressed data can really expand to (deflate packs at most 1032:1; members that
share compressed bytes, the trick of overlapping zip bombs, cannot add up to more than the file),
at most :data:`MAX_MEMBERS` members, and a ``<name>/configs/metadata.json`` to open. The members
are then written into a fresh temporary folder beside the destination, which is renamed into
place only when every member was written and checked (CRC); any failure removes it. So the
cache holds complete unpacks only, and a failed one leaves nothing behind.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import tempfile
import zipfile
import zlib
from pathlib import Path

from ..images import CxsegError

#: Most members a bundle zip may have (real bundles have a few dozen files).
MAX_MEMBERS = 1000
#: Largest expansion of deflate (258-byte matches in 2 bits), per member.
MAX_DEFLATE_RATIO = 1032
_METHODS = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA)
#: What a damaged zip raises while its members are read (zipfile, zlib, bz2, lzma, the disk).
_READ_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, EOFError, OSError, ValueError,
                RuntimeError, NotImplementedError)


def _name_problem(name: str) -> str | None:
    if not name or "\x00" in name:
        return "an empty name or a NUL character"
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        return "an absolute path"
    parts = name.replace("\\", "/").split("/")
    if any(p == ".." for p in parts):
        return "a '..' part"
    if any(len(p.encode("utf-8", "surrogatepass")) > 255 for p in parts):
        return "a part longer than 255 bytes"
    return None


def check_members(zip_path: Path, infos: list[zipfile.ZipInfo]) -> None:
    """Refuse a zip whose members could not be unpacked safely and completely (module docstring).

    Raises
    ------
    CxsegError
        Naming the zip and the member.
    """
    if len(infos) > MAX_MEMBERS:
        raise CxsegError(f"bundle zip {zip_path} has {len(infos)} members, more than a bundle has ({MAX_MEMBERS})")
    size = zip_path.stat().st_size
    names: set[str] = set()
    folders: set[str] = set()
    packed = 0
    for info in infos:
        name = info.filename
        problem = _name_problem(name)
        if problem is None and stat.S_ISLNK(info.external_attr >> 16):
            problem = "a link"
        if problem is None and info.flag_bits & 0x1:
            problem = "encrypted"
        if problem is None and info.compress_type not in _METHODS:
            problem = f"compression method {info.compress_type}, which cannot be undone here"
        limit = info.compress_size if info.compress_type == zipfile.ZIP_STORED else MAX_DEFLATE_RATIO * info.compress_size + 1024
        if problem is None and info.compress_type in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED) and info.file_size > limit:
            problem = f"{info.file_size} bytes claimed from {info.compress_size} compressed"
        parts = [p for p in name.replace("\\", "/").split("/") if p not in ("", ".")]
        key = "/".join(parts)
        if problem is None and key in names:
            problem = "a member twice"
        if problem is not None:
            raise CxsegError(f"bundle zip {zip_path} has an unsafe member {name!r}: {problem}")
        (folders if info.is_dir() else names).add(key)
        folders.update("/".join(parts[:i]) for i in range(1, len(parts)))
        packed += info.compress_size
    clash = names & folders
    if clash:
        raise CxsegError(f"bundle zip {zip_path} has a member that is both a file and a folder: {sorted(clash)[0]!r}")
    if packed > size:  # members sharing compressed bytes: an overlapping zip bomb
        raise CxsegError(f"bundle zip {zip_path}: its members claim {packed} compressed bytes in a file of {size}")
    if not any(n == "configs/metadata.json" or n.endswith("/configs/metadata.json") for n in names):
        raise CxsegError(f"bundle zip {zip_path} holds no <name>/configs/metadata.json")


def _extract(z: zipfile.ZipFile, infos: list[zipfile.ZipInfo], root: Path) -> None:
    for info in infos:
        target = root / os.path.normpath(info.filename.replace("\\", "/"))
        if info.is_dir():
            target.mkdir(parents=True, exist_ok=True)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        with z.open(info) as src, open(target, "xb") as out:  # read() checks the CRC at the end
            shutil.copyfileobj(src, out, 1 << 20)


def unpack_bundle_zip(zip_path: str | os.PathLike) -> Path:
    """Unpack a bundle zip (``<name>/configs/...``) into ``<cache>/bundles/_zips`` once.

    Returns
    -------
    Path
        The bundle folder (the one holding ``configs/metadata.json``).

    Raises
    ------
    CxsegError
        The zip is not a zip, is damaged, or has an unsafe member (see the module docstring);
        nothing is left in the cache then.
    """
    from .weights import bundles_dir

    zip_path = Path(zip_path)
    h = hashlib.sha256()
    try:
        with open(zip_path, "rb") as fh:
            while block := fh.read(1 << 20):
                h.update(block)
    except OSError as e:
        raise CxsegError(f"cannot read bundle zip {zip_path}: {e.strerror or e}") from None
    dest = bundles_dir() / "_zips" / f"{zip_path.stem}-{h.hexdigest()[:12]}"
    if not dest.is_dir():
        try:
            with zipfile.ZipFile(zip_path) as z:
                infos = z.infolist()
                check_members(zip_path, infos)
                dest.parent.mkdir(parents=True, exist_ok=True)
                tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent))
                try:
                    _extract(z, infos, tmp)
                    try:
                        tmp.rename(dest)
                    except OSError:
                        if not dest.is_dir():  # not a concurrent unpack of the same zip
                            raise
                finally:
                    if tmp.exists():
                        shutil.rmtree(tmp, ignore_errors=True)
        except CxsegError:
            raise
        except _READ_ERRORS as e:
            raise CxsegError(f"cannot unpack bundle zip {zip_path} (damaged or not a zip): "
                             f"{type(e).__name__}: {e}") from None
    metas = sorted(dest.rglob("configs/metadata.json"), key=lambda p: len(p.parts))
    if not metas:
        raise CxsegError(f"bundle zip {zip_path} holds no <name>/configs/metadata.json")
    return metas[0].parent.parent
