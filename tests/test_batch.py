"""Dataset runs on a Dask LocalCluster: per-case tasks, results as they finish, resume, failures."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest

from napari_cxseg.cli import main
from napari_cxseg.io import read

pytestmark = pytest.mark.slow
FILMS = sorted((Path(__file__).parent / "data" / "kermany_cxr").glob("*.png"))


def test_folder_on_a_two_worker_local_cluster(tmp_path, capsys):
    src = tmp_path / "films"
    src.mkdir()
    for f in FILMS[:3]:
        shutil.copy(f, src / f.name)
    (src / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    out = tmp_path / "out"
    # an earlier, interrupted run already wrote the first case
    assert main(["predict", "--model", "cxr-lungs", "--input", str(src / FILMS[0].name), "--output",
                 str(out / f"{FILMS[0].stem}.png")]) == 0
    first = (out / f"{FILMS[0].stem}.png").stat().st_mtime_ns
    rc = main(["predict", "--model", "cxr-lungs", "--input", str(src), "--output", str(out), "--workers", "2"])
    assert rc == 1  # one case failed; the others were done
    rows = {r["case"]: r for r in csv.DictReader(open(out / "summary.csv"))}
    assert rows[FILMS[0].stem]["status"] == "skipped"
    assert (out / f"{FILMS[0].stem}.png").stat().st_mtime_ns == first  # resume: not recomputed
    for f in FILMS[1:3]:
        assert rows[f.stem]["status"] == "done"
        lab = read(out / f"{f.stem}.png", as_labels=True)[0].array
        assert set(np.unique(lab)) == {0, 1, 2}
        assert lab.shape == read(f)[0].array.shape
    assert rows["broken"]["status"] == "failed" and "broken.png" in rows["broken"]["error"]
    import os

    workers = {rows[f.stem]["worker"] for f in FILMS[1:3]}
    assert all(w and not w.endswith(f":{os.getpid()}") for w in workers)  # ran in the cluster's worker processes
    assert "broken.png" in capsys.readouterr().out
    # a second run skips everything that is done
    rc = main(["predict", "--model", "cxr-lungs", "--input", str(src), "--output", str(out), "--workers", "2"])
    rows = {r["case"]: r for r in csv.DictReader(open(out / "summary.csv"))}
    assert [rows[f.stem]["status"] for f in FILMS[:3]] == ["skipped"] * 3
