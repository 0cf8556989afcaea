"""Worker callbacks that may arrive after their widget was closed."""

from __future__ import annotations

from typing import Any


def enable_if_alive(button: Any) -> None:
    """Enable a button again, unless Qt already deleted it (the dock was closed while a worker ran)."""
    try:
        button.setEnabled(True)
    except RuntimeError:  # "wrapped C/C++ object ... has been deleted"
        pass
