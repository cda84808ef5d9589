"""Direct-scoring throughput of the hf backend for a model architecture with random weights.

Throughput does not depend on the weights, so this measures the paper's model sizes where the
weights cannot be downloaded (label such numbers as random-weight). Prompts are the project's real
rating prompts over MovieLens item texts. Prints and writes one JSON object.

    python scripts/rate_throughput.py --arch llama-3.1-8b --tokenizer DIR --items FILE --out F
    python scripts/rate_throughput.py --model qwen2.5-coder-1.5b-instruct --threads 2 \
        --per-request 64 --batch 32 --out F          # the packaged model on CPU
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.throughput.models import LLM_ARCHS as ARCHS  # noqa: E402  (the real models' shapes)

REQUESTS = ["I'm in the mood for a horror movie tonight.",
            "Could you find me a good crime film to watch next?",
            "I want a funny movie to watch with my kids.",
            "Something slow, beautiful and a little sad, please."]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--arch", choices=ARCHS, default="llama-3.1-8b")
    ap.add_argument("--model", default=None,
                    help="a real model instead (packaged alias or folder); --arch is then ignored")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--tokenizer", default=None, help="tokenizer folder (random-weight runs)")
    ap.add_argument("--items", default=None,
                    help="one item text per line (default: MovieLens item texts from the cache)")
    ap.add_argument("--per-request", type=int, default=512)
    ap.add_argument("--batch", type=int, nargs="+", default=[64, 256])
    ap.add_argument("--dtype", default="bfloat16", choices=["auto", "bfloat16", "float32"],
                    help="auto: bf16 where the device computes it natively, else float32")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()

    import torch

    from bench.throughput.inputs import item_texts
    from bench.throughput.models import build_llm
    from ctrlrec.hardware import resolve_dtype
    from ctrlrec.llm.backends import fill
    from ctrlrec.llm.prompts import rating_chat

    device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.threads:
        torch.set_num_threads(args.threads)
    args.dtype = resolve_dtype(args.dtype, device)
    path = {"dtype": args.dtype, "batch_size": 32,
            **({"model": args.model} if args.model
               else {"random_arch": args.arch, "tokenizer": args.tokenizer})}
    be = build_llm(path, device)  # the same builder as `bench throughput`
    model = be.model
    weights, name = ("real", args.model) if args.model else ("random", args.arch)
    items = item_texts(args.items or "movielens")[:args.per_request]
    prompts = [fill(be.render(rating_chat(r)), x) for r in REQUESTS for x in items]
    n_pre = sum(len(be._ids(p.prefix)) for p in prompts[::len(items)]) / len(REQUESTS)
    n_suf = sum(len(be._ids(p.suffix)) for p in prompts) / len(prompts)
    result = {"arch": name, "weights": weights, "dtype": args.dtype, "device": device,
              "threads": torch.get_num_threads(),
              "gpu": torch.cuda.get_device_name() if device == "cuda" else None,
              "torch": torch.__version__, "params_b": sum(p.numel() for p in model.parameters()) / 1e9,
              "prompts": len(prompts), "prefix_tokens": n_pre, "suffix_tokens": n_suf, "runs": []}
    be.rate(prompts[:8])  # warm-up
    reference = None
    for reuse in (True, False):
        for bs in args.batch:
            be.prefix_reuse, be.batch_size = reuse, bs
            if device == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            ratings = be.rate(prompts)
            if device == "cuda":
                torch.cuda.synchronize()
            dt = time.perf_counter() - t0
            exp = [r.expected for r in ratings]
            reference = reference or exp
            result["runs"].append({"prefix_reuse": reuse, "batch": bs, "seconds": round(dt, 3),
                                   "prompts_per_s": round(len(prompts) / dt, 1),
                                   "max_abs_diff_vs_first": max(abs(a - b) for a, b in
                                                                zip(exp, reference))})
            print(json.dumps(result["runs"][-1]), flush=True)
    if device == "cuda":
        result["peak_gpu_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 1)
    print(json.dumps(result, indent=1))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
