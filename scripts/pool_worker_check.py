"""An LLM engine inside a Ray pool worker, as `bench run` starts one (bench/llmpool.py: the
workers' environment of bench/runner.py, `threads` Ray CPUs): how fast it rates, how much CPU
its processes use, and whether a worker killed with -9 leaves engine processes behind.

    HF_HUB_OFFLINE=1 RAY_AUTH_MODE=disabled .venv/bin/python scripts/pool_worker_check.py
    ... --backend hf --prompts 128

Prints one JSON object: prompts/s over `--prompts` rating prompts of the packaged model (after
two warm-up prompts), CPU seconds of each engine process while rating, and the engine processes
still running 2, 10 and 30 s after the worker was killed (those are then killed here)."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.llmpool import LLMWorker  # noqa: E402


class Probe(LLMWorker):
    def rate_timed(self, n: int) -> dict:
        import psutil

        from ctrlrec.data import item_texts, load_movielens
        from ctrlrec.llm.backends import fill
        from ctrlrec.llm.prompts import rating_chat

        be = self._loaded()
        texts = item_texts(load_movielens().items)
        requests = ["a dark crime thriller", "an animated film for my kids"]
        prompts = [fill(be.render(rating_chat(requests[i % 2])), texts[i // 2]) for i in range(n)]
        be.rate(prompts[:2])
        procs = psutil.Process().children(recursive=True)
        cpu0 = {p.pid: sum(p.cpu_times()[:2]) for p in procs}
        t0 = time.perf_counter()
        be.rate(prompts)
        wall = time.perf_counter() - t0
        cpu = {f"{p.name()} {p.pid}": round(sum(p.cpu_times()[:2]) - cpu0[p.pid], 1)
               for p in procs if p.is_running()}
        return {"prompts": n, "prompts_per_s": round(n / wall, 3), "wall_s": round(wall, 1),
                "engine_cpu_s": cpu, "load_s": round(self.load_seconds, 1),
                "settings": be.settings, "pid": os.getpid(), "children": [p.pid for p in procs]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backend", default="vllm")
    ap.add_argument("--model", default="qwen2.5-coder-1.5b-instruct")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--prompts", type=int, default=64)
    args = ap.parse_args()

    import psutil
    import ray

    from bench.runner import WORKER_ENV

    os.environ.setdefault("RAY_TMPDIR", tempfile.mkdtemp(prefix="pw", dir="/tmp"))
    ray.init(num_cpus=args.threads, include_dashboard=False, object_store_memory=200 * 2**20,
             log_to_driver=False,  # stdout is the JSON
             runtime_env={"env_vars": dict(WORKER_ENV)})
    worker = ray.remote(Probe).options(num_cpus=args.threads, max_restarts=0).remote(
        args.backend, args.model, {"dtype": "auto", "threads": args.threads}, args.threads)
    out = ray.get(worker.rate_timed.remote(args.prompts))
    os.kill(out["pid"], signal.SIGKILL)
    left, killed = {}, time.monotonic()
    for at in (2, 10, 30):  # seconds after the kill
        time.sleep(max(0.0, killed + at - time.monotonic()))
        left[f"{at}s"] = [p for p in out["children"] if psutil.pid_exists(p)
                          and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
    for p in left["30s"]:
        os.kill(p, signal.SIGKILL)
    print(json.dumps({**out, "left_after_kill": left}, indent=1, default=str))
    ray.shutdown()


if __name__ == "__main__":
    main()
