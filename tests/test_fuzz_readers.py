"""Every reader against malformed inputs made from real files (issue 8, item 9).

For each reader (NIfTI, PNG/JPEG, DICOM series, DICOM radiograph, DICOM SEG, MSD task, bundle
zip, model card; bundle folders too) at least :data:`~fuzz_cases.MIN_CASES` inputs are made from
real files by the generators of ``fuzz_cases`` (fixed seeds: the same inputs on every run), plus
one named case per bug the suite found (``fuzz_regressions``). They are read in child processes
whose address space is capped (``fuzz_runner``: a crash, hang or allocation bomb costs one case,
not the session). Each input must either read into sound objects or be refused with a
``CxsegError`` that names the file or folder; nothing may be written into the input's folder or
the cache, except a bundle zip's complete unpack; no file may land outside its place.
The summary (inputs per reader, outcomes, slowest case, largest peak memory) is printed.
"""

from __future__ import annotations

import collections
import os
import time
from pathlib import Path

import pytest

from fuzz_bundle import ABSOLUTE, MARKER
from fuzz_cases import MIN_CASES, all_cases
from fuzz_judge import ZIPS
from fuzz_regressions import regression_cases
from fuzz_runner import CASE_TIMEOUT_S, HEADROOM, INPUT_BUDGET, OUTCOMES_OK, run_cases

pytestmark = pytest.mark.slow

READERS = ("nifti", "raster", "dicom-series", "radiograph", "dicom-seg", "msd", "bundle", "card")


def _files(root: Path) -> set[str]:
    return {os.path.relpath(os.path.join(d, n), root) for d, dirs, names in os.walk(root) for n in dirs + names}


@pytest.fixture(scope="module")
def fuzz(tmp_path_factory):
    """Generate every case, run them all once; ``(cases, results, regressions, info)``."""
    root = tmp_path_factory.mktemp("fuzz")
    logs = tmp_path_factory.mktemp("fuzz-logs")
    t0, cpu0 = time.perf_counter(), time.process_time()
    cases = all_cases(root / "cases")
    regressions = regression_cases(root / "cases")
    generated = _files(root)
    t1, cpu1 = time.perf_counter(), time.process_time()
    todo = [c.as_dict() for c in cases] + [c.as_dict() for c, _ in regressions]
    results = run_cases(todo, root / "cache", logs)
    info = {"root": root, "logs": logs, "generated": generated, "generate_s": t1 - t0,
            "generate_cpu_s": cpu1 - cpu0, "run_s": time.perf_counter() - t1}
    return cases, results, regressions, info


def _summary(cases, results, info) -> str:
    counts: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    seconds: collections.Counter = collections.Counter()
    cpu: collections.Counter = collections.Counter()
    for c in cases:
        counts[c.reader][results[c.id]["outcome"]] += 1
        seconds[c.reader] += results[c.id].get("seconds") or 0.0
        cpu[c.reader] += results[c.id].get("cpu_seconds") or 0.0
    lines = [f"fuzz: {len(cases)} malformed inputs, generated in {info['generate_s']:.1f} s "
             f"({info['generate_cpu_s']:.1f} s CPU), read in {info['run_s']:.1f} s by 2 children "
             f"(address space: imports + {HEADROOM >> 20} MiB, CXSEG_MAX_INPUT_BYTES={INPUT_BUDGET}, "
             f"{CASE_TIMEOUT_S:g} s per input)"]
    for reader, n in counts.items():
        detail = ", ".join(f"{k} {v}" for k, v in sorted(n.items()))
        lines.append(f"  {reader:<14} {sum(n.values()):>4} inputs in {seconds[reader]:5.1f} s "
                     f"({cpu[reader]:5.1f} s CPU): {detail}")
    ran = [r for r in results.values() if r.get("seconds") is not None]
    slow = max(ran, key=lambda r: r["seconds"])
    peak = max(ran, key=lambda r: r.get("growth_kib") or 0)
    what = {c.id: c.mutation for c in cases}.get(slow["id"], "a regression case")
    lines.append(f"  slowest: {slow['id']} {slow['seconds']:.2f} s ({what})")
    lines.append(f"  most memory one input took: {(peak.get('growth_kib') or 0) >> 10} MiB above the child's "
                 f"{((peak.get('peak_kib') or 0) - (peak.get('growth_kib') or 0)) >> 10} MiB ({peak['id']})")
    return "\n".join(lines)


def test_every_reader_gets_enough_malformed_inputs(fuzz):
    cases, _, _, _ = fuzz
    counts = collections.Counter(c.reader for c in cases)
    assert {r: counts[r] for r in READERS if counts[r] < MIN_CASES} == {}
    assert len({c.id for c in cases}) == len(cases)


def test_each_input_reads_or_is_refused_naming_it(fuzz, capsys):
    cases, results, _, info = fuzz
    with capsys.disabled():
        print("\n" + _summary(cases, results, info))
    failed = [(c, results[c.id]) for c in cases if results[c.id]["outcome"] not in OUTCOMES_OK]
    report = "\n".join(f"{c.id} [{r['outcome']}] {c.mutation}\n    {c.path}\n    {r['message'][:400]}"
                       for c, r in failed[:25])
    assert not failed, f"{len(failed)} of {len(cases)} inputs failed (child logs: {info['logs']}):\n{report}"


def test_the_bugs_found_stay_fixed(fuzz):
    _, results, regressions, _ = fuzz
    wrong = []
    for case, words in regressions:
        r = results[case.id]
        if r["outcome"] not in (("refused",) if words else OUTCOMES_OK) or words not in r["message"]:
            wrong.append(f"{case.mutation}\n    [{r['outcome']}] {r['message'][:300]}")
    assert not wrong, "\n".join(wrong)


def test_no_file_lands_outside_its_place(fuzz):
    """After every case: only the generated files, and complete bundle unpacks in the cache."""
    _, _, _, info = fuzz
    root = info["root"]
    unexpected, leftovers = [], []
    for p in sorted(_files(root) - info["generated"]):
        parts = Path(p).parts  # cache/worker-<k>/bundles/_zips/<unpack>/...
        if parts[0] != "cache" or len(parts) > 2 and parts[2:4] != ZIPS[: len(parts) - 2]:
            unexpected.append(p)
        elif len(parts) >= 5 and parts[4].endswith(".part"):
            leftovers.append(p)
    assert unexpected == []
    assert leftovers == []
    assert not any(MARKER in p for p in _files(root.parent)), "a zip member escaped its unpack folder"
    assert not os.path.lexists(ABSOLUTE)


def test_a_damaged_slice_left_out_of_a_series_is_named(tmp_path):
    """A truncated slice used to vanish from the volume without a word (found by the fuzz)."""
    from dicom_factory import write_ct_series
    from napari_cxseg import io

    files, _ = write_ct_series(tmp_path / "ct", n_slices=4, shape=(16, 16))
    files[3].write_bytes(files[3].read_bytes()[:580])  # cut before its SeriesInstanceUID
    (tmp_path / "ct" / "notes.txt").write_text("not a slice")
    (image,) = io.read(tmp_path / "ct")
    assert image.array.shape == (3, 16, 16)
    assert any("ct004.dcm" in w and "left out" in w for w in image.meta["warnings"])
    files[3].unlink()
    assert "warnings" not in io.read(tmp_path / "ct")[0].meta  # a text file is no slice
