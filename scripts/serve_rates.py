"""`bench serve` against the same engine in process: how fast do rating prompts go over the
OpenAI-compatible API (the project's `openai` client, whole prompts, `--client-batch` per
request), and do the ratings agree?

    python scripts/serve_rates.py --engines llamacpp,hf --out results/engines/CPU-DTYPE/served.json

Each engine loads once in this process; the same prompts as scripts/engine_agreement.py (genre
requests x MovieLens items) are rated in process, then through a server on loopback. The server
finds the prefix each request's prompts share from their tokens (ctrlrec.llm.backends:
shared_prefix_groups). Writes one JSON with each engine's rates and agreement, the machine and
the commit; prints a markdown table."""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))


def measure(engine: str, args, pairs: list[dict]) -> dict:
    import numpy as np
    from engine_agreement import rating_prompts

    from bench.serve import make_server
    from ctrlrec.llm import registry
    from ctrlrec.llm.remote import OpenAIBackend

    options = {"batch_size": args.batch, "threads": args.threads}
    if engine == "hf":
        options["dtype"] = args.dtype
    be = registry.load_backend(engine, args.model, **options)
    prompts = rating_prompts(be, pairs)
    t0 = time.perf_counter()
    local = be.rate(prompts)
    local_s = time.perf_counter() - t0
    srv = make_server(be, "127.0.0.1", 0)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        client = OpenAIBackend(args.model, base_url=f"http://127.0.0.1:{srv.server_address[1]}/v1",
                               batch_size=args.client_batch, retries=0, timeout=3600)
        client.rate(prompts[:2])  # first-call costs out of the timing
        t0 = time.perf_counter()
        served = client.rate(prompts)
        served_s = time.perf_counter() - t0
    finally:
        srv.shutdown()
    a = np.array([r.expected for r in local])
    b = np.array([r.expected for r in served])
    return {"engine": engine, "settings": be.settings, "prompts": len(prompts),
            "in_process_prompts_per_s": round(len(prompts) / local_s, 3),
            "served_prompts_per_s": round(len(prompts) / served_s, 3),
            "pearson": float(np.corrcoef(a, b)[0, 1]), "max_abs_diff": float(np.abs(a - b).max()),
            "served_mass_min": float(min(r.mass for r in served))}


def main() -> None:
    from engine_agreement import git_state, prompts_for

    from ctrlrec.hardware import describe

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--engines", default="llamacpp,hf")
    ap.add_argument("--model", default="qwen2.5-coder-1.5b-instruct")
    ap.add_argument("--dtype", default="auto", help="hf's dtype (auto: bf16 only where native)")
    ap.add_argument("--requests", type=int, default=2)
    ap.add_argument("--items", type=int, default=32, help="items per request")
    ap.add_argument("--batch", type=int, default=32, help="the engine's batch (bench serve's)")
    ap.add_argument("--client-batch", type=int, default=16,
                    help="prompts per request to the server (the openai backend's default)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", default=None, help="JSON file to write")
    args = ap.parse_args()
    pairs = prompts_for(args.requests, args.items, 0)
    rows = [measure(e, args, pairs) for e in args.engines.split(",")]
    print("| engine | in process, prompts/s | served, prompts/s | Pearson | max abs diff |")
    print("| --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['engine']} ({r['settings']['dtype']}) | {r['in_process_prompts_per_s']} | "
              f"{r['served_prompts_per_s']} | {r['pearson']:.5f} | {r['max_abs_diff']:.2g} |")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(
            {"command": " ".join(sys.argv), "git": git_state(), "machine": describe(),
             "client_batch": args.client_batch, "engines": rows}, indent=1, default=str))


if __name__ == "__main__":
    main()
