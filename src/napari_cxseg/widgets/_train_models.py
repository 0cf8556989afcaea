"""One Qt signal saying "the model cards changed", shared by the dock widgets.

The Train widget emits it when a run registers (or re-points) a card; the Segment widget
refills its model list at once.
"""

from __future__ import annotations

from qtpy.QtCore import QObject, Signal


class ModelEvents(QObject):
    """Carrier of :attr:`changed`."""

    #: emitted with the name of the model whose card was added or changed
    changed = Signal(str)


_EVENTS: ModelEvents | None = None


def model_events() -> ModelEvents:
    """The process-wide :class:`ModelEvents` (made on first use, on the GUI thread)."""
    global _EVENTS
    if _EVENTS is None:
        _EVENTS = ModelEvents()
    return _EVENTS
