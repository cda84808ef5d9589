"""Where each method's recommendations come from in a shortlist run: the share of its top-k
that each nominator of the pool put forward, and, for methods also ranked over all items, how
much of that full-set top-k the shortlist holds. A pool built by one method's own model lets that
method keep its favourite items while the others lose theirs; this table makes that visible."""

from __future__ import annotations

import pandas as pd

from .statistics import best_columns, with_pool

NOMINATOR_LABELS = {"engagement": "engagement top-N", "random": "seeded random sample",
                    "untrained": "untrained embedding top-N",
                    "per_category": "seeded sample per request category"}


def pool_sources(per_user: pd.DataFrame, sat: str, k: int) -> pd.DataFrame | None:
    """One row per method × context × aggregation ranked over the shortlist, each at the w of
    its maximum satisfaction at k (the smallest such w): the mean share of its top-k from each
    nominator (`from_<nominator>`, overlapping nominators count for each), and, where the
    method was also ranked over all items, the share of that full-set top-k (at its own best
    w) inside the user's shortlist (`all_in_pool`); for genre requests, the best genre accuracy
    any ranking of the shortlist could reach (`genre_ceiling`). None when the run has no
    provenance."""
    per_user = with_pool(per_user)
    shares = [c for c in per_user.columns if c.startswith("from_")]
    if not shares:
        return None
    at_k = per_user[per_user.k == k]
    rows = []
    best = best_columns(per_user, sat, k)
    for (method, ctx, agg, over), (w, _) in best.items():
        if over == "all":
            continue
        mine = at_k[(at_k.method == method) & (at_k.context == ctx) & (at_k.aggregation == agg)]
        here = mine[(mine.pool == over) & (mine.w_control == w)]
        row = {"method": method, "context": ctx, "aggregation": agg, "k": k, "w": w,
               **{c: float(here[c].mean()) for c in shares}}
        if "genre_ceiling" in here and here.genre_ceiling.notna().any():
            row["genre_ceiling"] = float(here.genre_ceiling.mean())
        full = best.get((method, ctx, agg, "all"))
        if full is not None:
            there = mine[(mine.pool == "all") & (mine.w_control == full[0])]
            row.update(w_all=full[0], all_in_pool=float(there["in_pool"].mean()))
        rows.append(row)
    columns = ["method", "context", "aggregation", "k", "w", *shares, "w_all", "all_in_pool",
               *(["genre_ceiling"] if any("genre_ceiling" in r for r in rows) else [])]
    return pd.DataFrame(rows, columns=columns).sort_values(
        ["context", "aggregation", "method"], ignore_index=True)


def describe_pool(pool: dict) -> str:
    """'shortlist: engagement top-20 ∪ seeded random sample of 20' from the manifest's pool."""
    noms = pool.get("nominators")
    if not noms:
        return pool.get("kind", "all")
    return "shortlist: " + " ∪ ".join(f"{NOMINATOR_LABELS.get(n, n)} ({v['asked']})"
                                      for n, v in noms.items())


def embedding_warning(manifest: dict) -> str | None:
    pool = manifest.get("pool") or {}
    if not pool.get("embedding_nominator"):
        return None
    model = (manifest.get("suite") or {}).get("pool", {}).get("model", "an embedding model")
    return (f"The candidate pool includes the `untrained` nominator (top items by {model}), the "
            "base model of the untrained and distilled methods: it favours embedding methods. "
            "A neutral pool (engagement, random, per_category) compares methods on equal terms.")
