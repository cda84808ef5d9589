#!/usr/bin/env bash
# Prepares the inputs of suites/gpu/throughput.yaml for a bare GPU machine (no packaged models,
# no data, no internet): MovieLens item texts and the two tokenizers, under .cache/throughput/
# (about 10 MB), and validates the suite here: the GPU machine has no pydantic and reads it
# unchecked. Then, on the GPU machine, with that folder carried along:
#   python -m bench.throughput suites/gpu/throughput.yaml --measure-only --out DIR
# and back here:
#   .venv/bin/bench throughput --from DIR/measurements.json --out results/throughput/<card>
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/python - <<'PY'
from pathlib import Path
from transformers import AutoTokenizer
from bench.throughput import load_config
from ctrlrec.data import item_texts, load_movielens
from ctrlrec.embeddings import resolve_model
from ctrlrec.llm.models import resolve_llm

load_config("suites/gpu/throughput.yaml")  # a bad suite stops here, with its one-line error
out = Path(".cache/throughput")
out.mkdir(parents=True, exist_ok=True)
(out / "items.txt").write_text("\n".join(item_texts(load_movielens().items)) + "\n")
AutoTokenizer.from_pretrained(resolve_llm("qwen2.5-coder-1.5b-instruct")).save_pretrained(out / "qwen-tokenizer")
AutoTokenizer.from_pretrained(resolve_model("all-MiniLM-L6-v2")).save_pretrained(out / "bert-tokenizer")
print("prepared", out)
PY
