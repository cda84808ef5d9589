"""Every path × cell, measured or extrapolated, and the written report: cells.csv,
cost_models.json, table.md (and throughput.png through plot.py)."""

from __future__ import annotations

import json
from pathlib import Path

from .fit import fit_models, predict
from .hardware import card_name, floor_seconds, peak_flops
from .plot import plot


def _code(git: dict | None) -> str:
    """", code at <commit>" with its state; nothing for measurements older than the field."""
    if not git:
        return ""
    state = {True: " (dirty)", False: " (clean)"}.get(git.get("dirty"), " (state unknown)")
    return f", code at {git['commit'][:10]}{state}"


def grid_table(meas: dict, models: dict) -> list[dict]:
    """Every path × cell: seconds (measured, else extrapolated), items·requests per second, floor."""
    measured = {(r["path"], r["items"], r["requests"]): r["seconds"] for r in meas["rows"]}
    out = []
    for info in meas["paths"]:
        if info["label"] not in models:
            continue
        for n in meas["config"]["items"]:
            for r in meas["config"]["requests"]:
                key = (info["label"], n, r)
                sec = measured.get(key)
                source = "measured" if sec is not None else "extrapolated"
                if sec is None:
                    sec = predict(models[info["label"]], info["method"], n, r)
                out.append({"path": info["label"], "method": info["method"], "items": n,
                            "requests": r, "seconds": sec, "source": source,
                            "pairs_per_s": n * r / sec,
                            "floor_seconds": floor_seconds(info, meas["hardware"], n, r)})
    return out


def _fmt_s(x: float) -> str:
    if x >= 86400 * 365:
        return f"{x / (86400 * 365):.3g} years"
    if x >= 86400:
        return f"{x / 86400:.3g} days"
    if x >= 1:
        return f"{x:.3g} s"
    return f"{x * 1e3:.3g} ms"


def _per_dtype(flops) -> str:
    if not isinstance(flops, dict):
        return f"{flops / 1e12:.2f} TFLOP/s"
    return ", ".join(f"{v / 1e12:.2f} TFLOP/s {d}" for d, v in flops.items())


def report(meas: dict, out_dir: Path) -> str:
    import pandas as pd
    from tabulate import tabulate

    out_dir.mkdir(parents=True, exist_ok=True)
    models = fit_models(meas)
    grid = pd.DataFrame(grid_table(meas, models))
    grid.to_csv(out_dir / "cells.csv", index=False)
    (out_dir / "cost_models.json").write_text(json.dumps(models, indent=1))
    hw = meas["hardware"]
    random = any("random_arch" in p for p in meas["paths"])
    lines = [f"# Throughput: {meas['config']['name']}", "",
             f"Hardware: **{card_name(hw)}**, torch {hw['torch']}. "
             f"Floors from {hw['floors_source']}: bandwidth {hw['bandwidth'] / 1e9:.0f} GB/s, "
             f"peak {_per_dtype(hw['peak_flops'])} "
             f"(measured here: {hw['measured_bandwidth'] / 1e9:.0f} GB/s, "
             f"{_per_dtype(hw['measured_matmul_flops'])}). Created {meas['created_utc']}"
             + _code(meas.get("git")) + ".", ""]
    if random:
        lines += ["**Random-weight rows**: paths marked *(random weights)* use randomly "
                  "initialised models of the real architecture; their throughput is that of the "
                  "real model, their outputs mean nothing.", ""]
    lines += ["## Paths", ""]
    for p in meas["paths"]:
        extra = (f"{p['prefix_tokens']:.0f} prefix + {p['suffix_tokens']:.1f} suffix tokens per "
                 f"prompt, batch {p['batch_size']}" if p["method"] == "direct"
                 else f"dim {p['dim']}, top-{meas['config']['top_k']}, encode batch "
                      f"{p['encode_batch']}")
        stop = p.get("memory_stop") or p.get("budget_stop")
        lines.append(f"- {p['label']} on {p['device']}: {p['params'] / 1e9:.3g} B parameters; "
                     f"{extra}; budget {p['budget_s']} s" + (f"; stopped: {stop}" if stop else ""))
    lines += ["", "## Cost models (fitted to the measured cells; relative error in-sample, "
                  "leave-one-out)", ""]
    for label, parts in models.items():
        for part, m in parts.items():
            terms = ", ".join(f"{k} = {v:.3g}" for k, v in m["terms"].items())
            loo = (f", leave-one-out max {m['loo_max_rel_error']:.0%}"
                   if m["loo_max_rel_error"] is not None else "")
            lines.append(f"- {label} [{part}]: {terms}; {m['points']} points, max error "
                         f"{m['max_rel_error']:.0%}, median {m['median_rel_error']:.0%}{loo}")
    lines += ["", "## Seconds per batch of requests (M = measured, E = extrapolated)", ""]
    direct = [p["label"] for p in meas["paths"] if p["method"] == "direct" and p["label"] in models]
    dist = [p["label"] for p in meas["paths"] if p["method"] == "distilled" and p["label"] in models]
    for d in direct:
        for s in dist:
            lines += [f"Direct = {d}; distilled = {s}.", "", _pair_table(grid, d, s, tabulate), ""]
            big = grid[(grid["items"] == grid["items"].max())
                       & (grid["requests"] == grid["requests"].max())]
            sp = (big[big.path == d].seconds.iloc[0] / big[big.path == s].seconds.iloc[0])
            lines += [f"**Speedup at {int(big['items'].iloc[0]):,} items × "
                      f"{int(big['requests'].iloc[0]):,} requests: {sp:.2g}×** (paper: ≥ 10^8).", ""]
    dist_rows = grid[(grid.method == "distilled") & (grid.source == "measured")]
    if len(dist_rows):
        lines += ["## Distilled product vs. the memory-bandwidth floor (measured cells)", "",
                  "The FLOP floor (2 × requests × items × dim / peak) takes over from the "
                  "bandwidth floor when many requests share one pass over the items.", "",
                  tabulate([[r.path, f"{r['items']:,}", r.requests,
                             _fmt_s(r.seconds), _fmt_s(r.floor_seconds), _fmt_s(r.flop_floor),
                             f"{max(r.floor_seconds, r.flop_floor) / r.seconds:.0%}"]
                            for _, r in _score_only(dist_rows, meas).iterrows()],
                           ["path", "items", "requests", "matmul + top-k", "bandwidth floor",
                            "FLOP floor", "max floor / time"], tablefmt="github"), ""]
    text = "\n".join(lines)
    (out_dir / "table.md").write_text(text)
    plot(grid, meas, out_dir / "throughput.png")
    return text


def _score_only(rows, meas):
    """The product time without request encoding, for comparison with the bandwidth floor."""
    score = {(r["path"], r["items"], r["requests"]): r["score_seconds"] for r in meas["rows"]
             if r["method"] == "distilled"}
    dims = {p["label"]: p["dim"] for p in meas["paths"] if p["method"] == "distilled"}
    rows = rows.copy()
    rows["seconds"] = [score[(p, n, r)] for p, n, r in zip(rows.path, rows["items"], rows.requests)]
    dtypes = {p["label"]: p["dtype"] for p in meas["paths"]}
    rows["flop_floor"] = [2 * n * r * dims[p] / peak_flops(meas["hardware"], dtypes[p])
                          for p, n, r in zip(rows.path, rows["items"], rows.requests)]
    top = rows.groupby("path")["items"].transform("max")  # the largest measured matrices
    return rows[(rows["items"] == top) & rows.requests.isin([min(rows.requests),
                                                             max(rows.requests)])]


def _pair_table(grid, d, s, tabulate) -> str:
    rows = []
    for (n, r), g in grid.groupby(["items", "requests"], sort=True):
        a, b = g[g.path == d].iloc[0], g[g.path == s].iloc[0]
        rows.append([f"{n:,}", f"{r:,}", f"{_fmt_s(a.seconds)} {a.source[0].upper()}",
                     f"{a.pairs_per_s:.3g}", f"{_fmt_s(b.seconds)} {b.source[0].upper()}",
                     f"{b.pairs_per_s:.3g}", f"{a.seconds / b.seconds:.3g}×"])
    return tabulate(rows, ["items", "requests", "direct", "direct items/s", "distilled",
                           "distilled items/s", "speedup"], tablefmt="github")
