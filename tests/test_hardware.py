"""`dtype: auto` (bf16 only where the device computes it natively), its place in cache keys, and the
typed options of each LLM backend."""

from pathlib import Path

import pytest

from bench.plan import build_plan
from bench.suitefile import SuiteError, load_suite
from ctrlrec import hardware
from ctrlrec.llm.registry import load_backend

SUITES = Path(__file__).parent.parent / "suites"


@pytest.fixture
def bf16_cpu(monkeypatch):
    """Pretend to be a CPU with AVX512-BF16 and no AMX (the flags torch reads from cpuinfo)."""
    import torch
    monkeypatch.setattr(hardware, "cpu_capability", lambda: "AVX512")
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)


def test_auto_is_bf16_only_on_a_bf16_native_cpu(bf16_cpu, monkeypatch):
    assert hardware.resolve_dtype("auto", "cpu") == "bfloat16"
    for name in ("float32", "bfloat16", "float16"):  # explicit names are kept as they are
        assert hardware.resolve_dtype(name, "cpu") == name
    # the emulation of an AVX2 machine that the README documents: either switch is enough
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    assert hardware.resolve_dtype("auto", "cpu") == "float32"
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA")
    monkeypatch.setattr(hardware, "cpu_capability", lambda: "AVX2")
    assert hardware.resolve_dtype("auto", "cpu") == "float32"
    with pytest.raises(ValueError, match="allowed: auto, bfloat16"):
        hardware.resolve_dtype("fp8", "cpu")


def test_amx_is_told_apart_and_capped_like_bf16(bf16_cpu, monkeypatch):
    """AMX rated 3x an AVX512-BF16 CPU in bf16 and changes `backend: auto`: the manifest and
    the hardware line say so, and a cap below AMX takes it away."""
    import torch

    from bench.report.provenance import hardware as where

    assert not hardware.cpu_amx() and hardware.describe("cpu")["cpu_amx"] is False
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True, raising=False)
    assert hardware.cpu_amx()
    for cap, amx in (("AVX512_CORE_BF16", False), ("AVX10_1_512", False),
                     ("AVX10_1_512_AMX", True), ("AVX512_CORE_AMX", True), ("AVX2", False)):
        monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", cap)
        assert hardware.cpu_amx() is amx, cap
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA")
    hw = hardware.describe("cpu")
    assert hw["cpu_amx"] is True and "CPU AVX512+AMX" in where({"hardware": hw})
    monkeypatch.setattr(hardware, "cpu_capability", lambda: "AVX2")
    line = where({"hardware": hardware.describe("cpu")})
    assert not hardware.cpu_amx() and line.startswith("CPU AVX2") and "AMX" not in line


def test_a_capped_capability_is_named_where_the_run_says_what_it_ran_on(monkeypatch):
    from bench.report.provenance import hardware as where

    monkeypatch.delenv("ATEN_CPU_CAPABILITY", raising=False)
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    assert "capped_by" not in hardware.describe("cpu")
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    hw = hardware.describe("cpu")
    assert hw["capped_by"] == {"ONEDNN_MAX_CPU_ISA": "AVX2"}
    llm = {"backend": {"backend": "llamacpp", "dtype": "gguf", "device": "cpu"}}
    line = where({"hardware": {**hw, "cpu_capability": "AVX2"}, "llm": {"values": llm}})
    assert "CPU AVX2 (capped: ONEDNN_MAX_CPU_ISA=AVX2)" in line and "LLM llamacpp gguf" in line


def test_plan_keys_hold_the_resolved_dtype(bf16_cpu, monkeypatch):
    # hf, whose dtype follows the CPU (auto would pick llama.cpp, which computes in the GGUF's)
    suite = load_suite(SUITES / "genre_direct.yaml", ["seeds=[0]", "methods.1.llm.backend=hf"])
    steps = {s.label: s for s in build_plan(suite, 150)}
    assert steps["values[direct,none]"].config["llm"]["dtype"] == "bfloat16"
    assert steps["values[untrained]"].config["dtype"] == "bfloat16"
    assert "item_embeddings[all-MiniLM-L6-v2,bfloat16]" in steps
    monkeypatch.setattr(hardware, "cpu_capability", lambda: "AVX2")
    avx2 = {s.label: s for s in build_plan(suite, 150)}
    assert avx2["values[direct,none]"].config["llm"]["dtype"] == "float32"
    assert "item_embeddings[all-MiniLM-L6-v2]" in avx2
    # same suite, other hardware: other keys for every stage that computes in that dtype
    assert avx2["values[direct,none]"].key != steps["values[direct,none]"].key
    assert avx2["engagement"].key == steps["engagement"].key
    # an LLM step placed on a GPU resolves for the GPU, whatever the planning CPU has
    gpu = load_suite(SUITES / "genre_direct.yaml", ["seeds=[0]", "methods.1.llm.num_gpus=1",
                                                    "methods.1.llm.backend=hf"])
    on_gpu = {s.label: s for s in build_plan(gpu, 150, gpus=1)}
    assert on_gpu["values[direct,none]"].config["llm"]["dtype"] == "bfloat16"


def test_a_dry_run_says_what_auto_became_on_this_machine(bf16_cpu):
    from bench.cli import machine_lines

    suite = load_suite(SUITES / "genre_direct.yaml", ["seeds=[0]", "methods.1.llm.backend=hf"])
    first, *llm = machine_lines(build_plan(suite, 150)).splitlines()
    assert first.startswith("# this machine: CPU AVX512") and "native bf16 True" in first
    assert first.endswith("; dtype auto -> bfloat16")
    assert "#   LLM values[direct,none]: hf qwen2.5-coder-1.5b-instruct bfloat16" in llm
    assert {line.split(":")[0] for line in llm} == {
        "#   LLM values[direct,none]", "#   LLM train_requests", "#   LLM teacher_labels"}


def test_a_setting_of_another_backend_is_an_error(tmp_path):
    f = tmp_path / "s.yaml"
    f.write_text("name: t\nmethods:\n  - name: direct\n"
                 "    llm: {backend: hf, base_url: 'http://127.0.0.1:1/v1'}\n")
    with pytest.raises(SuiteError) as err:
        load_suite(f)
    msg = str(err.value)
    assert "methods[0].llm: base_url is not a setting of the hf backend" in msg
    assert "allowed: backend, model, tokenizer, dtype" in msg and "\n" not in msg


def test_backends_refuse_unknown_options():
    with pytest.raises(ValueError, match="hf backend option gpu_memory_utilization: Extra "
                                         "inputs are not permitted; allowed: dtype"):
        load_backend("hf", "x", gpu_memory_utilization=0.5)
    with pytest.raises(ValueError, match="openai backend option retries"):
        load_backend("openai", "x", retries="many")


def test_a_dumped_suite_validates_again():
    """Manifests store `model_dump()`, which spells out every default (base_url: None on hf...);
    `bench show --run` and the leaderboard read it back."""
    from bench.suite import Suite
    for name in ("genre_direct.yaml", "open_ended.yaml", "smoke.yaml"):
        suite = load_suite(SUITES / name)
        assert Suite.model_validate(suite.model_dump(mode="json")) == suite


@pytest.mark.parametrize("native, gpus, installed, model, want", [
    ("amx", 0, {"vllm", "llama_cpp"}, "qwen2.5-coder-1.5b-instruct", "hf"),
    ("amx", 0, {"vllm", "llama_cpp"}, "/models/m.gguf", "llamacpp"),  # hf runs no bare GGUF
    (True, 0, {"vllm", "llama_cpp"}, "qwen2.5-coder-1.5b-instruct", "llamacpp"),
    (True, 0, {"vllm", "llama_cpp"}, "/models/some-hf-folder", "hf"),  # not a GGUF
    (True, 0, {"vllm"}, "qwen2.5-coder-1.5b-instruct", "hf"),
    (False, 0, {"vllm", "llama_cpp"}, "qwen2.5-coder-1.5b-instruct", "llamacpp"),
    (False, 0, {"vllm", "llama_cpp"}, "/models/some-hf-folder", "vllm"),  # not a GGUF
    (False, 0, {"llama_cpp"}, "/models/m.gguf", "llamacpp"),
    (False, 0, {"vllm"}, "qwen2.5-coder-1.5b-instruct", "vllm"),
    (False, 0, set(), "qwen2.5-coder-1.5b-instruct", "hf"),
    (True, 1, {"vllm", "llama_cpp"}, "qwen2.5-coder-1.5b-instruct", "vllm"),
    (False, 1, {"llama_cpp"}, "qwen2.5-coder-1.5b-instruct", "hf"),
])
def test_backend_auto_resolves_to_the_fastest_installed_engine_when_the_suite_loads(
        monkeypatch, native, gpus, installed, model, want):
    import importlib.util

    from bench.llmcfg import LLMCfg

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: (
        (real("json") if name in installed else None) if name in ("vllm", "llama_cpp")
        else real(name, *a)))
    monkeypatch.setattr(hardware, "cpu_native_bf16", lambda: bool(native))
    monkeypatch.setattr(hardware, "cpu_amx", lambda: native == "amx")
    device = "cuda" if gpus else "cpu"
    assert hardware.resolve_backend("auto", model, device) == want
    cfg = LLMCfg(backend="auto", model=model, num_gpus=gpus, batch_size=16)
    assert cfg.backend == want and cfg.batch_size == 16  # the key and manifest hold `want`
    assert hardware.resolve_backend("openai", model) == "openai"


def test_a_models_thread_count_is_its_own_and_the_process_keeps_its_count(tiny_model_dir):
    """Two backends with different `threads` in one process: each computes with its own count
    and neither changes the process's (the last one loaded used to set it for every model)."""
    import torch

    from ctrlrec.llm.backends import HFBackend

    before = torch.get_num_threads()
    one = HFBackend(str(tiny_model_dir), dtype="float32", threads=1)
    two = HFBackend(str(tiny_model_dir), dtype="float32", threads=2)
    assert torch.get_num_threads() == before
    seen = []
    for be in (one, two, one):
        forward = be.model.base_model.forward  # records the thread count it computes with
        be.model.base_model.forward = lambda *a, _f=forward, **kw: (
            seen.append(torch.get_num_threads()), _f(*a, **kw))[1]
        be.generate(["Hello"], max_new_tokens=1)
        del be.model.base_model.forward
        assert torch.get_num_threads() == before
    assert seen == [1, 2, 1]
    assert (one.settings["threads"], two.settings["threads"]) == (1, 2)
    with hardware.torch_threads(before + 1):
        assert torch.get_num_threads() == before + 1
    assert torch.get_num_threads() == before
