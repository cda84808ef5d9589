#!/usr/bin/env bash
# Prepares the inputs of suites/gpu/throughput.yaml for a bare GPU machine (no packaged models,
# no data, no internet): MovieLens item texts and the two tokenizers, under .cache/throughput/
# (about 10 MB). Then, on the GPU machine, with that folder carried along:
#   python -m bench.throughput suites/gpu/throughput.yaml --measure-only --out DIR
# and back here:
#   .venv/bin/bench throughput --from DIR/measurements.json --out results/throughput/<card>
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/python - <<'PY'
from pathlib import Path
from transformers import AutoTokenizer
from ctrlrec.data import item_texts, load_movielens
from ctrlrec.embeddings import resolve_model
from ctrlrec.llm.models import resolve_llm

out = Path(".cache/throughput")
out.mkdir(parents=True, exist_ok=True)
(out / "items.txt").write_text("\n".join(item_texts(load_movielens().items)) + "\n")
AutoTokenizer.from_pretrained(resolve_llm("qwen2.5-coder-1.5b-instruct")).save_pretrained(out / "qwen-tokenizer")
AutoTokenizer.from_pretrained(resolve_model("all-MiniLM-L6-v2")).save_pretrained(out / "bert-tokenizer")
print("prepared", out)
PY
