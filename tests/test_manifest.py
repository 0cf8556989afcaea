"""The npe2 manifest is valid and every command it names imports."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def test_npe2_validate():
    npe2 = Path(sys.executable).with_name("npe2")
    res = subprocess.run([str(npe2), "validate", "napari-cxseg"], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


def test_manifest_commands_import():
    from npe2 import PluginManifest

    pm = PluginManifest.from_distribution("napari-cxseg")
    assert pm.contributions.readers and pm.contributions.writers and pm.contributions.widgets
    for cmd in pm.contributions.commands:
        module, attr = cmd.python_name.split(":")
        mod = __import__(module, fromlist=[attr])
        assert hasattr(mod, attr), cmd.python_name


def test_napari_start_does_not_import_torch():
    """Reading the manifest and importing the reader must not pull torch/monai (start-up)."""
    code = (
        "import sys, napari_cxseg._reader, napari_cxseg._writer, napari_cxseg._sample_data;"
        "print('torch' in sys.modules, 'monai' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"], out.stdout
