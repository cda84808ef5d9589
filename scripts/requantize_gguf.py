"""Write the packaged model's GGUF (Q4_K_M) again in another llama.cpp quantisation, for
scripts/llamacpp_options.py to compare engines' speed and ratings:

    python scripts/requantize_gguf.py Q8_0 Q4_0 --out /tmp/q    # -> /tmp/q/Q8_0.gguf, ...

Requantising starts from the 4-bit weights, so a wider type only re-encodes them and a
narrower one adds its own rounding; nothing here is the suites' engine."""

from __future__ import annotations

import argparse
import ctypes
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    import llama_cpp

    from ctrlrec.llm.llamacpp_backend import gguf_file

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("types", nargs="+", help="llama.cpp types, e.g. Q8_0 Q4_0 Q5_K_M")
    ap.add_argument("--model", default="qwen2.5-coder-1.5b-instruct")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    allowed = sorted(n.removeprefix("LLAMA_FTYPE_MOSTLY_") for n in dir(llama_cpp)
                     if n.startswith("LLAMA_FTYPE_MOSTLY_"))
    for t in args.types:
        if t not in allowed:
            ap.error(f"type {t!r} is not one of llama.cpp's: {', '.join(allowed)}")
    args.out.mkdir(parents=True, exist_ok=True)
    src = gguf_file(args.model)
    for t in args.types:
        params = llama_cpp.llama_model_quantize_default_params()
        params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{t}")
        params.allow_requantize = True
        dst = args.out / f"{t}.gguf"
        if llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(),
                                          ctypes.byref(params)) != 0:
            sys.exit(f"error: llama.cpp could not write {dst} as {t}")
        print(f"{dst}: {dst.stat().st_size / 2**20:.0f} MiB", flush=True)


if __name__ == "__main__":
    main()
