"""The device a suite runs on, the floors no implementation can beat on it, and timing."""

from __future__ import annotations

import os
import platform
import time

# Data-sheet figures (memory bandwidth B/s, dense bf16 FLOP/s) for the floors, by device name.
GPU_SPECS = {"H200": (4.8e12, 989e12), "H100 PCIe": (2.0e12, 756e12), "H100": (3.35e12, 989e12),
             "A100": (2.0e12, 312e12), "A6000": (0.768e12, 155e12)}


def hardware(device: str, dtypes: list[str], threads: int) -> dict:
    """Device name, memory bandwidth and peak FLOP/s per dtype: data-sheet figures for known GPUs
    (16-bit tensor-core peak), measured otherwise (torch sum over 1 GiB; a 2048² matmul per
    dtype). Measured values are recorded beside the data-sheet ones."""
    import torch

    info = {"device": device, "torch": torch.__version__, "threads": threads,
            "platform": platform.platform(), "cpu": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count()}
    spec = None
    if device == "cuda":
        info["gpu"] = torch.cuda.get_device_name()
        spec = next((v for k, v in GPU_SPECS.items() if k in info["gpu"]), None)
    x = torch.ones(256 * 2**20, dtype=torch.float32, device=device)  # 1 GiB
    info["measured_bandwidth"] = x.numel() * 4 / best_time(lambda: x.sum().item(), device)
    info["measured_matmul_flops"] = {}
    for dtype in sorted(set(dtypes)):
        a = torch.randn(2048, 2048, dtype=getattr(torch, dtype), device=device)
        info["measured_matmul_flops"][dtype] = 2 * 2048**3 / best_time(
            lambda: (a @ a)[0, 0].item(), device)
    info["bandwidth"] = spec[0] if spec else info["measured_bandwidth"]
    info["peak_flops"] = {d: spec[1] if spec and d != "float32" else f
                          for d, f in info["measured_matmul_flops"].items()}
    info["floors_source"] = ("data sheet (bandwidth, 16-bit peak)" if spec
                             else "measured on this machine")
    return info


def peak_flops(hw: dict, dtype: str) -> float:
    """Peak FLOP/s for a dtype (older measurement files hold a single number)."""
    v = hw["peak_flops"]
    return v.get(dtype, max(v.values())) if isinstance(v, dict) else v


def floor_seconds(info: dict, hw: dict, items: float, requests: float) -> float:
    """Distilled: the item matrix read once (bytes / bandwidth). Direct: the model's FLOPs for the
    tokens it must process with prefix reuse (2 × params × tokens) / peak FLOP/s."""
    if info["method"] == "distilled":
        return items * info["dim"] * info["bytes_per_value"] / hw["bandwidth"]
    tokens = requests * info["prefix_tokens"] + requests * items * info["suffix_tokens"]
    flops = 2 * info["body_params"] * tokens + 2 * info["head_params"] * requests * items
    return flops / peak_flops(hw, info["dtype"])


def card_name(hw: dict) -> str:
    if hw.get("gpu"):
        return hw["gpu"]
    # the instruction set decides a CPU's bf16 speed (AMX ~3x AVX512-BF16); older
    # measurements lack it
    d = hw.get("describe") or {}
    isa = (f" {d['cpu_capability']}{'+AMX' if d.get('cpu_amx') else ''}"
           if d.get("cpu_capability") else "")
    return f"CPU{isa} ({hw.get('cpu_count')} cores, {hw.get('threads')} torch threads)"


def _sync(device: str) -> None:
    if device == "cuda":
        import torch
        torch.cuda.synchronize()


def timed(fn, device: str) -> float:
    """Seconds of one call of `fn`, GPU work included."""
    _sync(device)
    t0 = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - t0


def best_time(fn, device: str, repeats: int = 3) -> float:
    """The fastest of `repeats` calls after a warm-up call."""
    fn()
    return min(timed(fn, device) for _ in range(repeats))
