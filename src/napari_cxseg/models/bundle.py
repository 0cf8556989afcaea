"""Running a MONAI bundle (directory or zip) with its own configuration.

A bundle's ``configs/inference.json`` (or ``.yaml``) describes the network (``network_def``),
the preprocessing, the inferer and the postprocessing. :class:`BundleModel` builds those four
pieces with MONAI from the bundle's merged config
(:func:`~napari_cxseg.models.bundle_config.load_bundle_config`: metadata, macros, relative ids,
file loading/saving transforms disabled), handing MONAI only what they evaluate
(:func:`~napari_cxseg.models.bundle_config.evaluable_config`, overriding ``bundle_root`` and
``device``); it loads ``models/model.pt`` with ``weights_only=True`` (or ``models/model.ts``) and
lets the bundle's ``Invertd`` bring the prediction back to the input grid.

Trust: what those pieces evaluate is checked by :func:`napari_cxseg.models.trust.check`; a
bundle with code in it (``$`` expressions, classes that import, download or run things, special
keys, TorchScript) runs only when the user says they trust its source (``--trust`` in the CLI, a
confirmation in the GUI); otherwise :class:`BundleModel` refuses with a
:class:`~napari_cxseg.images.CxsegError` that says where, why and how to trust it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..images import CxsegError
from .bundle_config import (
    BundleConfig,
    display_id,
    evaluable_config,
    find_config,
    load_bundle_config,
    on_sys_path,
    read_config,
)
from .bundle_zip import unpack_bundle_zip
from .trust import Finding, check, requires_trust, untrusted_message

__all__ = ["BundleConfig", "BundleModel", "bundle_findings", "bundle_roots", "config_findings", "find_config",
           "load_bundle_config", "read_config", "requires_trust", "unpack_bundle_zip"]


def bundle_roots(config: dict[str, Any]) -> list[str]:
    """The ids :class:`BundleModel` instantiates."""
    roots = ["network_def" if "network_def" in config else "network", "preprocessing", "inferer"]
    return roots + (["postprocessing"] if "postprocessing" in config else [])


def config_findings(bc: BundleConfig, roots: list[str]) -> list[Finding]:
    """Where instantiating ``roots`` of a merged config runs code, plus TorchScript weights.

    Raises
    ------
    CxsegError
        When the product would evaluate a macro that cannot be expanded (missing file ...).
    """
    found = check(bc.content, roots, notes={**bc.notes, **bc.errors})
    for f in found:
        for i, msg in bc.errors.items():
            if f.where == display_id(i):
                raise CxsegError(f"bundle {bc.bundle_dir}: {f.where}: {msg}")
    models = bc.bundle_dir / "models"
    if not (models / "model.pt").is_file() and (models / "model.ts").is_file():
        found.append(Finding("models/model.ts", "TorchScript", "a TorchScript file is a program"))
    return found


def bundle_findings(bundle_dir: str | Path) -> list[Finding]:
    """Where running a bundle with :class:`BundleModel` would run code (empty: none).

    Raises
    ------
    CxsegError
        When the bundle's config cannot be read.
    """
    bc = load_bundle_config(bundle_dir)
    return config_findings(bc, bundle_roots(bc.content))


class BundleModel:
    """A MONAI bundle's network and transforms, ready for the engine's Predictor.

    Parameters
    ----------
    bundle_dir
        The bundle folder.
    device
        The torch device the network runs on.
    trust
        Allow code (see :func:`napari_cxseg.models.trust.check`) and TorchScript weights.

    Raises
    ------
    CxsegError
        When the bundle holds code and ``trust`` is False (naming where, why and how to trust
        it), or a piece cannot be built.
    """

    def __init__(self, bundle_dir: str | Path, device: Any = "cpu", trust: bool = False) -> None:
        self.bundle_dir = Path(bundle_dir).resolve()
        self.trust = bool(trust)
        self.config = load_bundle_config(self.bundle_dir, trust=self.trust)
        self.config_path = self.config.config_path
        self.roots = bundle_roots(self.config.content)
        self.findings = config_findings(self.config, self.roots)
        if self.findings and not self.trust:
            raise CxsegError(untrusted_message(f"bundle {self.bundle_dir}", self.findings))
        self.device = device
        self._parsed = False

    # ------------------------------------------------------------------ building
    def _parse(self) -> None:
        if self._parsed:
            return
        import torch
        from monai.bundle import ConfigParser

        overrides = {"bundle_root": str(self.bundle_dir), "device": torch.device(self.device)}
        parser = ConfigParser(evaluable_config(self.config.content, self.roots, overrides, trust=self.trust))
        image_key = self.config.content.get("image_key", "image")
        self.image_key = image_key if isinstance(image_key, str) and image_key[:1] not in "$@%" else "image"
        try:
            with on_sys_path(self.bundle_dir, enabled=self.trust):
                built = [parser.get_parsed_content(i, instantiate=True) for i in self.roots]
        except CxsegError:
            raise
        except Exception as e:  # anything a config may raise while instantiating
            raise CxsegError(f"bundle {self.bundle_dir}: cannot build it from {self.config_path.name}: "
                             f"{type(e).__name__}: {e}") from None
        self.network, self.preprocessing, self.inferer = built[:3]
        self.postprocessing = built[3] if len(built) > 3 else None
        self.network = self._load_weights(self.network)
        self._parsed = True

    def _load_weights(self, network: Any) -> Any:
        import torch

        from .trust import load_torchscript
        from .weights import load_into

        pt = self.bundle_dir / "models" / "model.pt"
        ts = self.bundle_dir / "models" / "model.ts"
        if pt.is_file() and isinstance(network, torch.nn.Module):
            load_into(network, pt, what=f"network_def of bundle {self.bundle_dir.name}")
        elif ts.is_file():
            network = load_torchscript(ts, self.trust, what=f"bundle {self.bundle_dir}")
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

        fast = self._fast_postprocess(data, pred)
        if fast is not None:
            return fast
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

    def _fast_plan(self) -> list[int] | None:
        """The labels kept to their largest component when the postprocessing is the usual chain.

        That chain is ``Activationsd(softmax)`` -> ``Invertd(bilinear, of the preprocessing)`` ->
        ``AsDiscreted(argmax)`` [-> ``KeepLargestConnectedComponentd(independent)``]; returns
        ``[]`` without the last step, None for any other postprocessing (run as written).
        """
        steps = list(getattr(self.postprocessing, "transforms", None) or [])
        names = [type(t).__name__ for t in steps]
        if names[:3] != ["Activationsd", "Invertd", "AsDiscreted"] or len(steps) > 4:
            return None
        act, inv, disc = steps[:3]
        one = lambda t, attr: tuple(getattr(t, attr, ()) or ())  # noqa: E731
        if one(act, "keys") != ("pred",) or one(act, "softmax") != (True,) or any(one(act, "sigmoid")) \
                or any(o is not None for o in one(act, "other")) or getattr(act.converter, "kwargs", {}):
            return None
        if one(inv, "keys") != ("pred",) or one(inv, "orig_keys") != (self.image_key,) \
                or any(one(inv, "nearest_interp")) or inv.transform is not self.preprocessing \
                or any(f is not None for f in one(inv, "post_func")):
            return None
        if one(disc, "keys") != ("pred",) or one(disc, "argmax") != (True,) \
                or any(v is not None for v in (*one(disc, "to_onehot"), *one(disc, "threshold"),
                                               *one(disc, "rounding"))) \
                or getattr(disc.converter, "kwargs", {}):
            return None
        if len(steps) == 3:
            return []
        keep = steps[3]
        conv = getattr(keep, "converter", None)
        if names[3] != "KeepLargestConnectedComponentd" or one(keep, "keys") != ("pred",) or conv is None \
                or not conv.independent or conv.connectivity is not None or conv.num_components != 1 \
                or conv.is_onehot or conv.applied_labels is None:
            return None
        return [int(v) for v in conv.applied_labels]

    def _fast_postprocess(self, data: dict[str, Any], pred: Any) -> Any:
        """The usual postprocessing's labels without inverting every channel (None: not applicable).

        Same labels as MONAI's chain (see :mod:`napari_cxseg.source_grid`), as a ``(1, *grid)``
        array on the input grid.
        """
        keep = self._fast_plan()
        if keep is None:
            return None
        import numpy as np
        import torch

        from ..source_grid import labels_on_source_grid, source_mapping

        mapping = source_mapping(data[self.image_key])
        if mapping is None:
            return None
        probs = torch.softmax(torch.as_tensor(pred).float(), dim=0)
        k = int(probs.shape[0])
        labels, boxes = labels_on_source_grid(probs, mapping[0], mapping[1], np.arange(k),
                                              np.uint8 if k <= 256 else np.int32, return_boxes=True)
        if keep:
            from ..inference import largest_components

            labels = largest_components(labels, keep, boxes)
        return labels[None]


def _has_invert(compose: Any) -> bool:
    if compose is None:
        return False
    if type(compose).__name__ == "Invertd":
        return True
    return any(_has_invert(t) for t in getattr(compose, "transforms", ()) or ())
