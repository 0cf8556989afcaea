"""Networks named by model cards, built and loaded with their weights.

Only classes of ``monai.networks.nets`` and this package's own architectures
(:mod:`.architectures`, e.g. SA-UNet) can be named by a card (a card is data, not code);
TorchScript files and TorchXRayVision's PSPNet are the two other ways a network comes in.
A TorchScript file is a program (PyTorch's security model): it loads only when trusted
(:func:`napari_cxseg.models.trust.load_torchscript`).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ..images import CxsegError

if TYPE_CHECKING:
    import torch

    from .cards import ModelCard

#: TorchXRayVision ChestX-Det PSPNet output channels, in order.
XRV_PSPNET_TARGETS = (
    "Left Clavicle", "Right Clavicle", "Left Scapula", "Right Scapula", "Left Lung", "Right Lung",
    "Left Hilus Pulmonis", "Right Hilus Pulmonis", "Heart", "Aorta", "Facies Diaphragmatica",
    "Mediastinum", "Weasand", "Spine",
)


def network_class(name: str) -> type:
    """The network class a card names: ``monai.networks.nets.<name>`` or one of this package's
    :data:`~napari_cxseg.models.architectures.ARCHITECTURES` (``"SAUNet"``).

    ``"UNet"``, ``"monai.networks.nets.UNet"`` and ``"napari_cxseg.models.architectures.SAUNet"``
    are accepted; nothing else is imported (a card is data, not code).
    """
    import monai.networks.nets as nets

    from .architectures import ARCHITECTURES

    short = name.rsplit(".", 1)[-1]
    if name in (short, f"napari_cxseg.models.architectures.{short}") and short in ARCHITECTURES:
        return ARCHITECTURES[short]
    cls = getattr(nets, short, None) if name in (short, f"monai.networks.nets.{short}") else None
    if cls is None or not isinstance(cls, type):
        raise CxsegError(f"network '{name}' is not a class of monai.networks.nets or one of "
                         f"{', '.join(ARCHITECTURES)}")
    return cls


def make_network(name: str, args: dict, where: str = "card") -> torch.nn.Module:
    """``network_class(name)(**args)`` with a message naming ``where`` when the arguments do not fit.

    The one network builder: model cards, click-network specs and the Trainer use it.
    """
    cls = network_class(name)
    try:
        return cls(**dict(args))
    except (TypeError, ValueError, AssertionError) as e:
        raise CxsegError(f"{where}: field 'network.args' does not fit {name}: {e}") from None


def build_network(card: ModelCard) -> torch.nn.Module:
    """The card's network without weights (see :func:`make_network`).

    Raises
    ------
    CxsegError
        When the name is unknown or the arguments do not fit, naming the card.
    """
    if card.network is None:
        raise CxsegError(f"model {card.name}: the card names no network")
    return make_network(card.network.name, card.network.args, f"model card {card.path or card.name}")


def load_network(card: ModelCard, weights: str | Path | None = None, trust: bool = False) -> torch.nn.Module:
    """The card's network with its weights, in eval mode, on the CPU.

    Parameters
    ----------
    card
        A card with ``network`` (any weight source but ``bundle`` without network), or a
        ``torchscript`` / ``torchxrayvision`` card.
    weights
        The weights file; resolved with :func:`~napari_cxseg.models.weights.resolve_weights`
        when not given.
    trust
        Allow TorchScript weights (``torchscript`` cards, ``.ts`` files): they are code.

    Raises
    ------
    CxsegError
        For TorchScript weights without ``trust`` (saying why and how to trust them), or
        weights that do not fit the card's network.
    """
    from .trust import load_torchscript
    from .weights import load_into, resolve_weights

    src = card.weights.source
    if src == "torchxrayvision":
        net = build_xrv_pspnet()
        path = Path(weights) if weights is not None else resolve_weights(card)
        load_into(net.model, path, what=f"TorchXRayVision PSPNet of model {card.name}")
        return net.eval()
    path = Path(weights) if weights is not None else resolve_weights(card)
    if src == "torchscript" or path.suffix.lower() == ".ts":
        return load_torchscript(path, trust, what=f"model {card.name}").eval()
    net = build_network(card)
    load_into(net, path, what=f"{card.network.name} of model {card.name}")
    return net.eval()


def build_xrv_pspnet() -> torch.nn.Module:
    """TorchXRayVision's ChestX-Det PSPNet (14 structures) without weights.

    The wrapper reproduces ``xrv.baseline_models.chestx_det.PSPNet.forward``: one channel in
    [-1024, 1024], repeated to RGB, resized to 512 x 512, scaled to [0, 1] and ImageNet-normalised;
    output ``[B, 14, 512, 512]`` logits.  Weights are loaded separately (``weights_only``) so that
    this package controls where they are cached.

    Raises
    ------
    CxsegError
        When ``torchxrayvision`` is not installed.
    """
    import torch
    from torch import nn

    try:
        from torchxrayvision.baseline_models.chestx_det.ptsemseg.pspnet import pspnet
    except ImportError:
        raise CxsegError(
            "the cxr-anatomy model needs TorchXRayVision: pip install torchxrayvision"
        ) from None

    class XRVPSPNet(nn.Module):
        """ChestX-Det PSPNet with TorchXRayVision's input handling."""

        targets = XRV_PSPNET_TARGETS

        def __init__(self) -> None:
            super().__init__()
            self.model = pspnet(len(XRV_PSPNET_TARGETS))
            self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
            self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = x.repeat(1, 3, 1, 1)
            x = nn.functional.interpolate(x, size=(512, 512), mode="bilinear", align_corners=False)
            x = (x + 1024) / 2048
            return self.model((x - self.mean) / self.std)

    return XRVPSPNet()
