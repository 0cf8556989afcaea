"""Fuzz cases for MONAI bundle zips and folders (see :mod:`fuzz_cases`).

Seed: the real ``spleen_ct_segmentation`` bundle configs of ``tests/data`` (MONAI Model Zoo).
A case is opened as a user opens a bundle: ``find_card(<zip or folder>)`` (unpacking a zip into
the cache), then ``BundleModel`` is constructed (its config read, merged and checked for code;
nothing is run). Mutations: the configs' values and text (as for every JSON file, plus the
config language's own references, macros and special keys), zip members with ``..`` or absolute
names, links, duplicates, encryption or unknown compression, sizes that lie, damaged bytes, and
links out of a bundle folder.
"""

from __future__ import annotations

import io
import json
import os
import stat
import struct
import warnings
import zipfile
from pathlib import Path
from typing import Any

from fuzz_cases import Builder, Case, byte_variants
from fuzz_models import json_text_variants, structure_variants

BUNDLE = Path(__file__).resolve().parent / "data" / "spleen_ct_segmentation"
NAME = BUNDLE.name
#: Member names that would land outside the unpack folder carry this word (the test looks for it).
MARKER = "ESCAPED-BY-FUZZ"
ABSOLUTE = f"/tmp/{MARKER}-absolute"

CONFIG_TRAPS: list[tuple[str, dict[str, Any]]] = [
    ("a $ expression as network", {"network_def": "$__import__('os').getcwd()"}),
    ("a _target_ of os.system", {"network_def": {"_target_": "os.system", "command": "true"}}),
    ("_target_ not a string", {"network_def": {"_target_": ["UNet"]}}),
    ("_target_ empty", {"network_def": {"_target_": ""}}),
    ("_target_ a missing class", {"network_def": {"_target_": "monai.networks.nets.NoSuchNet"}}),
    ("a reference cycle", {"network_def": "@a", "a": "@b", "b": "@a"}),
    ("a reference to a missing id", {"network_def": "@nowhere"}),
    ("a relative reference", {"network_def": "@#x"}),
    ("a macro to a missing file", {"network_def": "%missing.json#net"}),
    ("a macro out of the bundle", {"network_def": "%../../../etc/passwd#x"}),
    ("a macro to itself", {"network_def": "%configs/inference.json#network_def"}),
    ("an absolute macro", {"network_def": "%/etc/hostname#x"}),
    ("keys with :: and #", {"network_def": {"_target_": "UNet", "a::b": 1, "c#d": 2}}),
    ("_requires_ and _mode_", {"network_def": {"_target_": "UNet", "_requires_": "@x", "_mode_": "debug"}}),
    ("_disabled_ as text", {"network_def": {"_target_": "UNet", "_disabled_": "yes"}}),
    ("preprocessing not a list", {"preprocessing": {"_target_": "Compose", "transforms": 5}}),
    ("inferer roi_size text", {"inferer": {"_target_": "SlidingWindowInferer", "roi_size": "big"}}),
    ("network_def missing", {"network_def": None}),
    ("10000 transforms", {"preprocessing": {"_target_": "Compose", "transforms": [{"_target_": "Identity"}] * 10000}}),
]


def bundle_files() -> dict[str, bytes]:
    """``{member name: bytes}`` of the seed bundle (folder ``spleen_ct_segmentation/``)."""
    out = {f"{NAME}/{p.relative_to(BUNDLE)}": p.read_bytes() for p in sorted(BUNDLE.rglob("*")) if p.is_file()}
    out[f"{NAME}/docs/README.md"] = b"# Spleen CT segmentation\n"
    return out


def make_zip(members: dict[str, bytes] | list[tuple[Any, bytes]]) -> bytes:
    """A zip of ``members`` (names or ``ZipInfo`` objects, deflated unless the info says)."""
    buf = io.BytesIO()
    items = members.items() if isinstance(members, dict) else members
    with warnings.catch_warnings(), zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        warnings.simplefilter("ignore")  # "Duplicate name": wanted here
        for name, data in items:
            z.writestr(name, data)
    return buf.getvalue()


def _link(name: str, target: str) -> tuple[zipfile.ZipInfo, bytes]:
    info = zipfile.ZipInfo(name)
    info.create_system = 3
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info, target.encode()


def _set_flag(data: bytes, flag: int = 0, method: int | None = None) -> bytes:
    """Set a general-purpose flag bit (or the method) in every local and central header."""
    b = bytearray(data)
    for sig, off_flag in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        i = b.find(sig)
        while i >= 0:
            b[i + off_flag:i + off_flag + 2] = struct.pack("<H", struct.unpack("<H", b[i + off_flag:i + off_flag + 2])[0] | flag)
            if method is not None:
                b[i + off_flag + 2:i + off_flag + 4] = struct.pack("<H", method)
            i = b.find(sig, i + 4)
    return bytes(b)


def _sizes(data: bytes, factor: int) -> bytes:
    """Multiply the uncompressed sizes the central directory claims by ``factor``."""
    b = bytearray(data)
    i = b.find(b"PK\x01\x02")
    while i >= 0:
        size = struct.unpack("<I", b[i + 24:i + 28])[0]
        b[i + 24:i + 28] = struct.pack("<I", min(size * factor, 0xFFFFFFFE))
        i = b.find(b"PK\x01\x02", i + 4)
    return bytes(b)


def zip_variants(files: dict[str, bytes]) -> list[tuple[str, bytes]]:
    """Zips whose structure is wrong: unsafe names, links, duplicates, flags, sizes."""
    meta = files[f"{NAME}/configs/metadata.json"]
    escape = {f"../{MARKER}": b"x", f"../../{MARKER}": b"x", f"{NAME}/../../{MARKER}": b"x",
              f"{NAME}/configs/../../../{MARKER}": b"x", ABSOLUTE: b"x", f"..\\..\\{MARKER}": b"x",
              f"C:/{MARKER}": b"x", f"./{NAME}/../../{MARKER}": b"x"}
    out = [(f"a member named {name!r}", make_zip({**files, name: data})) for name, data in escape.items()]
    out += [
        ("a symlink member to /etc/passwd", make_zip([*files.items(), _link(f"{NAME}/configs/extra.json", "/etc/passwd")])),
        ("metadata.json a symlink member", make_zip([*((k, v) for k, v in files.items() if not k.endswith("metadata.json")),
                                                     _link(f"{NAME}/configs/metadata.json", "../../../../etc/passwd")])),
        ("a symlink member to ..", make_zip([*files.items(), _link(f"{NAME}/up", "../..")])),
        ("a member twice with different content", make_zip([*files.items(), (f"{NAME}/configs/metadata.json", b"{}")])),
        ("a file and a folder of one name", make_zip({**files, f"{NAME}/models": b"x", f"{NAME}/models/model.pt": b"y"})),
        ("no metadata.json", make_zip({k: v for k, v in files.items() if not k.endswith("metadata.json")})),
        ("no inference.json", make_zip({k: v for k, v in files.items() if not k.endswith("inference.json")})),
        ("metadata.json at the zip root", make_zip({k.split("/", 1)[1]: v for k, v in files.items()})),
        ("two bundles", make_zip({**files, **{k.replace(NAME, "other", 1): v for k, v in files.items()}})),
        ("a zip inside the zip", make_zip({f"{NAME}.zip": make_zip(files)})),
        ("no members", make_zip({})),
        ("5000 members", make_zip({**files, **{f"{NAME}/docs/{i}.txt": b"" for i in range(5000)}})),
        ("a member claiming 4 GiB", _sizes(make_zip({**files, f"{NAME}/models/model.pt": b"\x00" * 1000}), 10**8)),
        ("sizes claimed 1000 times larger", _sizes(make_zip(files), 1000)),
        ("every member encrypted", _set_flag(make_zip(files), flag=0x1)),
        ("an unknown compression method", _set_flag(make_zip(files), method=99)),
        ("LZMA members", _zip_method(files, zipfile.ZIP_LZMA)),
        ("bzip2 members", _zip_method(files, zipfile.ZIP_BZIP2)),
        ("stored members", _zip_method(files, zipfile.ZIP_STORED)),
        ("metadata.json of 16 MiB of spaces", make_zip({**files, f"{NAME}/configs/metadata.json": meta + b" " * (16 << 20)})),
        ("a member name with a NUL", make_zip({**files, f"{NAME}/configs/x\x00.json": b"{}"})),
        ("a 300-character member name", make_zip({**files, f"{NAME}/{'d' * 300}.txt": b""})),
    ]
    return out


def _zip_method(files: dict[str, bytes], method: int) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", method) as z:
        for k, v in files.items():
            z.writestr(k, v)
    return buf.getvalue()


def bundle_cases(root: Path) -> list[Case]:
    """Bundle zips: ``find_card`` (which unpacks them) then ``BundleModel``, about 320."""
    b = Builder(root, "bundle", seed=9, needs="monai")
    files = bundle_files()
    rng = b.rng
    meta_key, cfg_key = f"{NAME}/configs/metadata.json", f"{NAME}/configs/inference.json"
    meta, cfg = json.loads(files[meta_key]), json.loads(files[cfg_key])

    def zcase(what: str, data: bytes) -> None:
        b.file_case(what, f"{NAME}.zip", data, entry="bundle_zip")

    for what, m in structure_variants(rng, meta, 80):
        zcase(f"metadata.json: {what}", make_zip({**files, meta_key: json.dumps(m).encode()}))
    for what, c in structure_variants(rng, cfg, 80):
        zcase(f"inference.json: {what}", make_zip({**files, cfg_key: json.dumps(c).encode()}))
    for key in (meta_key, cfg_key):
        short = key.rsplit("/", 1)[1]
        for what, data in byte_variants(rng, files[key], 400, 12):
            zcase(f"{short}: {what}", make_zip({**files, key: data}))
        for what, data in json_text_variants(files[key].decode()):
            zcase(f"{short}: {what}", make_zip({**files, key: data}))
    for what, change in CONFIG_TRAPS:
        zcase(f"inference.json: {what}", make_zip({**files, cfg_key: json.dumps({**cfg, **change}).encode()}))
    yaml_files = {k: v for k, v in files.items() if k != cfg_key}
    zcase("inference.yaml with an alias bomb", make_zip({**yaml_files, f"{NAME}/configs/inference.yaml":
          b"a: &a [1,1,1,1,1,1,1,1,1,1]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b,*b]\n"
          b"d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c,*c]\ne: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d,*d]\nnetwork_def: [*e,*e,*e,*e,*e]\n"}))
    zcase("inference.yaml with a python tag", make_zip({**yaml_files, f"{NAME}/configs/inference.yaml":
          b"network_def: !!python/object/apply:os.system ['true']\n"}))
    zcase("models/model.ts present", make_zip({**files, f"{NAME}/models/model.ts": b"PK\x03\x04not torchscript"}))
    for what, data in zip_variants(files):
        zcase(what, data)
    good = make_zip(files)
    for what, data in byte_variants(rng, good, 200, 36):
        zcase(f"zip: {what}", data)
    for frac in (0.1, 0.5, 0.9, 0.99):
        zcase(f"zip truncated at {frac:.0%}", good[: int(len(good) * frac)])
    zcase("zip: one compressed byte flipped (CRC mismatch)", _flip_data(good))
    return b.cases


def bundle_folder_cases(root: Path) -> list[Case]:
    """Bundle folders (``find_card`` then ``BundleModel``), about 20: links, pipes, odd files."""
    b = Builder(root, "bundle-folder", seed=10, needs="monai")
    _folder_cases(b, bundle_files())
    return b.cases


def _flip_data(data: bytes) -> bytes:
    b = bytearray(data)
    i = b.find(b"PK\x03\x04")
    n, extra = struct.unpack("<HH", b[i + 26:i + 30])
    b[i + 30 + n + extra + 5] ^= 0xFF
    return bytes(b)


def _folder_cases(b: Builder, files: dict[str, bytes]) -> None:
    """Bundle folders with links out of them, pipes and odd files."""

    def folder(skip: str = "") -> tuple[Path, Path]:
        d = b.folder()
        for name, data in files.items():
            if name.endswith(skip) and skip:
                continue
            (d / name).parent.mkdir(parents=True, exist_ok=True)
            (d / name).write_bytes(data)
        return d, d / NAME

    for member in ("metadata.json", "inference.json"):
        for what, target in (("/dev/zero", "/dev/zero"), ("a real file outside", str(BUNDLE / "configs" / member)),
                             ("a missing file", "../../nowhere.json"), ("itself", member)):
            d, bd = folder(member)
            (bd / "configs" / member).symlink_to(target)
            b.add(f"folder: configs/{member} a link to {what}", bd, d, entry="bundle_dir")
        d, bd = folder(member)
        os.mkfifo(bd / "configs" / member)
        b.add(f"folder: configs/{member} a FIFO", bd, d, entry="bundle_dir")
        d, bd = folder(member)
        (bd / "configs" / member).mkdir()
        b.add(f"folder: configs/{member} a folder", bd, d, entry="bundle_dir")
    d = b.folder()
    (d / NAME).mkdir()
    (d / NAME / "configs").symlink_to(BUNDLE / "configs")
    b.add("folder: configs a link to a real bundle's configs outside", d / NAME, d, entry="bundle_dir")
    for what, data in (("model.ts of garbage", b"garbage"), ("model.pt of garbage", b"garbage")):
        d, bd = folder()
        (bd / "models").mkdir()
        (bd / "models" / what.split()[0]).write_bytes(data)
        b.add(f"folder: {what}", bd, d, entry="bundle_dir")
    d, bd = folder()
    (bd / "configs" / "inference.yaml").write_text("network_def: [")
    b.add("folder: a broken inference.yaml beside inference.json", bd, d, entry="bundle_dir")
