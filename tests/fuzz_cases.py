"""Malformed inputs made from real files, for ``test_fuzz_readers`` (deterministic: fixed seeds).

Each reader's generator (:func:`generators`: in ``fuzz_images``, ``fuzz_raster``, ``fuzz_dicom``,
``fuzz_seg``, ``fuzz_models`` and ``fuzz_bundle``) starts from real files (the package's sample
data, Kermany radiographs, pydicom's and nibabel's test files, a real MONAI bundle's configs, the
shipped cards) or from files the readers' own factories make, and writes each malformed variant into a folder of its own under
``<root>/<reader>/<nnnn>/``: truncated at random offsets, header bytes damaged, header fields
set to wrong dims, dtypes, spacings (zero, negative, NaN), absurd sizes, series mixed or
duplicated, JSON/YAML broken, zip members with ``..`` or absolute names, links out of the
folder. A :class:`Case` says what to call on it and which names a refusal must mention.

Here: the case type, the byte-level mutations every format gets, and small file helpers.
"""

from __future__ import annotations

import gzip
import os
import random
import struct
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

#: Readers and the least number of inputs each must get.
MIN_CASES = 300


@dataclass
class Case:
    """One malformed input and how to open it.

    Attributes
    ----------
    id
        ``<reader>-<nnnn>``.
    reader
        The reader's name in the summary (``nifti``, ``dicom-series`` ...).
    mutation
        What was done to the seed, in words.
    entry
        What the child calls: ``read`` (``io.read``), ``load_card``, ``find_card``,
        ``bundle_zip`` / ``bundle_dir`` (the card, then ``BundleModel`` construction).
    path
        The input (file or folder).
    folder
        The case's own folder (compared before and after: nothing may be written).
    names
        A refusal must contain one of these (the file's or folder's name).
    options
        Keyword arguments of the entry (``io.read`` options; ``name`` for ``find_card``).
    needs
        ``"monai"`` when the entry imports MONAI (bundles, MSD case lists), else ``"light"``.
    cache
        A ``CXSEG_CACHE_DIR`` of the case's own (user cards), else the shared one.
    """

    id: str
    reader: str
    mutation: str
    entry: str
    path: str
    folder: str
    names: list[str]
    options: dict[str, Any] = field(default_factory=dict)
    needs: str = "light"
    cache: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class Builder:
    """Makes the case folders of one reader and collects its cases."""

    def __init__(self, root: Path, reader: str, seed: int, needs: str = "light") -> None:
        self.root = Path(root) / reader
        self.reader = reader
        self.rng = random.Random(seed)
        self.needs = needs
        self.cases: list[Case] = []

    def folder(self) -> Path:
        """A new, empty folder for the next case."""
        d = self.root / f"{len(self.cases):04d}"
        d.mkdir(parents=True, exist_ok=False)
        return d

    def add(self, mutation: str, path: Path, folder: Path, entry: str = "read",
            names: list[str] | None = None, **kw: Any) -> Case:
        """Register a case for ``path`` (written into ``folder``, from :meth:`folder`)."""
        case = Case(
            id=f"{self.reader}-{len(self.cases):04d}", reader=self.reader, mutation=mutation,
            entry=entry, path=str(path), folder=str(folder),
            names=names or [Path(path).name], needs=kw.pop("needs", self.needs), **kw,
        )
        self.cases.append(case)
        return case

    def file_case(self, mutation: str, name: str, data: bytes, **kw: Any) -> Case:
        """A case of one file ``name`` holding ``data`` in a new folder."""
        d = self.folder()
        p = d / name
        p.write_bytes(data)
        return self.add(mutation, p, d, **kw)


# ------------------------------------------------------------------------------ bytes
def _truncate(rng: random.Random, data: bytes, span: int) -> tuple[str, bytes]:
    cut = rng.randrange(1, max(len(data), 2))
    return f"truncated at byte {cut} of {len(data)}", data[:cut]


def _truncate_header(rng: random.Random, data: bytes, span: int) -> tuple[str, bytes]:
    cut = rng.randrange(1, max(min(span, len(data)), 2))
    return f"truncated inside the header at byte {cut}", data[:cut]


def _damage(rng: random.Random, data: bytes, span: int) -> tuple[str, bytes]:
    b = bytearray(data)
    where = sorted(rng.randrange(0, max(min(span, len(b)), 1)) for _ in range(rng.randint(1, 8)))
    for i in where:
        b[i] = rng.randrange(256)
    return f"header bytes {where} set at random", bytes(b)


def _fill(rng: random.Random, data: bytes, span: int) -> tuple[str, bytes]:
    b = bytearray(data)
    start = rng.randrange(0, max(min(span, len(b)), 1))
    n = rng.randint(1, 64)
    value = rng.choice((0x00, 0xFF, 0x7F, 0x80))
    b[start:start + n] = bytes([value]) * len(b[start:start + n])
    return f"{n} bytes from {start} set to {value:#04x}", bytes(b)


def _delete(rng: random.Random, data: bytes, span: int) -> tuple[str, bytes]:
    start = rng.randrange(0, max(len(data) - 1, 1))
    n = rng.randint(1, 256)
    return f"{n} bytes deleted at {start}", data[:start] + data[start + n:]


def _insert(rng: random.Random, data: bytes, span: int) -> tuple[str, bytes]:
    start = rng.randrange(0, max(min(span, len(data)), 1))
    junk = bytes(rng.randrange(256) for _ in range(rng.randint(1, 64)))
    return f"{len(junk)} random bytes inserted at {start}", data[:start] + junk + data[start:]


def _tail(rng: random.Random, data: bytes, span: int) -> tuple[str, bytes]:
    b = bytearray(data)
    n = min(len(b), rng.randint(1, 16))
    for i in range(len(b) - n, len(b)):
        b[i] = rng.randrange(256)
    return f"last {n} bytes set at random", bytes(b)


BYTE_MUTATIONS: tuple[Callable[[random.Random, bytes, int], tuple[str, bytes]], ...] = (
    _truncate, _truncate_header, _damage, _fill, _delete, _insert, _tail, _damage, _truncate,
)


def byte_variants(rng: random.Random, data: bytes, header: int, n: int) -> Iterator[tuple[str, bytes]]:
    """``n`` byte-level variants of ``data`` whose first ``header`` bytes are its header."""
    for k in range(n):
        yield BYTE_MUTATIONS[k % len(BYTE_MUTATIONS)](rng, data, header)


def gz(data: bytes) -> bytes:
    """gzip at a low level (fast; the readers do not care)."""
    return gzip.compress(data, compresslevel=1, mtime=0)


def gzip_variants(data: bytes) -> list[tuple[str, bytes]]:
    """Damaged gzip containers around ``data`` (CRC, size trailer, flags, members)."""
    z = gz(data)
    bad_crc = z[:-8] + bytes(4) + z[-4:]
    bad_size = z[:-4] + struct.pack("<I", 0xFFFFFFFF)
    return [
        ("gzip CRC zeroed", bad_crc),
        ("gzip size trailer 0xFFFFFFFF", bad_size),
        ("gzip without its trailer", z[:-8]),
        ("gzip flags byte claims FEXTRA/FNAME/FCOMMENT", z[:3] + b"\x1e" + z[4:]),
        ("gzip method byte not deflate", z[:2] + b"\x07" + z[3:]),
        ("two gzip members (file twice)", z + z),
        ("gzip member then junk", z + b"\x00junk\xff" * 8),
        ("gzip of nothing", gz(b"")),
        ("gzip of the first 100 bytes", gz(data[:100])),
        ("gzip magic only", b"\x1f\x8b"),
        ("raw deflate stream without gzip header", z[10:]),
        ("uncompressed data under a .gz name", data),
    ]


# ------------------------------------------------------------------------------ links
def link_cases(b: Builder, name: str, outside: Path, entry: str = "read", **kw: Any) -> None:
    """Links out of the case folder: to a real file elsewhere, ``/dev/zero``, a loop, nothing."""
    for what, target in (("a link to a real file outside the folder", outside),
                         ("a link to /dev/zero", Path("/dev/zero")),
                         ("a link to a missing file", b.root / "no-such-file"),
                         ("a link to itself (a loop)", None),
                         ("a link to the folder above", None)):
        d = b.folder()
        p = d / name
        if what.startswith("a link to itself"):
            os.symlink(p.name, p)
        elif what.endswith("folder above"):
            os.symlink("..", p)
        else:
            os.symlink(target, p)
        b.add(what, p, d, entry=entry, **kw)
    d = b.folder()
    p = d / name
    os.mkfifo(p)
    b.add("a FIFO (named pipe) with no writer", p, d, entry=entry, **kw)
    d = b.folder()
    p = d / name
    p.mkdir()
    b.add("a folder under a file's name", p, d, entry=entry, **kw)
    b.file_case("an empty file", name, b"", entry=entry, **kw)
    b.file_case("one byte", name, b"\x00", entry=entry, **kw)
    b.file_case("text", name, b"this is not what the name says\n" * 4, entry=entry, **kw)
    b.file_case("random bytes", name, random.Random(len(b.cases)).randbytes(4096), entry=entry, **kw)


def sparse_file(path: Path, size: int, head: bytes = b"") -> None:
    """A file of ``size`` bytes that takes no disk space (``head`` first, then a hole)."""
    with open(path, "wb") as f:
        f.write(head)
        f.truncate(size)


def generators() -> list[Callable[[Path], list[Case]]]:
    """The generators, one per reader, each ``(root) -> list[Case]``."""
    import fuzz_bundle
    import fuzz_dicom
    import fuzz_images
    import fuzz_models
    import fuzz_raster
    import fuzz_seg

    return [fuzz_images.nifti_cases, fuzz_raster.raster_cases, fuzz_dicom.series_cases,
            fuzz_dicom.radiograph_cases, fuzz_seg.seg_cases, fuzz_models.msd_cases,
            fuzz_bundle.bundle_cases, fuzz_bundle.bundle_folder_cases, fuzz_models.card_cases]


def all_cases(root: Path) -> list[Case]:
    """Every reader's cases under ``root``."""
    return [c for gen in generators() for c in gen(root)]
