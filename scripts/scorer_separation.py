"""How well does each value predictor of a finished genre run tell the requested genre's items
from the rest? Read from the run's stage cache (no model is loaded unless --rescore asks):
per method, seed and request category, the AUC of v over the candidate pool (items of the
requested category against the others) and the category share of the top 5 by v alone (w = 1).
A predictor with a lower AUC than another cannot be rescued by the engagement blend, so this
tells a weak scorer apart from a pool that caps every method (the report's genre ceiling).

--rescore N re-rates the pools of one request per category (up to N) with the packaged LLM under
the shipped rating prompt and under a variant that tells the model to judge the fit and not the
film's fame or quality, to see how much of the direct scorer's gap a prompt can close.

    python scripts/scorer_separation.py --cache-dir CACHE --out results/genre/scorer_separation
    python scripts/scorer_separation.py --cache-dir CACHE --rescore 9 --threads 1 --out DIR

CACHE is the `--cache-dir` of a `bench run` (the manifest's `cache_dir`). Writes <out>/table.md,
table.csv and meta.json (settings, ctrlrec.hardware.describe())."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# The variant's one added sentence, in the shipped system prompt after "... against that wish."
FIT_ONLY = ("Judge only whether the {noun} is what the request asks for (its genre, subject, "
            "audience or mood), not how famous or well made it is.")


def separation(on, scores) -> tuple[float, float]:
    """(AUC of scores for on-category vs other items, on-category share of the top 5)."""
    import numpy as np
    from scipy.stats import mannwhitneyu

    top5 = float(on[np.argsort(-scores, kind="stable")[:5]].mean())
    n1, n0 = int(on.sum()), int((~on).sum())
    if not n1 or not n0:
        return float("nan"), top5
    # the Mann-Whitney U of the on-category scores, over all pairs, is the AUC (ties count half)
    return float(mannwhitneyu(scores[on], scores[~on]).statistic / (n1 * n0)), top5


def cached_runs(cache):
    """Per values stage: (method label, seed suffix, values, requests, pool, items)."""
    from bench.cache import StageCache

    sc = StageCache(cache)
    metas = {p.parent.name: (p.parent.parent.name, json.loads(p.read_text()))
             for p in Path(cache).glob("*/*/_meta.json")}
    pool_of = {m["inputs"][m["deps"].index("requests")]: key
               for key, (stage, m) in metas.items() if stage == "pool"}
    for key, (stage, m) in sorted(metas.items(), key=lambda kv: kv[1][1]["label"]):
        if stage != "values":
            continue
        req_key = m["inputs"][m["deps"].index("requests")]
        ds_key = metas[pool_of[req_key]][1]["inputs"][0]
        label, _, seed = m["label"].partition("@")
        yield (label, seed or "s0", sc.load("values", key)["values"],
               sc.load("requests", req_key)["requests"], sc.load("pool", pool_of[req_key])["pool"],
               sc.load("dataset", ds_key)["items"])


def rescore(items, requests, pool, n: int, threads: int):
    """Rows (category, prompt, auc, top5, seconds) for one request per category, both prompts."""
    import numpy as np

    from ctrlrec.llm import backends
    from ctrlrec.llm import prompts as P
    from ctrlrec.llm.registry import load_backend

    be = load_backend("hf", "qwen2.5-coder-1.5b-instruct", threads=threads, batch_size=16)
    variant = P.RATE_SYSTEM.replace("against that wish.", "against that wish. " + FIT_ONLY)
    assert variant != P.RATE_SYSTEM, "the shipped rating prompt changed; update FIT_ONLY's anchor"
    texts = items.text.to_numpy()
    out = []
    for row in requests.drop_duplicates("genre").index[:n]:
        cand = np.flatnonzero(pool[row])
        on = items[requests.genre[row]].to_numpy()[cand].astype(bool)
        shipped = P.rating_chat(requests.text[row])
        fit_only = P.Chat(P.MOVIE_WORDS.fill(variant), shipped.user)
        for name, chat in (("shipped", shipped), ("fit-only", fit_only)):
            tpl, t = be.render(chat), time.perf_counter()
            v = np.array([x.expected for x in be.rate([backends.fill(tpl, texts[c])
                                                      for c in cand])])
            out.append((requests.genre[row], name, *separation(on, v),
                        time.perf_counter() - t))
            print(out[-1], flush=True)
    return out


def main():
    import numpy as np
    import pandas as pd
    from tabulate import tabulate

    from bench.report.provenance import git_state
    from ctrlrec.hardware import describe

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cache-dir", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--rescore", type=int, default=0, help="requests to re-rate (one per genre)")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    rows, first = [], None
    for label, seed, values, requests, pool, items in cached_runs(args.cache_dir):
        first = first or (items, requests, pool)
        for row, genre in enumerate(requests.genre):
            cand = np.flatnonzero(pool[row])
            on = items[genre].to_numpy()[cand].astype(bool)
            rows.append((label, seed, genre, *separation(on, values[row, cand])))
    if not rows:
        sys.exit(f"{args.cache_dir}: no values stages in this stage cache")
    df = pd.DataFrame(rows, columns=["method", "seed", "genre", "auc", "top5"])
    per_method = df.groupby("method")[["auc", "top5"]].mean().round(3)
    per_genre = df.pivot_table(index="genre", columns="method", values="auc").round(3)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    df.to_csv(out / "table.csv", index=False)
    md = ["Separation over the candidate pool, mean over users (and seeds): `auc` of v for the "
          "requested genre's items against the rest, `top5` the genre share of the top 5 by v "
          "alone (w = 1).", "", tabulate(per_method, headers="keys", tablefmt="github"), "",
          "AUC per requested genre:", "", tabulate(per_genre, headers="keys", tablefmt="github")]
    if args.rescore:
        rs = pd.DataFrame(rescore(*first, args.rescore, args.threads),
                          columns=["genre", "prompt", "auc", "top5", "seconds"])
        rs.to_csv(out / "rescore.csv", index=False)
        md += ["", f"Direct scorer re-rated, one request per genre ({rs.genre.nunique()}), "
               "packaged model through hf: the shipped prompt against the fit-only variant:", "",
               tabulate(rs.groupby("prompt")[["auc", "top5", "seconds"]].mean().round(3),
                        headers="keys", tablefmt="github")]
    (out / "table.md").write_text("\n".join(md) + "\n")
    (out / "meta.json").write_text(json.dumps(
        {"command": " ".join(sys.argv), "cache_dir": args.cache_dir, "rescore": args.rescore,
         "threads": args.threads, "fit_only_sentence": FIT_ONLY, "git": git_state(),
         "hardware": describe()},
        indent=1, default=str))
    print("\n".join(md))


if __name__ == "__main__":
    main()
