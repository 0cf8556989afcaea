"""Background warm-up: runs off the caller's thread, each step once, failures kept, switch-off honoured."""

from __future__ import annotations

import threading

import pytest

from napari_cxseg import warmup


@pytest.fixture(autouse=True)
def _fresh(monkeypatch):
    monkeypatch.setattr(warmup, "_claimed", set())
    monkeypatch.setattr(warmup, "_runs", [])
    monkeypatch.delenv("CXSEG_WARMUP", raising=False)


def test_background_warm_up_runs_off_the_main_thread_once():
    threads: list[threading.Thread] = []
    run = warmup.start_warm_up(["json", "no_such_module_cxseg"], [("note thread", lambda: threads.append(
        threading.current_thread()))])
    assert run is not None and run.wait(30)
    assert threads and threads[0] is not threading.main_thread()
    names = [s.name for s in run.steps]
    assert names == ["import json", "import no_such_module_cxseg", "note thread"]
    failed = {s.name: s.error for s in run.steps}
    assert "ModuleNotFoundError" in failed["import no_such_module_cxseg"] and not failed["note thread"]
    assert all(s.thread == "cxseg-warm-up" and s.seconds >= 0 for s in run.steps)
    # every step is taken once per process: nothing is left for a second widget
    assert warmup.start_warm_up(["json"], [("note thread", lambda: threads.append(None))]) is None
    assert warmup.warm_ups() == [run] and len(threads) == 1


def test_warm_up_can_be_switched_off(monkeypatch):
    monkeypatch.setenv("CXSEG_WARMUP", "0")
    assert warmup.start_warm_up(["json"]) is None
    assert warmup.warm_ups() == []


def test_torch_libraries_preload_is_harmless():
    import torch  # imported already: the preload does nothing

    assert warmup.preload_torch_libraries() == []
    assert torch.ones(2).sum().item() == 2.0


def test_jobs_wait_for_a_running_warm_up_and_the_warm_up_itself_does_not():
    import time

    release = threading.Event()
    order: list[str] = []

    def slow_import() -> None:  # stands in for `import monai` while a job would import it too
        release.wait(30)
        order.append("warm-up done")

    def inside() -> None:
        order.append(f"inside waits: {warmup.wait_for_warm_ups(timeout=0.01)}")

    run = warmup.start_warm_up([], [("inside", inside), ("slow import", slow_import)])
    assert run is not None
    assert warmup.wait_for_warm_ups(timeout=0.05) is False  # still running
    job = threading.Thread(target=lambda: (warmup.wait_for_warm_ups(), order.append("job starts")))
    job.start()
    time.sleep(0.1)
    release.set()
    job.join(30)
    assert order == ["inside waits: True", "warm-up done", "job starts"]
    assert warmup.wait_for_warm_ups(timeout=0) is True
