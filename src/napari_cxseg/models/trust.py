"""Whether running a model runs code, decided in one place (bundle configs and TorchScript).

A MONAI bundle config is data until :class:`monai.bundle.ConfigParser` evaluates it; then ``$``
expressions, ``_target_`` classes, special keys and ``@`` references all run.  The decision is
taken on what the product will evaluate, in the merged config of
:func:`napari_cxseg.models.bundle.load_bundle_config` (inference config, ``_meta_``, expanded
``%`` macros, resolved relative ids, file loading/saving transforms disabled):

1. :func:`closure`: the ids the product instantiates and everything they reference with ``@``,
   transitively, found with MONAI's own reference matcher and item ids.
2. :func:`check`: within the closure, what is code (see :class:`Finding` for the list), with
   one ``_target_`` resolver (:func:`resolve_target`, :func:`target_problem`).
3. :func:`~napari_cxseg.models.bundle_config.evaluable_config`: the config MONAI is handed holds
   only the closure (and, when trusted, the ``$import`` statements MONAI evaluates eagerly), with
   each checked ``_target_`` replaced by the class it names, so nothing unchecked is evaluated or
   imported by name.

TorchScript files are programs in PyTorch's security model; :func:`load_torchscript` is the one
place that loads them, and only when trusted.
"""

from __future__ import annotations

import builtins
import importlib
import inspect
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..images import CxsegError
from .bundle_config import MAX_NODES, display_id, get_path, monai_items, walk

HOW_TO_TRUST = "run it only if you trust its source: --trust in the CLI, or confirm in the Segment widget"
#: Modules whose classes a plain bundle may name (networks, transforms, inferers; our own networks).
ALLOWED_MODULES = ("monai.networks.nets.", "monai.networks.blocks.", "monai.networks.layers.",
                   "monai.transforms.", "monai.inferers.", "torch.nn.modules.",
                   "napari_cxseg.models.architectures.")
#: Ids the product sets itself; their content in the bundle is never evaluated.
OVERRIDDEN_IDS = ("bundle_root", "device")
#: Why a class of these modules is code (first match wins; checked before ALLOWED_MODULES).
_MODULE_REASONS = (
    ("monai.bundle.workflows", "runs a workflow"),
    ("monai.bundle", "reads, downloads or runs bundles"),
    ("monai.apps", "downloads data and models, runs applications"),
    ("monai.engines", "runs a workflow"),
    ("monai.handlers", "loads checkpoints and writes files"),
    ("monai.data", "reads, writes, caches or unpickles data files"),
    ("monai.transforms.io", "reads or writes files, imports its reader or writer by name"),
    ("monai.transforms.adaptors", "wraps a function"),
    ("torch.hub", "downloads and runs code"),
    ("torch.jit", "loads TorchScript programs"),
    ("torch.package", "unpickles packaged code"),
    ("torch.serialization", "unpickles files"),
    ("builtins", "a Python built-in"),
)
#: Classes of the allowed modules that import, call or load what the config names (and subclasses).
_DENIED_CLASSES = {
    **dict.fromkeys(("Lambda", "Lambdad", "RandLambda", "RandLambdad"), "calls a function given in the config"),
    **dict.fromkeys(("CuCIM", "CuCIMd", "RandCuCIM", "RandCuCIMd"), "looks up a cuCIM function by name"),
    **dict.fromkeys(("TorchVision", "TorchVisiond", "RandTorchVision", "RandTorchVisiond"),
                    "looks up a torchvision transform by name"),
    **dict.fromkeys(("TorchIO", "TorchIOd", "RandTorchIO", "RandTorchIOd"), "looks up a TorchIO transform by name"),
    "SaveClassificationd": "writes files",
    "Transchex": "downloads and loads BERT weights when built",
    "MultiModal": "downloads and loads BERT weights when built",
    "TorchVisionFCModel": "builds a torchvision model named in the config and may download weights",
    "MILModel": "builds a torchvision backbone named in the config and downloads weights",
    "CellSamWrapper": "loads a SAM checkpoint from a path",
    "ZarrAvgMerger": "writes a Zarr store",
    "WSISlidingWindowSplitter": "reads whole-slide image files",
}
#: Arguments that a class imports by name when given as a string.
_NAMED_IMPORT_ARGS = {"PatchInferer": ("merger_cls",)}
_RISKY_WORDS = re.compile(r"pretrain|url|download|ckpt|repo|hub")
_RISKY_TOKENS = {"path", "paths", "file", "filename", "checkpoint", "weights", "dir"}
_PLAIN_SPECIAL_KEYS = ("_target_", "_desc_")


@dataclass(frozen=True)
class Finding:
    """One place where a bundle config holds code.

    ``where`` is the config id (``#``-separated), ``content`` what is there, ``why`` the reason:
    a ``$`` expression, a ``%`` macro left unexpanded (outside the bundle folder ...), a relative
    reference MONAI would resolve later, a ``_target_`` that is not a plain string naming an
    allowed class, ``_requires_``, ``_mode_`` other than ``"default"`` (``debug`` runs pdb,
    ``callable`` returns the function), ``_disabled_`` that is not a literal bool, another
    special key (``_debug_``), network arguments that download or load files, or a TorchScript
    file.
    """

    where: str
    content: str
    why: str

    def __str__(self) -> str:
        return f"{self.where}: {self.content} ({self.why})"


# ---------------------------------------------------------------------- _target_


def _importable(mod_name: str) -> bool:
    """Whether following a dotted ``_target_`` may import ``mod_name`` (allowed packages only)."""
    dotted = mod_name + "."
    return any(dotted.startswith(p) or p.startswith(dotted) for p in ALLOWED_MODULES)


def _locate(path: str) -> tuple[Any, str]:
    """``pydoc.locate`` as MONAI calls it, importing only within :data:`ALLOWED_MODULES`.

    Returns the object (None when it cannot be found that way) and why not.
    """
    parts = [p for p in path.split(".") if p]
    module, n = None, 0
    while n < len(parts):
        name = ".".join(parts[: n + 1])
        mod = sys.modules.get(name)
        if mod is None and _importable(name):
            try:
                mod = importlib.import_module(name)
            except ImportError:
                mod = None
            except Exception as e:  # a library module failing to import
                return None, f"cannot be imported ({type(e).__name__})"
        if mod is None:
            break
        module, n = mod, n + 1
    if module is None:
        first = parts[0] if parts else path
        if hasattr(builtins, first):
            return None, "a Python built-in"
        return None, f"would import module {first!r} by name"
    obj: Any = module
    for part in parts[n:]:
        obj = getattr(obj, part, None)
        if obj is None:
            return None, "cannot be resolved without importing modules outside MONAI networks/transforms/inferers"
    return obj, ""


_LOCATOR: list[Any] = [None, -1]


def shared_locator() -> Any:
    """One MONAI ``ComponentLocator`` for the process, rebuilt when more modules are loaded.

    A locator scans every loaded ``monai`` module on its first lookup (about 0.1 s); a new one
    per config made each bundle pay that twice. Its table depends only on which modules are
    loaded, so it is kept until a module is loaded (``len(sys.modules)`` changes).
    """
    from monai.bundle import ComponentLocator

    loaded = len(sys.modules)
    if _LOCATOR[0] is None or _LOCATOR[1] != loaded:
        _LOCATOR[0], _LOCATOR[1] = ComponentLocator(), loaded
    return _LOCATOR[0]


def resolve_target(name: Any, locator: Any = None) -> tuple[Any, str]:
    """What MONAI calls for ``_target_: name``: short names through MONAI's ComponentLocator
    (the first module when several hold the name, as MONAI does), dotted paths step by step.

    Parameters
    ----------
    name
        The ``_target_`` value.
    locator
        A :class:`monai.bundle.ComponentLocator` (:func:`shared_locator` when None).

    Returns
    -------
    tuple
        The object (None when it is not found without importing outside the allowed packages,
        or when ``name`` is not a plain string) and the reason it was not found.
    """
    if not isinstance(name, str) or not name:
        return None, "not a class name"
    if name.startswith(("$", "@", "%")):
        return None, "a reference or expression as _target_ (code)"
    if locator is None:
        locator = shared_locator()
    mods = locator.get_component_module_name(name)
    if isinstance(mods, list):
        mods = mods[0]
    return _locate(f"{mods}.{name}" if mods else name)


def full_name(obj: Any) -> str:
    """``module.qualname`` of a class or function."""
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', type(obj).__name__)}"


def target_problem(name: Any, locator: Any = None) -> tuple[type | None, str, str]:
    """The class a ``_target_`` names when a plain bundle may use it.

    Returns
    -------
    tuple
        ``(cls, shown, why)``: the allowed class (None when refused), the name as shown in
        messages (with the resolved full name) and why it is refused ("" when allowed).
    """
    obj, why = resolve_target(name, locator)
    shown = str(name)
    if obj is None:
        return None, shown, why
    full = full_name(obj)
    if full != shown:
        shown = f"{shown} = {full}"
    module = str(getattr(obj, "__module__", ""))
    if isinstance(obj, type) and module.startswith(("monai.", "torch.")):
        for base in obj.__mro__:
            if base.__name__ in _DENIED_CLASSES and str(base.__module__).startswith("monai."):
                return None, shown, _DENIED_CLASSES[base.__name__]
    for prefix, reason in _MODULE_REASONS:
        if module == prefix or module.startswith(prefix + "."):
            return None, shown, reason
    if not isinstance(obj, type):
        kind = "a module" if inspect.ismodule(obj) else "a function" if callable(obj) else "not a class"
        return None, shown, f"{kind}, not a class a plain bundle needs"
    if not (module + ".").startswith(ALLOWED_MODULES):
        return None, shown, ("outside the classes a plain bundle needs (MONAI networks, transforms, inferers, "
                             "torch.nn, napari-cxseg's own networks)")
    return obj, shown, ""


def _risky_arg(name: str) -> bool:
    n = name.lower()
    if n.startswith("use_") or "drop" in n:  # gradient checkpointing, drop-path rates
        return False
    return bool(_RISKY_WORDS.search(n)) or bool(set(re.split(r"[_\W]+", n)) & _RISKY_TOKENS)


def _argument_findings(cls: type, args: dict[str, Any], where: str) -> list[Finding]:
    """Arguments of an allowed class that make it import by name, download or load files."""
    found = [Finding(f"{where}#{a}", f"{a}={args[a]!r}", "imports a class by name")
             for a in _NAMED_IMPORT_ARGS.get(cls.__name__, ()) if isinstance(args.get(a), str)]
    if not str(cls.__module__).startswith(("monai.networks.", "torch.nn.")):
        return found
    try:
        params = dict(inspect.signature(cls.__init__).parameters)
    except (TypeError, ValueError):
        params = {}
    values = {p: v.default for p, v in params.items() if v.default is not inspect.Parameter.empty}
    values.update(args)
    for arg, value in values.items():
        if _risky_arg(str(arg)) and value not in (None, False, 0, "", [], {}):
            found.append(Finding(f"{where}#{arg}", f"{arg}={value!r}",
                                 f"{cls.__name__} downloads or loads weights from a path or URL"))
    return found


# ---------------------------------------------------------------------- closure


def closure(config: dict[str, Any], roots: Sequence[str]) -> list[str]:
    """The ids MONAI evaluates to instantiate ``roots``: the roots and every id referenced in
    them with ``@`` (whole-string references and ids in ``$`` expressions), transitively.

    Nested components and expressions are part of their parent's subtree. :data:`OVERRIDDEN_IDS`
    are left out; ids that do not exist are kept (MONAI will report them).
    """
    from monai.bundle.reference_resolver import ReferenceResolver

    items = monai_items(config)
    todo = [ReferenceResolver.normalize_id(r) for r in reversed(roots)]
    seen: list[str] = []
    budget = [MAX_NODES]
    while todo:
        i = todo.pop()
        if i in seen or i in OVERRIDDEN_IDS:
            continue
        seen.append(i)
        if i in items:
            todo.extend(r for _, v in walk(items[i], i, budget) if isinstance(v, str)
                        for r in ReferenceResolver.match_refs_pattern(v))
    return seen


def check(config: dict[str, Any], roots: Sequence[str], notes: dict[str, str] | None = None,
          locator: Any = None) -> list[Finding]:
    """Where the closure of ``roots`` holds code (empty: plain data MONAI can build untrusted).

    Parameters
    ----------
    config
        The merged config (see :func:`napari_cxseg.models.bundle.load_bundle_config`).
    roots
        The ids the product instantiates.
    notes
        Why a ``%`` macro at an id was left unexpanded (from the loader).
    locator
        The ComponentLocator short names are resolved with.
    """
    from monai.bundle import ConfigParser
    from monai.bundle.reference_resolver import ReferenceResolver

    locator = locator if locator is not None else shared_locator()
    notes = notes or {}
    items = monai_items(config)
    found: list[Finding] = []
    budget = [MAX_NODES]
    for i in closure(config, roots):
        if i not in items:
            continue
        try:
            same = get_path(config, i) is items[i]
        except KeyError:
            same = False
        if not same:
            found.append(Finding(display_id(i), "", "an id MONAI would find elsewhere (a key holds '::' or '#')"))
            continue
        for sub, v in walk(items[i], i, budget):
            where = display_id(sub)
            if sub != i and (isinstance(v, str) and v.startswith("$") or isinstance(v, dict) and "_target_" in v) \
                    and items.get(sub) is not v:
                found.append(Finding(where, "", "an id MONAI would find elsewhere (a key holds '::' or '#')"))
            if isinstance(v, str):
                if v.startswith("$"):
                    found.append(Finding(where, v, "a Python expression"))
                elif v.startswith("%"):
                    found.append(Finding(where, display_id(v), notes.get(sub, "a macro MONAI would expand later")))
                elif ConfigParser.relative_id_prefix.search(ReferenceResolver.normalize_id(v)):
                    found.append(Finding(where, v, "a relative reference MONAI would resolve later"))
            elif isinstance(v, dict) and "_target_" in v:
                found.extend(_component_findings(v, sub, locator))
    return found


def _component_findings(comp: dict[str, Any], comp_id: str, locator: Any) -> list[Finding]:
    where = display_id(comp_id)
    found: list[Finding] = []
    cls, shown, why = target_problem(comp["_target_"], locator)
    if cls is None:
        found.append(Finding(f"{where}#_target_", shown, why))
    for key, val in comp.items():
        k = str(key)
        if k in _PLAIN_SPECIAL_KEYS or not (k.startswith("_") and k.endswith("_")):
            continue
        if k == "_mode_" and val == "default":
            continue
        if k == "_disabled_" and isinstance(val, bool):
            continue
        why = {"_requires_": "makes MONAI evaluate other ids first",
               "_mode_": "debug runs pdb, callable hands back the function",
               "_disabled_": "not a literal true/false"}.get(k, "a MONAI special key")
        found.append(Finding(f"{where}#{k}", repr(val), why))
    if cls is not None:
        args = {k: v for k, v in comp.items() if not (str(k).startswith("_") and str(k).endswith("_"))}
        found.extend(_argument_findings(cls, args, where))
    return found


def untrusted_message(what: str, findings: Sequence[Finding]) -> str:
    """The refusal: names the model, says where the code is and why, and how to trust it."""
    shown = "; ".join(str(f) for f in findings[:3])
    more = f"; and {len(findings) - 3} more" if len(findings) > 3 else ""
    return f"{what} holds code that would run: {shown}{more}. Not run: {HOW_TO_TRUST}"


# ---------------------------------------------------------------------- TorchScript


def load_torchscript(path: str | Path, trust: bool, what: str) -> Any:
    """Load a TorchScript file (a program: PyTorch's security model) only when trusted.

    Raises
    ------
    CxsegError
        Untrusted (naming the file, why and how to trust), or not a TorchScript file.
    """
    path = Path(path)
    if not trust:
        raise CxsegError(untrusted_message(what, [Finding(str(path), "TorchScript", "a TorchScript file is a program")]))
    import torch

    try:
        return torch.jit.load(str(path), map_location="cpu")
    except (RuntimeError, ValueError, OSError) as e:
        raise CxsegError(f"{what}: {path} is not a TorchScript file: {e}") from None


def trust_findings(card: Any) -> list[Finding]:
    """Why running ``card`` would run code from its files (empty: it runs nothing).

    TorchScript weights (``torchscript`` cards, ``.ts`` files, a bundle with only
    ``models/model.ts``), code in what a bundle evaluates (:func:`check`), and a zoo bundle not
    downloaded yet (its config is unknown). An unreadable bundle config gives none: it runs
    nothing, and building it reports why.
    """
    from .weights import bundle_path

    w = card.weights
    ts = [str(f) for f in (w.file, w.url) if str(f or "").lower().endswith(".ts")]
    if w.source == "torchscript" or ts:
        return [Finding(ts[0] if ts else str(w.file), "TorchScript", "a TorchScript file is a program")]
    if w.source != "bundle":
        return []
    unknown = [Finding(f"bundle {w.bundle}", "not downloaded yet", "its config is unknown")] if card.is_bundle else []
    try:
        bdir = bundle_path(card)
    except CxsegError:
        return unknown
    if not bdir.is_dir():
        return unknown  # a network card only takes weights from it (checked when they load)
    if not (bdir / "models" / "model.pt").is_file() and (bdir / "models" / "model.ts").is_file():
        return [Finding(str(bdir / "models" / "model.ts"), "TorchScript", "a TorchScript file is a program")]
    if not card.is_bundle:
        return []
    from .bundle import bundle_findings

    try:
        return bundle_findings(bdir)
    except CxsegError:
        return []


def requires_trust(card: Any) -> bool:
    """Whether running ``card`` runs code from its files (the Segment widget asks first); see
    :func:`trust_findings` for why."""
    return bool(trust_findings(card))
