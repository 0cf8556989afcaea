"""Models as data: cards (YAML), weight sources and MONAI bundles.

Importing this package is cheap (no torch, no MONAI): cards are plain YAML, and the modules
that need torch (:mod:`.networks`, :mod:`.bundle`, weight loading) import it when used.
"""

from __future__ import annotations

from .cards import ModelCard, card_from_bundle, find_card, list_cards, load_card
from .weights import cache_dir, resolve_weights, weights_status

__all__ = [
    "ModelCard",
    "cache_dir",
    "card_from_bundle",
    "find_card",
    "list_cards",
    "load_card",
    "resolve_weights",
    "weights_status",
]
