"""Dataset runs on a Dask distributed cluster: one task per case, results written as they finish.

:func:`run_on_cluster` maps :func:`predict_case` over the cases of a batch (what
``napari-cxseg predict`` collects from a folder, a CSV or an MSD task) on a Dask cluster: the one
at ``scheduler`` (``dask-scheduler`` / ``dask-worker``, dask-jobqueue on SLURM, ...) or a
``LocalCluster`` of ``workers`` processes. Each worker loads the model once and keeps it; each task
reads its case, segments it with the package's Predictor and writes the labels itself, so a result
is on disk as soon as its task ends. Finished outputs are skipped before anything is submitted
(resume), a failing case is reported with its reason without stopping the others, a progress bar
follows the tasks, and ``<output>/summary.csv`` lists every case at the end.
"""

from __future__ import annotations

import csv
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .images import CxsegError

#: Predictors kept by each worker process: (model, device, trust) -> Predictor.
_PREDICTORS: dict[tuple[str, str, bool], Any] = {}


@dataclass
class CaseResult:
    """What happened to one case."""

    case: str
    input: str
    output: str
    status: str  # "done", "skipped", "failed"
    seconds: float = 0.0
    error: str = ""
    worker: str = ""


def _predictor(model: str, device: str, trust: bool, precision: str = "auto", runtime: str = "auto") -> Any:
    key = (model, device, trust, precision, runtime)
    if key not in _PREDICTORS:
        from .inference import Predictor

        _PREDICTORS[key] = Predictor(model, device=device, trust=trust, precision=precision,
                                       runtime=runtime).load()
    return _PREDICTORS[key]


def predict_case(item: Any, model: str, out_dir: str, ext: str | None, overwrite: bool, device: str = "cpu",
                 trust: bool = False, threads: int | None = None, precision: str = "auto",
                 runtime: str = "auto") -> CaseResult:
    """Segment one case and write its labels (runs on a worker).

    Returns
    -------
    CaseResult
        ``done`` with the output path, or ``failed`` with the reason (never raises for a bad case).
    """
    from . import io as cxio
    from .inputs import output_path, read_image

    if threads:
        import torch

        torch.set_num_threads(int(threads))
    t0 = time.time()
    worker = f"{os.uname().nodename}:{os.getpid()}"
    try:
        image = read_image(item)
        target = output_path(Path(out_dir), item.stem, image, ext)
        labels = _predictor(model, device, trust, precision, runtime).predict(image)
        cxio.write_labels(labels, target, overwrite=overwrite)
        return CaseResult(item.stem, str(item.path), str(target), "done", time.time() - t0, worker=worker)
    except CxsegError as e:
        return CaseResult(item.stem, str(item.path), "", "failed", time.time() - t0, " ".join(str(e).split()), worker)
    except Exception as e:  # one bad case must not end the run
        return CaseResult(item.stem, str(item.path), "", "failed", time.time() - t0,
                          f"{type(e).__name__}: {' '.join(str(e).split())}", worker)


def run_on_cluster(items: Sequence[Any], model: str, out_dir: str | Path, ext: str | None = None,
                   overwrite: bool = False, scheduler: str | None = None, workers: int = 2,
                   device: str = "cpu", trust: bool = False, threads_per_worker: int = 1,
                   progress: bool = True, precision: str = "auto",
                   runtime: str = "auto") -> list[CaseResult]:
    """Run a batch on a Dask cluster; returns one :class:`CaseResult` per case (summary CSV written).

    Parameters
    ----------
    items
        The batch (:class:`~napari_cxseg.inputs.InputItem` list from ``collect_inputs``).
    model
        Card name, card file or bundle folder (resolved on each worker; the path must be visible
        there).
    out_dir
        The output folder (visible to the workers: a shared file system on a real cluster).
    ext
        Output extension (None: ``.nii.gz`` for volumes, ``.png`` for radiographs).
    overwrite
        Recompute cases whose output exists (otherwise they are skipped: resume).
    scheduler
        Address of a running scheduler (``tcp://host:8786``); None starts a ``LocalCluster``.
    workers
        Worker processes of the LocalCluster.
    device, trust, precision, runtime
        As for the Predictor, on every worker.
    threads_per_worker
        torch threads per worker (the LocalCluster's threads per worker too).
    """
    from dask.distributed import Client, LocalCluster, as_completed

    from .inputs import existing_output

    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise CxsegError(f"output {out} must be a folder for a batch of {len(items)} inputs")
    out.mkdir(parents=True, exist_ok=True)
    results: list[CaseResult] = []
    todo = []
    for it in items:
        done = None if overwrite else existing_output(out, it.stem, ext)
        if done is not None:
            results.append(CaseResult(it.stem, str(it.path), str(done), "skipped"))
        else:
            todo.append(it)
    cluster = None
    if scheduler:
        client = Client(scheduler)
    else:
        cluster = LocalCluster(n_workers=max(1, int(workers)), threads_per_worker=max(1, threads_per_worker),
                               processes=True, dashboard_address=None)
        client = Client(cluster)
    try:
        futures = [client.submit(predict_case, it, model, str(out), ext, overwrite, device=device, trust=trust,
                                 threads=threads_per_worker, precision=precision, runtime=runtime,
                                 key=f"cxseg-{i}-{it.stem}", pure=False) for i, it in enumerate(todo)]
        bar = _bar(len(futures), progress)
        for fut in as_completed(futures):
            try:
                r = fut.result()
            except Exception as e:  # a worker that died: the case is reported, the rest goes on
                it = todo[futures.index(fut)]
                r = CaseResult(it.stem, str(it.path), "", "failed", error=f"worker lost: {type(e).__name__}: {e}")
            results.append(r)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(failed=sum(x.status == "failed" for x in results))
        if bar is not None:
            bar.close()
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
    order = {it.stem: i for i, it in enumerate(items)}
    results.sort(key=lambda r: order.get(r.case, 0))
    write_summary(results, out / "summary.csv")
    return results


def write_summary(results: Sequence[CaseResult], path: Path) -> Path:
    """One row per case (atomic write)."""
    tmp = path.with_name(path.name + f".{os.getpid()}.partial")
    with open(tmp, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=list(CaseResult.__dataclass_fields__))
        w.writeheader()
        for r in results:
            w.writerow(asdict(r))
    os.replace(tmp, path)
    return path


def _bar(total: int, show: bool) -> Any:
    if not show:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc="cases", unit="case", file=sys.stderr, disable=None)
