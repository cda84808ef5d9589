"""GFLOP/s of a 1024 x 1024 matmul in float32 and bfloat16 on 2 torch threads, and what
`dtype: auto` resolves to: shows whether this CPU (or an emulation of another, e.g.
`ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2`) computes bf16 natively.

    .venv/bin/python scripts/bf16_matmul.py
    ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 .venv/bin/python scripts/bf16_matmul.py"""

import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from ctrlrec.hardware import describe  # noqa: E402

torch.set_num_threads(2)
out = {"hardware": describe("cpu")}
for dtype in (torch.float32, torch.bfloat16):
    a, b = torch.randn(1024, 1024, dtype=dtype), torch.randn(1024, 1024, dtype=dtype)
    a @ b  # first-call costs outside the timing
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < 2:
        a @ b
        n += 1
    gflops = 2 * 1024**3 * n / (time.perf_counter() - t0) / 1e9
    out[str(dtype).removeprefix("torch.")] = round(gflops, 1)
print(json.dumps(out))
