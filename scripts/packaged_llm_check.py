"""Dequantise the packaged LLM afresh into a temporary folder (in the dtype `auto` resolves to on
this CPU) and compare its stored tensors with the cached folder's: equal tensors mean the same
model revision, so the answer caches stay valid.

    .venv/bin/python scripts/packaged_llm_check.py [alias]
"""

import sys
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

from ctrlrec.llm.models import _dequantise, ensure_model


def tensors(folder: Path) -> dict:
    out = {}
    for f in sorted(folder.glob("*.safetensors")):
        out.update(load_file(f))
    return out


def main(alias: str = "qwen2.5-coder-1.5b-instruct") -> None:
    cached = ensure_model(alias)
    with tempfile.TemporaryDirectory(dir="/tmp") as tmp:
        fresh = Path(tmp) / "hf-bf16"
        t0 = time.perf_counter()
        _dequantise(cached.parent / "model.gguf", fresh)
        seconds = time.perf_counter() - t0
        a, b = tensors(cached), tensors(fresh)
    differ = sorted(k for k in a if k not in b or not torch.equal(a[k], b[k]))
    print(f"{alias}: dequantised in {seconds:.0f} s; {len(a) - len(differ)} of {len(a)} stored "
          f"tensors equal{'' if not differ else '; differ: ' + ', '.join(differ[:5])}")
    sys.exit(1 if differ or len(a) != len(b) else 0)


if __name__ == "__main__":
    main(*sys.argv[1:])
