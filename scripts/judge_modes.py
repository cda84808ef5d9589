"""Which judge mode separates fitting from unfitting lists better: `feed` (one grade of the whole
top-k list) or `item` (the mean of the items' fit ratings)? Both grade the same planted lists
(ctrlrec/judging.py): for each request one list that fits it and one of plainly unrelated genres.
Requests: the 12 request genres in the evaluation phrasings, plus open-ended requests taken from
a finished run's requests.parquet (default: the committed open_ended reference run).

    python scripts/judge_modes.py                                   # packaged LLM, 12 + 8 requests
    python scripts/judge_modes.py --genre 4 --open 0 --out /tmp/jm  # a quick check
    python scripts/judge_modes.py --backend openai --base-url http://127.0.0.1:8000/v1 \\
        --model my-judge --tokenizer qwen2.5-coder-1.5b-instruct   # any judge behind a server

Writes <out>/table.md, table.csv (AUC, mean gap, grades, prompts, seconds per mode and basis)
and meta.json (settings, ctrlrec.hardware.describe()). Answers go to a fresh LLM cache (a temp
file) unless --cache names one, so the seconds are the model's."""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

MODES = ("feed", "item")
OPEN_RUN = ROOT / "results" / "open_ended" / "avx512bf16" / "requests.parquet"


def requests_for(n_genre: int, n_open: int, open_file: Path, user_ids):
    """Genre requests (one per request genre, phrasings rotating) and the first n_open
    LLM-written open-ended requests of `open_file`."""
    import pandas as pd

    from ctrlrec.data import GENRE_PHRASES, REQUEST_GENRES
    from ctrlrec.requests import TEMPLATES

    genres = [REQUEST_GENRES[i % len(REQUEST_GENRES)] for i in range(n_genre)]
    df = pd.DataFrame({"user_id": user_ids[:n_genre], "genre": genres,
                       "text": [TEMPLATES[i % len(TEMPLATES)].format(g=GENRE_PHRASES[g])
                                for i, g in enumerate(genres)]})
    if n_open:
        extra = pd.read_parquet(open_file)
        extra = extra[extra.source == "llm"].drop_duplicates("text").head(n_open)
        df = pd.concat([df, extra[["user_id", "text"]].assign(genre=None)], ignore_index=True)
    return df


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--genre", type=int, default=12, help="genre requests")
    p.add_argument("--open", type=int, default=8, help="open-ended requests from --open-file")
    p.add_argument("--open-file", type=Path, default=OPEN_RUN)
    p.add_argument("--k", type=int, default=5)
    p.add_argument("--planted", type=int, default=1, help="fitting/unfitting pairs per request")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--backend", default="hf", choices=("hf", "vllm", "openai"))
    p.add_argument("--model", default="qwen2.5-coder-1.5b-instruct")
    p.add_argument("--tokenizer", default=None, help="openai: whose chat template to apply")
    p.add_argument("--base-url", default=None)
    p.add_argument("--dtype", default="auto", help="auto: bf16 only where computed natively")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--mass-threshold", type=float, default=0.9)
    p.add_argument("--cache", type=Path, default=None, help="LLM answer cache (default: fresh)")
    p.add_argument("--out", type=Path, default=ROOT / "results" / "judge_modes")
    args = p.parse_args()

    import pandas as pd
    import torch

    from bench.stages.judge import grade_feeds
    from ctrlrec import hardware
    from ctrlrec.data import MOVIELENS, chronological_split, item_texts, load_movielens
    from ctrlrec.judging import planted_feeds, separation

    torch.set_num_threads(args.threads)
    ml = load_movielens()
    split = chronological_split(ml.ratings)
    items = ml.items.assign(text=item_texts(ml.items))
    req = requests_for(args.genre, args.open, args.open_file, split.user_ids)
    feeds = planted_feeds(req, split, items, args.k, MOVIELENS, args.planted, seed=args.seed)
    asked = [(t, tuple(x)) for t, x in zip(feeds.text, feeds["items"])]
    cache = args.cache or Path(tempfile.mkdtemp(prefix="judge_modes")) / "llm.sqlite"
    llm = {"backend": args.backend, "model": args.model, "dtype": args.dtype,
           "batch_size": args.batch_size, "threads": args.threads, "prefix_reuse": True,
           **({"tokenizer": args.tokenizer} if args.tokenizer else {}),
           **({"base_url": args.base_url} if args.base_url else {})}
    t0 = time.perf_counter()  # load once (the registry keeps it), so modes time only rating
    if args.backend != "openai":
        from ctrlrec.llm import registry
        registry.load_backend(args.backend, args.model,
                              **registry.backend_options(args.backend, llm))
    load_s = time.perf_counter() - t0
    rows, graded = [], {}
    for mode in MODES:
        cfg = {"llm": llm, "mode": mode, "mass_threshold": args.mass_threshold,
               "_runtime": {"llm_cache": str(cache)}}
        t0 = time.perf_counter()
        grade, _, stats = grade_feeds(cfg, asked, items, MOVIELENS.words, desc=mode)
        seconds = time.perf_counter() - t0
        graded[mode] = grade
        for basis in ["all", *sorted(set(feeds.basis))]:
            part = feeds.basis.eq(basis) | (basis == "all")
            s = separation(grade[part.to_numpy()], feeds.label[part])
            rows.append({"mode": mode, "basis": basis,
                         "requests": int(feeds.request[part].nunique()),
                         "lists": int(part.sum()), "auc": s["auc"], "gap": s["gap"],
                         "grade_fitting": s["mean_pos"], "grade_unfitting": s["mean_neg"],
                         "ungraded": s["ungraded"], "prompts": stats["ratings"],
                         "llm_calls": stats["llm_calls"], "seconds": round(seconds, 1)})
        print(f"{mode}: {stats['ratings']} prompts, {stats['llm_calls']} asked, "
              f"{seconds:.0f} s", flush=True)
    table = pd.DataFrame(rows)
    args.out.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out / "table.csv", index=False)
    feeds.assign(**{f"grade_{m}": g for m, g in graded.items()}).to_parquet(
        args.out / "feeds.parquet", index=False)
    hw = hardware.describe("cpu" if args.backend != "openai" else None)
    cpu = f"{os.cpu_count()} cores visible, {args.threads} torch thread(s), {hw['cpu_capability']}"
    text = (f"# Judge modes on planted lists\n\n{args.model} ({args.backend}, {args.dtype}), "
            f"k={args.k}, {args.planted} fitting + {args.planted} unfitting list(s) per request, "
            f"seed {args.seed}; CPU: {cpu}. `seconds`: rating time of the mode (model load: "
            f"{load_s:.0f} s, apart).\n\n"
            + table.to_markdown(index=False, floatfmt=".3f") + "\n")
    (args.out / "table.md").write_text(text)
    (args.out / "meta.json").write_text(json.dumps(
        {"args": {k: str(v) for k, v in vars(args).items()}, "hardware": hw, "load_s": load_s,
         "torch_threads": torch.get_num_threads()}, indent=1))
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
