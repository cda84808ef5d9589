"""Two runs of one suite under different splits, side by side: the engagement model alone
(w_control = 0, every unseen item a candidate) and the best genre accuracy of each method, over
each run's own users and over the users both runs evaluate.

    python scripts/split_comparison.py results/genre_untrained/avx2 \
        results/genre_global_time/avx2 --out results/genre_global_time/splits.md

Reads each run's per_user.parquet and manifest.json; writes one markdown table."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd


def summarise(run: Path, users: set | None, label: str) -> list[dict]:
    per_user = pd.read_parquet(run / "per_user.parquet")
    if "pool" in per_user:  # (older runs ranked all items only and have no pool column)
        per_user = per_user[per_user.pool == "all"]
    if users is not None:
        per_user = per_user[per_user.user_id.isin(users)]
    manifest = json.loads((run / "manifest.json").read_text())
    split = manifest.get("split") or manifest["suite"]["data"]["split"]  # older runs: the suite's
    rows = []
    for (method, k), d in per_user.groupby(["method", "k"]):
        by_w = d.groupby("w_control")[["genre_accuracy", "precision", "ndcg"]].mean()
        rows.append({"split": split["kind"], "users": label.format(n=d.user_id.nunique()),
                     "method": method, "k": k,
                     "engagement P@k (w=0)": round(by_w.loc[0.0, "precision"], 3),
                     "engagement NDCG@k (w=0)": round(by_w.loc[0.0, "ndcg"], 3),
                     "max genre accuracy": round(by_w.genre_accuracy.max(), 3),
                     "at w": by_w.genre_accuracy.idxmax()})
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("first", type=Path)
    ap.add_argument("second", type=Path, help="its users are the shared ones")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    shared = set(pd.read_parquet(args.second / "per_user.parquet").user_id)
    rows = (summarise(args.first, None, "all {n}")
            + summarise(args.first, shared, "the second run's {n}")
            + summarise(args.second, None, "all {n}"))
    text = pd.DataFrame(rows).to_markdown(index=False) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
