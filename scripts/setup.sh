#!/usr/bin/env bash
# Sets up ctrlrec-bench on a fresh machine with Python >= 3.11: a virtual environment in .venv,
# the CPU build of torch (pinned: an open range would pull a multi-GB CUDA build), the project with
# its test extras, then MovieLens-100k into the cache (~/.cache/ctrlrec or $CTRLREC_CACHE).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check torch==2.13.0
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[dev]"
.venv/bin/bench fetch
