"""Running a MONAI bundle (directory or zip) with its own configuration.

A bundle's ``configs/inference.json`` (or ``.yaml``) describes the network (``network_def``),
the preprocessing, the inferer and the postprocessing.  :class:`BundleModel` instantiates those
four pieces with :class:`monai.bundle.ConfigParser` (overriding ``bundle_root`` and
``device``), drops the file loading and saving transforms (the engine hands over an image in
memory and writes the result itself), loads ``models/model.pt`` with ``weights_only=True``
(or ``models/model.ts``) and lets the bundle's ``Invertd`` bring the prediction back to the
input grid.

Trust: ``$`` expressions in a config are Python code, and so is a ``_target_`` outside MONAI /
torch.  Such a bundle runs only when the user says they trust its source (``--trust`` in the
CLI, a confirmation in the GUI); otherwise :class:`BundleModel` refuses with a
:class:`~napari_cxseg.images.CxsegError`.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..images import CxsegError

CONFIG_NAMES = ("inference.json", "inference.yaml", "inference.yml")
#: Module prefixes a ``_target_`` may name without counting as code of the bundle's author.
SAFE_TARGET_PREFIXES = ("monai.", "torch.", "ignite.")
#: Modules under those prefixes whose classes load or run code (pickles, hubs, compilers, configs).
UNSAFE_TARGET_MODULES = (
    "monai.bundle", "torch.hub", "torch.package", "torch.jit", "torch.utils.cpp_extension",
    "torch.serialization", "torch.multiprocessing", "torch.distributed",
)


def is_safe_target(name: str) -> bool:
    """Whether a config's ``_target_`` names a plain library class (instantiating it runs no
    code of the bundle's author).

    The dotted name is resolved the way MONAI resolves it, step by step: every step must be a
    module under :data:`SAFE_TARGET_PREFIXES` and outside :data:`UNSAFE_TARGET_MODULES`, and the
    last step a class defined there. So ``monai.networks.utils.torch.os.system`` (a path through
    re-exported modules to a function) is refused. Names without a dot are MONAI's short names,
    which MONAI looks up among its own classes only.
    """
    import importlib
    import inspect

    if not isinstance(name, str) or not name:
        return False
    if "." not in name:
        return True
    parts = name.split(".")

    def safe_module(mod_name: str) -> bool:
        return mod_name.startswith(SAFE_TARGET_PREFIXES) and not any(
            mod_name == u or mod_name.startswith(u + ".") for u in UNSAFE_TARGET_MODULES
        )

    if not safe_module(name.rsplit(".", 1)[0] + "."):
        return False
    obj: Any = None
    i = len(parts)
    while i > 0:  # the longest importable module prefix
        mod_name = ".".join(parts[:i])
        if not safe_module(mod_name + "."):
            return False
        try:
            obj = importlib.import_module(mod_name)
            break
        except Exception:
            i -= 1
    if obj is None:
        return False
    for attr in parts[i:]:
        if inspect.ismodule(obj) and not safe_module(obj.__name__ + "."):
            return False
        obj = getattr(obj, attr, None)
        if obj is None:
            return False
        if inspect.ismodule(obj) and not safe_module(obj.__name__ + "."):
            return False
    return inspect.isclass(obj) and safe_module(str(getattr(obj, "__module__", "")) + ".")
#: Transforms that read or write files; the engine does that itself.
_IO_TRANSFORMS = ("LoadImage", "LoadImaged", "SaveImage", "SaveImaged")


def find_config(bundle_dir: str | Path) -> Path:
    """The inference config of a bundle (``configs/inference.json`` or ``.yaml``)."""
    bdir = Path(bundle_dir)
    for name in CONFIG_NAMES:
        p = bdir / "configs" / name
        if p.is_file():
            return p
    raise CxsegError(f"bundle {bdir} has no configs/inference.json or configs/inference.yaml")


def read_config(path: str | Path) -> dict[str, Any]:
    """The raw (unparsed) config as a dict, JSON or YAML."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix.lower() == ".json":
            return json.loads(text)
        import yaml

        return yaml.safe_load(text)
    except Exception as e:  # json.JSONDecodeError, yaml.YAMLError
        raise CxsegError(f"bundle config {path} cannot be read: {e}") from None


def find_expressions(config: Any, prefix: str = "") -> list[str]:
    """Where a config holds code: ``$`` expressions and ``_target_`` that are not plain
    MONAI/torch/ignite classes (see :func:`is_safe_target`).

    Returns
    -------
    list of str
        ``"id: text"`` entries (ids joined with ``#`` as in MONAI), empty when the config is
        plain data.
    """
    found: list[str] = []
    for key, val in _walk(config, prefix):
        if isinstance(val, str):
            if val.startswith("$"):
                found.append(f"{key}: {val}")
            elif key.endswith("_target_") and not is_safe_target(val):
                found.append(f"{key}: {val}")
    return found


def _walk(obj: Any, prefix: str) -> Iterator[tuple[str, Any]]:
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _walk(v, f"{prefix}#{k}" if prefix else str(k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _walk(v, f"{prefix}#{i}" if prefix else str(i))
    else:
        yield prefix, obj


def requires_trust(card: Any) -> bool:
    """Whether running ``card`` executes code from a bundle config (ask the user first).

    False for cards that run through the engine's own pipeline (even with bundle weights).
    A zoo bundle that is not downloaded yet counts as needing trust: its config is unknown.
    """
    if not getattr(card, "is_bundle", False):
        return False
    from .weights import bundle_path

    try:
        cfg = find_config(bundle_path(card))
    except CxsegError:
        return True
    return bool(find_expressions(read_config(cfg)))


def untrusted_message(bundle_dir: str | Path, expressions: list[str]) -> str:
    """The refusal message for a bundle with code in its config."""
    first = expressions[0] if expressions else ""
    more = f" and {len(expressions) - 1} more" if len(expressions) > 1 else ""
    return (
        f"bundle {bundle_dir} contains Python expressions ($...), e.g. {first!r}{more}; "
        "run it only if you trust its source: --trust / confirm in the GUI"
    )


def unpack_bundle_zip(zip_path: str | Path) -> Path:
    """Unpack a bundle zip (``<name>/configs/...``) into ``<cache>/bundles/_zips`` once.

    Returns
    -------
    Path
        The bundle folder (the one holding ``configs/metadata.json``).
    """
    from .weights import bundles_dir

    zip_path = Path(zip_path)
    h = hashlib.sha256()
    with open(zip_path, "rb") as fh:
        while block := fh.read(1 << 20):
            h.update(block)
    dest = bundles_dir() / "_zips" / f"{zip_path.stem}-{h.hexdigest()[:12]}"
    if not dest.is_dir():
        try:
            with zipfile.ZipFile(zip_path) as z:
                root = dest.parent / (dest.name + ".part")
                for info in z.infolist():
                    target = (root / info.filename).resolve()
                    if not str(target).startswith(str(root.resolve())):
                        raise CxsegError(f"bundle zip {zip_path} has an unsafe member path {info.filename!r}")
                z.extractall(root)
            root.rename(dest)
        except zipfile.BadZipFile as e:
            raise CxsegError(f"{zip_path} is not a valid zip file: {e}") from None
    metas = sorted(dest.rglob("configs/metadata.json"), key=lambda p: len(p.parts))
    if not metas:
        raise CxsegError(f"bundle zip {zip_path} holds no <name>/configs/metadata.json")
    return metas[0].parent.parent


class BundleModel:
    """A MONAI bundle's network and transforms, ready for the engine's Predictor.

    Parameters
    ----------
    bundle_dir
        The bundle folder.
    device
        The torch device the network runs on.
    trust
        Allow code in the config (``$`` expressions, non-MONAI ``_target_``).

    Raises
    ------
    CxsegError
        When the config holds code and ``trust`` is False, or a piece cannot be built.
    """

    def __init__(self, bundle_dir: str | Path, device: Any = "cpu", trust: bool = False) -> None:
        self.bundle_dir = Path(bundle_dir).resolve()
        self.config_path = find_config(self.bundle_dir)
        raw = read_config(self.config_path)
        self.expressions = find_expressions(raw)
        if self.expressions and not trust:
            raise CxsegError(untrusted_message(self.bundle_dir, self.expressions))
        self.device = device
        self._raw = raw
        self._parsed = False

    # ------------------------------------------------------------------ building
    def _parse(self) -> None:
        if self._parsed:
            return
        import torch
        from monai.bundle import ConfigParser

        parser = ConfigParser()
        parser.read_config(str(self.config_path))
        meta = self.bundle_dir / "configs" / "metadata.json"
        if meta.is_file():
            parser.read_meta(str(meta))
        parser["bundle_root"] = str(self.bundle_dir)
        parser["device"] = f"$torch.device('{torch.device(self.device)}')"
        self.parser = parser
        self.image_key = str(self._plain(parser, "image_key", "image"))
        try:
            net_id = "network_def" if "network_def" in parser else "network"
            self.network = parser.get_parsed_content(net_id, instantiate=True)
            self.preprocessing = parser.get_parsed_content("preprocessing", instantiate=True)
            self.inferer = parser.get_parsed_content("inferer", instantiate=True)
            self.postprocessing = (
                parser.get_parsed_content("postprocessing", instantiate=True) if "postprocessing" in parser else None
            )
        except CxsegError:
            raise
        except Exception as e:  # anything a config may raise while instantiating
            raise CxsegError(f"bundle {self.bundle_dir}: cannot build it from {self.config_path.name}: "
                             f"{type(e).__name__}: {e}") from None
        self._strip_io(self.preprocessing)
        if self.postprocessing is not None:
            self._strip_io(self.postprocessing)
        self.network = self._load_weights(self.network)
        self._parsed = True

    @staticmethod
    def _plain(parser: Any, key: str, default: Any) -> Any:
        val = parser.get(key, default)
        return default if isinstance(val, str) and val.startswith(("$", "@", "%")) else val

    @staticmethod
    def _strip_io(compose: Any) -> None:
        """Remove file loading/saving transforms in place (shared with the bundle's Invertd)."""
        transforms = getattr(compose, "transforms", None)
        if transforms is None:
            return
        kept = [t for t in transforms if type(t).__name__ not in _IO_TRANSFORMS]
        for t in kept:
            BundleModel._strip_io(t)
        compose.transforms = type(transforms)(kept) if isinstance(transforms, tuple | list) else kept

    def _load_weights(self, network: Any) -> Any:
        import torch

        from .weights import load_into

        pt = self.bundle_dir / "models" / "model.pt"
        ts = self.bundle_dir / "models" / "model.ts"
        if pt.is_file() and isinstance(network, torch.nn.Module):
            load_into(network, pt, what=f"network_def of bundle {self.bundle_dir.name}")
        elif ts.is_file():
            network = torch.jit.load(str(ts), map_location="cpu")
        elif not pt.is_file():
            raise CxsegError(f"bundle {self.bundle_dir} has no models/model.pt or models/model.ts")
        return network.to(self.device).eval()

    # ------------------------------------------------------------------ running
    def load(self) -> BundleModel:
        """Build the network and transforms now (otherwise done on first use)."""
        self._parse()
        return self

    def preprocess(self, image: Any) -> dict[str, Any]:
        """Run the bundle's preprocessing on a channel-first MetaTensor (file loading removed)."""
        self._parse()
        return self.preprocessing({self.image_key: image})

    def window_settings(self) -> dict[str, Any] | None:
        """Sliding-window settings of the bundle's inferer, or None when it is another inferer."""
        self._parse()
        from monai.inferers import SlidingWindowInferer

        inf = self.inferer
        if not isinstance(inf, SlidingWindowInferer):
            return None
        return {
            "roi_size": tuple(int(r) for r in inf.roi_size),
            "overlap": inf.overlap,
            "sw_batch_size": int(inf.sw_batch_size),
            "mode": str(getattr(inf.mode, "value", inf.mode)),
            "sigma_scale": inf.sigma_scale,
            "padding_mode": str(getattr(inf.padding_mode, "value", inf.padding_mode)),
            "cval": float(inf.cval),
        }

    def infer(self, batch: Any) -> Any:
        """Run the bundle's own inferer on a batch (used when it is not a sliding window)."""
        self._parse()
        return self.inferer(batch, self.network)

    def postprocess(self, data: dict[str, Any], pred: Any) -> Any:
        """Run the bundle's postprocessing on one prediction; returns the output on the input grid.

        Parameters
        ----------
        data
            The preprocessed dict (holds the image with its applied transforms).
        pred
            Network output for that image, channel-first, no batch axis.
        """
        self._parse()
        from monai.data import MetaTensor

        img = data[self.image_key]
        if not isinstance(pred, MetaTensor) and isinstance(img, MetaTensor):
            meta = {k: v for k, v in img.meta.items() if k != "affine"}
            pred = MetaTensor(pred, affine=img.affine, meta=meta)
        d = dict(data)
        d["pred"] = pred
        if self.postprocessing is not None:
            d = self.postprocessing(d)
        if not _has_invert(self.postprocessing):
            # a bundle that leaves its output in model space: bring it back ourselves
            from monai.transforms import Invertd

            d = Invertd(keys="pred", transform=self.preprocessing, orig_keys=self.image_key,
                        nearest_interp=True)(d)
        return d["pred"]


def _has_invert(compose: Any) -> bool:
    if compose is None:
        return False
    if type(compose).__name__ == "Invertd":
        return True
    return any(_has_invert(t) for t in getattr(compose, "transforms", ()) or ())
