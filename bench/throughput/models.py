"""The models that are measured: the hf backend and the sentence-transformers encoder as the
product builds them, or randomly initialised models of the paper's shapes."""

from __future__ import annotations

from pathlib import Path

# Shapes of the paper's models (transformers config fields) for random-weight runs: throughput
# does not depend on the weights, so these stand in where the weights cannot be downloaded.
LLM_ARCHS = {
    "llama-3.1-8b": ("llama", dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                                   num_attention_heads=32, num_key_value_heads=8,
                                   rope_theta=500000.0, max_position_embeddings=8192)),
    "qwen2.5-1.5b": ("qwen2", dict(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28,
                                   num_attention_heads=12, num_key_value_heads=2,
                                   max_position_embeddings=8192, tie_word_embeddings=True)),
    "tiny": ("qwen2", dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                           num_attention_heads=4, num_key_value_heads=2,
                           max_position_embeddings=2048)),
}
# Stella-400M (stella_en_400M_v5) is a 24-layer, 1024-wide encoder: the BERT-large shape.
ENCODER_ARCHS = {
    "stella-400m-shape": dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
                              intermediate_size=4096, max_position_embeddings=512),
    "tiny": dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                 intermediate_size=64, max_position_embeddings=128),
}


def _resolve_tokenizer(name: str) -> str:
    if Path(name).expanduser().is_dir():
        return str(Path(name).expanduser())
    from ctrlrec.embeddings import PACKAGED
    if name in PACKAGED:
        from ctrlrec.embeddings import resolve_model
        return resolve_model(name)
    from ctrlrec.llm.models import resolve_llm
    return resolve_llm(name)


def build_llm(p: dict, device: str):
    """The hf backend as the product builds it, or a random-weight model of a real shape.
    `p["dtype"]` is a torch dtype name, `auto` already resolved."""
    import torch

    from ctrlrec.llm.backends import HFBackend

    if "model" in p:
        return HFBackend(p["model"], dtype=p["dtype"], device=device, batch_size=p["batch_size"])
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM, Qwen2Config, \
        Qwen2ForCausalLM
    tok = AutoTokenizer.from_pretrained(_resolve_tokenizer(p["tokenizer"]))
    family, fields = LLM_ARCHS[p["random_arch"]]
    cfg_cls, model_cls = ((LlamaConfig, LlamaForCausalLM) if family == "llama"
                          else (Qwen2Config, Qwen2ForCausalLM))
    torch.manual_seed(0)
    torch.set_default_dtype(getattr(torch, p["dtype"]))
    try:
        with torch.device(device):
            model = model_cls(cfg_cls(vocab_size=len(tok), **fields))
    finally:
        torch.set_default_dtype(torch.float32)
    return HFBackend.from_objects(model, tok, f"{p['random_arch']} (random weights)",
                                  batch_size=p["batch_size"])


def build_encoder(p: dict, device: str, workdir: Path):
    """The sentence-transformers encoder as the product loads it; a random-weight encoder of a
    real shape is saved to `workdir` first and loaded through the same path."""
    import torch

    from ctrlrec.embeddings import load_encoder

    name = p.get("model")
    if name is None:
        from transformers import AutoTokenizer, BertConfig, BertModel
        tok = AutoTokenizer.from_pretrained(_resolve_tokenizer(p["tokenizer"]))
        torch.manual_seed(0)
        model = BertModel(BertConfig(vocab_size=len(tok), **ENCODER_ARCHS[p["random_arch"]]))
        name = str(workdir / p["random_arch"])
        model.save_pretrained(name)
        tok.save_pretrained(name)
    return load_encoder(name, device=device, dtype=p["dtype"])
