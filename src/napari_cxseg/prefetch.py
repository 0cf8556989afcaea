"""Batch runs on one machine: the next cases are read and preprocessed while this one runs.

:func:`prepared_cases` yields ``(item, Prepared or None, error)`` in input order. A torch
``DataLoader`` with worker processes reads each input and runs
:meth:`~napari_cxseg.inference.Predictor.prepare` (checks, intensity, resampling: the steps that
need no network), so the main process only runs the network, the way back to the source grid
and the writing. Worker processes, not threads: most of that work holds the GIL. A case that
cannot be read or prepared comes back with its error (the run goes on). Bundles, single cases
and ``workers=0`` are prepared in the main process, one after the other.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from typing import Any

from .images import CxsegError

#: Cases prepared ahead per worker.
PREFETCH = 2


class _Cases:
    """``Dataset`` of inputs -> ``(index, Prepared | None, error)`` (torch-free until used)."""

    def __init__(self, items: Sequence[Any], card: Any, trust: bool) -> None:
        self.items = list(items)
        self.card = card
        self.trust = trust
        self._predictor = None

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[int, Any, str]:
        from .inputs import read_image

        try:
            if self._predictor is None:
                import torch

                from .inference import Predictor

                torch.set_num_threads(1)  # the main process's network keeps the cores
                self._predictor = Predictor(self.card, device="cpu", trust=self.trust)
            return i, self._predictor.prepare(read_image(self.items[i])), ""
        except CxsegError as e:
            return i, None, " ".join(str(e).split())
        except Exception as e:  # one bad case must not end the run
            return i, None, " ".join(f"{type(e).__name__}: {e}".split())


def _first(batch: list[Any]) -> Any:
    return batch[0]


def default_workers() -> int:
    """``CXSEG_BATCH_WORKERS`` when set (0: prepare in this process), else one per two cores (1-4)."""
    env = os.environ.get("CXSEG_BATCH_WORKERS", "").strip()
    if env:
        try:
            return max(0, int(env))
        except ValueError:
            raise CxsegError(f"CXSEG_BATCH_WORKERS={env!r} must be a whole number (0: no workers)") from None
    return max(1, min(4, (os.cpu_count() or 2) // 2))


def prepared_cases(predictor: Any, items: Sequence[Any], workers: int | None = None) -> Iterator[tuple[Any, Any, str]]:
    """``(item, prepared, error)`` for every item, in order; ``prepared`` is None on error.

    Parameters
    ----------
    predictor
        The :class:`~napari_cxseg.inference.Predictor` that will run the cases.
    items
        :class:`~napari_cxseg.inputs.InputItem` list.
    workers
        Worker processes (None: :func:`default_workers`; 0: in this process).
    """
    workers = default_workers() if workers is None else int(workers)
    if workers <= 0 or len(items) < 2 or predictor._bundle is not None:
        yield from _in_process(predictor, items)
        return
    import torch

    # the workers take cores: the network's threads leave them (oversubscribed, both slow down)
    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, min(threads, (os.cpu_count() or 2) - min(workers, len(items)))))
    try:
        yield from _from_loader(predictor, items, workers)
    finally:
        torch.set_num_threads(threads)


def _from_loader(predictor: Any, items: Sequence[Any], workers: int) -> Iterator[tuple[Any, Any, str]]:
    from torch.utils.data import DataLoader

    loader = DataLoader(_Cases(items, predictor.card, predictor.trust), batch_size=1, shuffle=False,
                        num_workers=min(workers, len(items)), collate_fn=_first, prefetch_factor=PREFETCH,
                        persistent_workers=False)
    n = 0
    try:
        for i, prepared, error in loader:
            yield items[i], prepared, error
            n += 1
    except RuntimeError as e:  # a worker died (out of memory, a crash): go on in this process
        import warnings

        warnings.warn(f"batch workers stopped ({e}); preparing the remaining {len(items) - n} cases here",
                      RuntimeWarning, stacklevel=2)
        yield from _in_process(predictor, items[n:])


def _in_process(predictor: Any, items: Sequence[Any]) -> Iterator[tuple[Any, Any, str]]:
    """The same in this process; a thread reads the next input meanwhile."""
    from concurrent.futures import ThreadPoolExecutor

    from .inputs import read_image

    with ThreadPoolExecutor(max_workers=1) as pool:
        nxt = pool.submit(read_image, items[0]) if items else None
        for k, it in enumerate(items):
            cur, nxt = nxt, (pool.submit(read_image, items[k + 1]) if k + 1 < len(items) else None)
            try:
                yield it, predictor.prepare(cur.result()), ""
            except CxsegError as e:
                yield it, None, " ".join(str(e).split())
            except Exception as e:  # one bad case must not end the run
                yield it, None, " ".join(f"{type(e).__name__}: {e}".split())
