"""The benchmark suite: every measurement of issue 12 in one run, ratios against references measured alongside.

Run::

    python benchmarks/run_benchmarks.py [--quick] [--out DIR] [--parts 3d,2d,editing,gui,growth,runtimes]
                                        [--bundle DIR] [--ct FILE] [--repeats N] [--threads N]

Parts (each a module next to this one):

``3d``       ``Predictor`` and ``napari-cxseg predict`` vs ``python -m monai.bundle run``, same
             bundle and weights, on a real 512 x 512 x N CT: seconds, peak RSS, Dice agreement.
``2d``       ``cxr-lungs`` warm latency at 2048 x 2500 and 512 x 512 vs a plain eager loop;
             ``predict`` over a folder of radiographs vs a naive per-file loop.
``editing``  the correction tools on a 512 x 512 x 133 volume; ms per click of each backend.
``gui``      Segment press to labels visible, click to mask visible and the event-loop
             blocking, in a real napari viewer (under ``xvfb-run -a`` without a display).
``growth``   seconds and peak memory against volume size and number of radiographs (PNG + JSON).
``runtimes`` the ``cxr-lungs`` and ``ct-organs-demo`` networks alone: eager PyTorch vs channels-last,
             TorchScript (traced, frozen), bfloat16 autocast and ONNX Runtime, warm ms, output agreement.

Prints one table (ours, reference, ratio, agreement, target, met) and writes
``DIR/results.json`` and ``DIR/growth.png`` (default DIR: ``benchmarks/results``). Needs the
public CTs of ``scripts/fetch_public_data.py`` for the real-CT figures (falls back to synthetic
volumes and says so). Not part of the test run; ``tests/test_benchmarks.py`` smoke-tests it on
tiny inputs.
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from _common import Config, Row, machine, save_json  # noqa: E402

PARTS = ("3d", "2d", "editing", "gui", "growth", "runtimes")


def run_part(name: str, cfg: Config) -> tuple[list[Row], dict[str, Any]]:
    """Run one part by name; returns its rows and raw results."""
    import importlib

    module = importlib.import_module({"3d": "bench_3d", "2d": "bench_2d", "editing": "bench_editing",
                                      "gui": "bench_gui", "growth": "bench_growth",
                                      "runtimes": "bench_runtimes"}[name])
    return module.run(cfg)


def _fmt(v: float | None, unit: str) -> str:
    if v is None:
        return "-"
    if unit == "MB":
        return f"{v:,.0f} MB"
    if unit == "ms":
        return f"{v:,.0f} ms"
    if unit == "images/s":
        return f"{v:.2f}/s"
    return f"{v:.2f} s" if v >= 0.1 else f"{1000 * v:.1f} ms"


def table(rows: list[Row]) -> str:
    """The rows as a Markdown table."""
    lines = ["| part | case | ours | value | reference | value | ratio | agreement (Dice) | target | met |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ratio = f"{r.ratio:.2f}x" if r.ratio is not None else "-"
        agree = f"{r.agreement:.4f}" if r.agreement is not None else "-"
        met = "-" if r.met is None else ("yes" if r.met else "NO")
        lines.append(f"| {r.part} | {r.case} | {r.ours} | {_fmt(r.ours_value, r.unit)} | {r.reference or '-'} | "
                     f"{_fmt(r.ref_value, r.unit)} | {ratio} | {agree} | {r.target or '-'} | {met} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer repeats, sizes and radiographs (minutes)")
    ap.add_argument("--tiny", action="store_true", help="smallest inputs: checks that every step runs (smoke)")
    ap.add_argument("--out", default=str(HERE / "results"), help="output folder (JSON, PNG, inputs, labels)")
    ap.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated subset of {','.join(PARTS)}")
    ap.add_argument("--bundle", default=None, help="MONAI bundle folder for 3d/growth (default: ct-organs-demo "
                                                   "exported as a bundle); without models/model.pt it gets "
                                                   "seeded-random weights")
    ap.add_argument("--ct", default=None, help="CT NIfTI for 3d/growth (default: the public LCTSC-Test-S1-101 CT)")
    ap.add_argument("--repeats", type=int, default=None, help="alternated repeats per measurement (3; 1 with --quick)")
    ap.add_argument("--n-radiographs", type=int, default=None, help="radiographs in the throughput batch (500; 40 with --quick)")
    ap.add_argument("--threads", type=int, default=None, help="OMP/MKL threads of the measured processes (default: all)")
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    args = ap.parse_args(argv)

    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    bad = [p for p in parts if p not in PARTS]
    if bad:
        ap.error(f"unknown part(s) {', '.join(bad)}; choose from {', '.join(PARTS)}")
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    small = args.quick or args.tiny
    cfg = Config(out=out, quick=args.quick, tiny=args.tiny,
                 repeats=args.repeats or (1 if small else 3),
                 bundle=Path(args.bundle) if args.bundle else None, ct=Path(args.ct) if args.ct else None,
                 n_radiographs=args.n_radiographs or (3 if args.tiny else 40 if args.quick else 500),
                 threads=args.threads, device=args.device,
                 log=lambda m: print(m, file=sys.stderr, flush=True))
    info = machine()
    cfg.log(f"machine: {info['nproc']} cores, {info['cpu']}, torch {info['torch']}; "
            f"busy: {'; '.join(info['busy_processes']) or 'nothing else'}")
    rows: list[Row] = []
    raw: dict[str, Any] = {}
    errors: dict[str, str] = {}
    t0 = time.time()
    for p in parts:
        t = time.time()
        try:
            r, data = run_part(p, cfg)
            rows += r
            raw[p] = data
        except Exception as e:  # one broken part must not lose the others' figures
            errors[p] = f"{type(e).__name__}: {e}"
            cfg.log(f"[{p}] FAILED: {errors[p]}\n{traceback.format_exc()[-2000:]}")
        cfg.log(f"[{p}] {time.time() - t:.0f} s")
    info_end = machine()
    text = table(rows)
    print(text)
    save_json(out / "results.json", {
        "command": " ".join([Path(sys.executable).name, "benchmarks/run_benchmarks.py", *(argv or sys.argv[1:])]),
        "machine": info, "machine_at_end": {k: info_end[k] for k in ("loadavg", "busy_processes", "date_utc")},
        "seconds": time.time() - t0, "rows": [r.to_dict() for r in rows], "raw": raw, "errors": errors,
        "table_markdown": text,
    })
    (out / "results.md").write_text(text + "\n")
    cfg.log(f"wrote {out / 'results.json'}" + (f" and {out / 'growth.png'}" if "growth" in raw else ""))
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
