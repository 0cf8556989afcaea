"""What MONAI reads and evaluates of a bundle, as plain dicts (no code runs here).

:func:`load_bundle_config` merges what MONAI's ConfigParser would read into one dict: the
inference config (JSON/YAML, bounded size, MONAI's own loaders and ``merge_kv``),
``configs/metadata.json`` under ``_meta_`` (as MONAI's ``read_meta``), ``%`` macros expanded and
relative ids (``@#x``) resolved with MONAI's semantics, and the file loading/saving transforms
disabled in every list (the engine hands over an image in memory and writes the result itself).
:func:`evaluable_config` is what MONAI is then handed: only the closure of what the product
builds (:func:`napari_cxseg.models.trust.closure`), so nothing unchecked can be evaluated.

Macro files (``%path.json#id``) are read relative to the bundle folder (MONAI reads them relative
to the working directory, and bundles are run from their folder); a macro file outside the
bundle folder is read only when trusted, a missing or non-regular one never.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import stat
import sys
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..images import CxsegError

#: Most values walked in one config (YAML aliases can multiply what a small file holds).
MAX_NODES = 500_000
CONFIG_NAMES = ("inference.json", "inference.yaml", "inference.yml")
#: Largest config, metadata or macro file read (bytes).
MAX_CONFIG_BYTES = 16 << 20
#: Most values macros may copy into a config.
MAX_MACRO_VALUES = 200_000
#: Transforms that read or write files; the engine does that itself.
_IO_TRANSFORMS = ("LoadImage", "LoadImaged", "SaveImage", "SaveImaged")
#: What an IO transform becomes: MONAI drops a disabled component from its list, indices stay.
_DISABLED = {"_target_": "monai.transforms.Identity", "_disabled_": True}


def find_config(bundle_dir: str | Path) -> Path:
    """The inference config of a bundle (``configs/inference.json`` or ``.yaml``)."""
    bdir = Path(bundle_dir)
    for name in CONFIG_NAMES:
        p = bdir / "configs" / name
        if p.is_file():
            return p
    raise CxsegError(f"bundle {bdir} has no configs/inference.json or configs/inference.yaml")


def _read_bounded(path: Path) -> str:
    """The text of a regular file of at most :data:`MAX_CONFIG_BYTES` (a FIFO never blocks)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as e:
        raise CxsegError(f"bundle file {path} cannot be read: {e.strerror}") from None
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fh.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise CxsegError(f"bundle file {path} is not a regular file")
        data = fh.read(MAX_CONFIG_BYTES + 1)
    if len(data) > MAX_CONFIG_BYTES:
        raise CxsegError(f"bundle file {path} is larger than {MAX_CONFIG_BYTES >> 20} MiB")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise CxsegError(f"bundle file {path} is not UTF-8 text: {e}") from None


def read_config(path: str | Path) -> dict[str, Any]:
    """One JSON/YAML config file as MONAI's ``load_config_files`` reads it.

    MONAI's own loaders (duplicate keys warned, YAML safe) and ``merge_kv`` (``+key`` merges,
    ``a#b`` keys set nested values), on a regular file of at most :data:`MAX_CONFIG_BYTES`.

    Raises
    ------
    CxsegError
        Naming the file when it cannot be read or is not a mapping.
    """
    import yaml
    from monai.bundle import ConfigParser
    from monai.bundle.utils import merge_kv
    from monai.utils.misc import CheckKeyDuplicatesYamlLoader, check_key_duplicates

    path = Path(path)
    text = _read_bounded(path)
    try:
        if path.suffix.lower() == ".json":
            data = json.loads(text, object_pairs_hook=check_key_duplicates)
        else:
            data = yaml.load(text, CheckKeyDuplicatesYamlLoader)  # noqa: S506 - a SafeLoader
    except (ValueError, yaml.YAMLError, RecursionError) as e:  # RecursionError: nested too deeply
        raise CxsegError(f"bundle config {path} cannot be read: {type(e).__name__}: {e}") from None
    if not isinstance(data, dict):
        raise CxsegError(f"bundle config {path} is not a mapping of settings")
    try:
        for _ in walk(data, ""):  # bounded: YAML aliases can multiply what a small file holds
            pass
    except CxsegError as e:
        raise CxsegError(f"bundle config {path}: {e}") from None
    parser = ConfigParser(config={}, globals=False)
    try:
        for k, v in data.items():
            merge_kv(parser, k, v)
    except (KeyError, ValueError, TypeError, AttributeError, IndexError) as e:
        raise CxsegError(f"bundle config {path}: cannot merge key: {e}") from None
    return parser.get()


@dataclass
class BundleConfig:
    """A bundle's merged config (see :func:`load_bundle_config`).

    ``notes`` says, per MONAI id, why a ``%`` macro was left as it is (trust would read it);
    ``errors`` the macros that cannot be expanded at all (missing or non-regular file, no such
    id): they fail only when the product would evaluate them.
    """

    bundle_dir: Path
    config_path: Path
    content: dict[str, Any]
    notes: dict[str, str] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)


class _Macros:
    """``ConfigParser._do_resolve``: relative ids and ``%`` macros, files confined to the bundle."""

    def __init__(self, bundle_dir: Path, trust: bool, out: BundleConfig) -> None:
        self.bdir, self.trust, self.out, self.copied = bundle_dir, trust, out, 0

    def resolve(self, node: Any, node_id: str, root: dict[str, Any]) -> Any:
        from monai.bundle import ConfigParser
        from monai.bundle.reference_resolver import ReferenceResolver

        if isinstance(node, dict | list):
            for k, sub, v in ReferenceResolver.iter_subconfigs(node_id, node):
                node[k] = self.resolve(v, sub, root)
        if isinstance(node, str):
            try:
                node = ConfigParser.resolve_relative_ids(node_id, node)
            except ValueError as e:
                raise CxsegError(f"bundle {self.bdir}: {display_id(node_id)}: {e}") from None
            if node.startswith("%"):
                return self.expand(node_id, node, root)
        return node

    def expand(self, node_id: str, text: str, root: dict[str, Any]) -> Any:
        from monai.bundle import ConfigParser

        path, ids = ConfigParser.split_path_id(text[1:])
        source: Any = root
        if path:
            source = self.macro_file(node_id, text, path)
            if source is None:
                return text
        try:
            value = ConfigParser(config=source, globals=False)[ids]
        except (KeyError, ValueError, IndexError) as e:
            self.out.errors[node_id] = f"macro {display_id(text)}: {path or 'the config'} has no id {ids!r} ({e})"
            return text
        self.copied += sum(1 for _ in walk(value, ""))
        if self.copied > MAX_MACRO_VALUES:
            raise CxsegError(f"bundle {self.bdir}: macros copy more than {MAX_MACRO_VALUES} values")
        return copy.deepcopy(value)

    def macro_file(self, node_id: str, text: str, path: str) -> dict[str, Any] | None:
        p = Path(path).expanduser()
        p = p if p.is_absolute() else self.bdir / p
        try:
            real = p.resolve(strict=True)
        except (OSError, RuntimeError):
            self.out.errors[node_id] = f"macro {display_id(text)}: {p} does not exist"
            return None
        if not real.is_relative_to(self.bdir) and not self.trust:
            self.out.notes[node_id] = f"a macro reading {real}, outside the bundle folder"
            return None
        try:
            return read_config(real)
        except CxsegError as e:
            self.out.errors[node_id] = f"macro {display_id(text)}: {e}"
            return None


def load_bundle_config(bundle_dir: str | Path, trust: bool = False) -> BundleConfig:
    """The merged config MONAI would parse for a bundle, as one dict.

    The inference config, ``configs/metadata.json`` under ``_meta_`` (as MONAI's ``read_meta``),
    ``bundle_root`` set to the folder, ``%`` macros expanded and relative ids resolved with
    MONAI's semantics (macro files inside the bundle folder; outside only when ``trust``), and
    ``LoadImage(d)``/``SaveImage(d)`` (short or full name) disabled in every list.

    Raises
    ------
    CxsegError
        When a file cannot be read, is too large, or a relative id points outside the config.
    """
    from monai.bundle.reference_resolver import ReferenceResolver

    from .trust import shared_locator

    bdir = Path(bundle_dir).resolve()
    cfg_path = find_config(bdir)
    resolver = ReferenceResolver()

    def norm(d: dict[str, Any]) -> dict[str, Any]:
        with warnings.catch_warnings():  # MONAI renames deprecated metadata keys, loudly
            warnings.filterwarnings("ignore", "Detected deprecated name")
            return resolver.normalize_meta_id(d)

    content: dict[str, Any] = {"_meta_": {}, **norm(read_config(cfg_path))}
    meta = bdir / "configs" / "metadata.json"
    if meta.is_file():
        content["_meta_"] = norm(read_config(meta))
    content["bundle_root"] = str(bdir)
    out = BundleConfig(bdir, cfg_path, content)
    try:
        out.content = _Macros(bdir, trust, out).resolve(content, "", content)
    except RecursionError:
        raise CxsegError(f"bundle config {cfg_path} is nested too deeply") from None
    _disable_io(out.content, shared_locator())
    return out


def _disable_io(config: dict[str, Any], locator: Any) -> None:
    import monai.transforms as mt

    from .trust import resolve_target

    io = tuple(getattr(mt, n) for n in _IO_TRANSFORMS)
    for _, v in walk(config, ""):
        if isinstance(v, list):
            for j, item in enumerate(v):
                if isinstance(item, dict) and isinstance(item.get("_target_"), str):
                    obj, _ = resolve_target(item["_target_"], locator)
                    if isinstance(obj, type) and issubclass(obj, io):
                        v[j] = dict(_DISABLED)


# ---------------------------------------------------------------------- ids as MONAI sees them


def display_id(monai_id: str) -> str:
    """A MONAI id (``a::b``) as bundles write it (``a#b``)."""
    return monai_id.replace("::", "#")


def walk(node: Any, node_id: str, budget: list[int] | None = None) -> Iterator[tuple[str, Any]]:
    """``(id, value)`` of a node and everything in it, ids as MONAI builds them (``a::b::0``)."""
    from monai.bundle.reference_resolver import ReferenceResolver

    budget = budget if budget is not None else [MAX_NODES]
    stack = [(node_id, node)]
    while stack:
        i, v = stack.pop()
        budget[0] -= 1
        if budget[0] < 0:
            raise CxsegError(f"bundle config is too large or nested (more than {MAX_NODES} values)")
        yield i, v
        if isinstance(v, dict | list):
            stack.extend(reversed([(s, c) for _, s, c in ReferenceResolver.iter_subconfigs(i, v)]))


def monai_items(config: dict[str, Any]) -> dict[str, Any]:
    """Id -> value as ``ConfigParser._do_parse`` registers them (children first, first one wins)."""
    from monai.bundle.reference_resolver import ReferenceResolver

    items: dict[str, Any] = {}
    budget = [MAX_NODES]

    def visit(v: Any, i: str, depth: int) -> None:
        budget[0] -= 1
        if budget[0] < 0 or depth > 200:
            raise CxsegError("bundle config is too large or nested")
        if isinstance(v, dict | list):
            for _, sub, c in ReferenceResolver.iter_subconfigs(i, v):
                visit(c, sub, depth + 1)
        items.setdefault(i, v)

    visit(config, "", 0)
    return items


def get_path(config: Any, monai_id: str) -> Any:
    """The value at an id, walked like ``ConfigParser.__getitem__``; KeyError when absent."""
    from monai.bundle.reference_resolver import ReferenceResolver

    node = config
    for k in ReferenceResolver.split_id(monai_id) if monai_id else []:
        try:
            if isinstance(node, dict):
                node = node[k]
            elif isinstance(node, list):
                node = node[int(k)]
            else:
                raise KeyError(monai_id)
        except (KeyError, IndexError, ValueError):
            raise KeyError(monai_id) from None
    return node


def evaluable_config(config: dict[str, Any], roots: Sequence[str], overrides: dict[str, Any],
                     trust: bool, locator: Any = None) -> dict[str, Any]:
    """The config MONAI is handed: the closure of ``roots`` only (other ids and list items
    become None at their place, so ids and indices stay), plus ``overrides``. Untrusted, each
    ``_target_`` is replaced by the class it was checked as; trusted, the config's import
    statements (``$import x``), which MONAI evaluates before anything else, are kept too."""
    from monai.bundle.config_item import ConfigExpression

    from .trust import closure, shared_locator, target_problem

    items = monai_items(config)
    keep = [i for i in closure(config, roots) if i in items]
    if trust:
        for i, v in items.items():
            with contextlib.suppress(SyntaxError):
                if i and ConfigExpression.is_import_statement(v):
                    keep.append(i)
    out: dict[str, Any] = {}
    placed: list[str] = []
    for i in sorted(set(keep), key=lambda s: s.count("::")):
        if not any(i.startswith(p + "::") for p in placed):
            _place(out, config, i)
            placed.append(i)
    if not trust:
        locator = locator if locator is not None else shared_locator()
        for _, v in walk(out, ""):
            if isinstance(v, dict) and "_target_" in v:
                cls, shown, why = target_problem(v["_target_"], locator)
                if cls is None:  # check() refuses this first; never hand MONAI a name to import
                    raise CxsegError(f"_target_ {shown} needs trust ({why})")
                v["_target_"] = cls
    out.update(overrides)
    return out


def _place(out: dict[str, Any], config: dict[str, Any], monai_id: str) -> None:
    """Copy the value at ``monai_id`` into ``out`` at the same place, creating its parents."""
    from monai.bundle.reference_resolver import ReferenceResolver

    keys = ReferenceResolver.split_id(monai_id)
    src: Any = config
    dst: Any = out
    for depth, k in enumerate(keys):
        try:
            idx: Any = k if isinstance(src, dict) else int(k)
            child = src[idx]
        except (KeyError, IndexError, ValueError, TypeError):
            return  # an ambiguous id (trusted runs only): MONAI reports what it misses
        if depth == len(keys) - 1:
            dst[idx] = copy.deepcopy(child)
            return
        if isinstance(dst, dict) and idx not in dst or isinstance(dst, list) and dst[idx] is None:
            dst[idx] = {} if isinstance(child, dict) else [None] * len(child)
        elif not isinstance(dst[idx], dict | list):
            return
        src, dst = child, dst[idx]


@contextlib.contextmanager
def on_sys_path(folder: Path, enabled: bool = True) -> Iterator[None]:
    """Let a trusted config's ``$import scripts`` find the bundle's own modules."""
    if not enabled:
        yield
        return
    sys.path.insert(0, str(folder))
    try:
        yield
    finally:
        with contextlib.suppress(ValueError):
            sys.path.remove(str(folder))


