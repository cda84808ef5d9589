"""How close does rating with llama.cpp come to what llama.cpp computes at best on this CPU?

Rates the engine-agreement prompts (genre requests x MovieLens items) with the product's
LlamaCppBackend and counts the tokens it had to compute (each request's prefix once, then every
movie's suffix), then times llama.cpp's plain prompt processing on the same model: the same
kind of text in 512-token sequences, one batch each (llama-bench's "pp512"). The ratio says how
much a faster engine setting could still gain; the tokens per prompt say what a given rate of
prompts asks of the CPU.

    python scripts/llamacpp_ceiling.py                   # 8 requests x 32 items, packaged GGUF
    python scripts/llamacpp_ceiling.py --out results/engines/avx2-float32/ceiling.json"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def measure(be, prompts: list, repeats: int = 3, seq: int = 512) -> dict:
    """Rate `prompts` with the llama.cpp backend `be`, then decode the same text as plain
    sequences of `seq` tokens; best of `repeats` each."""
    prefix = {p.prefix: len(be._ids(p.prefix)) for p in prompts}
    computed = sum(prefix.values()) + sum(len(be._ids(p.suffix)) for p in prompts)
    rating = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        be.rate(prompts)
        rating.append(time.perf_counter() - t0)

    # plain prompt processing: the prompts' own text, cut into sequences of `seq` tokens
    ids = be._ids("".join(p.text for p in prompts))
    seqs = [ids[i:i + seq] for i in range(0, len(ids) - seq + 1, seq)][:4]
    if not seqs:
        raise ValueError(f"the prompts hold {len(ids)} tokens, fewer than one sequence of {seq}")
    plain = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for toks in seqs:  # each sequence alone, in one llama.cpp batch, as the backend decodes
            be._clear()
            be._decode([(0, 0, toks)])
        plain.append(time.perf_counter() - t0)
    be._clear()

    best_rate, best_plain = min(rating), min(plain)
    out = {
        "prompts": len(prompts), "requests": len(prefix), "tokens_computed": computed,
        "tokens_per_prompt": round(computed / len(prompts), 2),
        "rating_seconds": [round(x, 2) for x in rating],
        "prompts_per_second": round(len(prompts) / best_rate, 3),
        "rating_tokens_per_second": round(computed / best_rate, 1),
        "plain_sequences": len(seqs), "plain_tokens_per_sequence": seq,
        "plain_seconds": [round(x, 2) for x in plain],
        "plain_tokens_per_second": round(len(seqs) * seq / best_plain, 1),
    }
    out["rating_share_of_plain"] = round(out["rating_tokens_per_second"]
                                         / out["plain_tokens_per_second"], 3)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="qwen2.5-coder-1.5b-instruct")
    ap.add_argument("--requests", type=int, default=8)
    ap.add_argument("--items", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seq", type=int, default=512, help="tokens per plain sequence")
    ap.add_argument("--out", help="a JSON file for the figures")
    args = ap.parse_args()

    from engine_agreement import git_state, prompts_for, rating_prompts

    from ctrlrec.hardware import describe
    from ctrlrec.llm.llamacpp_backend import LlamaCppBackend

    be = LlamaCppBackend(args.model)
    prompts = rating_prompts(be, prompts_for(args.requests, args.items, seed=0))
    out = measure(be, prompts, args.repeats, args.seq)
    print(json.dumps(out, indent=1))
    out |= {"settings": be.settings, "machine": describe(), "git": git_state()}
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
