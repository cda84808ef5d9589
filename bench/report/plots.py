"""The run's figures as PNG files: Figure 4 (curves against w), the context figure, Pareto
frontiers and the distillation scatter. matplotlib is imported only when a plot is drawn."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .statistics import ENGAGEMENT, KEYS, frontier_points, pareto_front, with_pool
from .tables import context_free, metric_label, satisfaction_metric

W_AXIS = "w_control (0 = engagement only, 1 = request only)"


def _subplots(*args, **kwargs):
    import matplotlib
    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt
    return plt.subplots(*args, **kwargs)


def _save(fig, path: Path) -> None:
    import matplotlib.pyplot as plt
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _band(ax, g: pd.DataFrame, color: str, alpha: float) -> None:
    """The 95% interval of the mean around a curve."""
    ax.fill_between(g.w_control, g["mean"] - 1.96 * g.se, g["mean"] + 1.96 * g.se,
                    color=color, alpha=alpha)


def plot_series(cells: pd.DataFrame) -> tuple[pd.DataFrame, callable]:
    """Cells for plotting, with each context-free method kept in one context only (its curves
    are the same in every context), and a labeller that names only the parts of
    (method, context, aggregation, pool) that vary in this run."""
    cells = with_pool(cells)
    contexts = list(dict.fromkeys(cells.context))
    keep = "none" if "none" in contexts else contexts[0]
    free = cells.method.map(context_free)
    out = cells[~free | (cells.context == keep)]
    multi_ctx, multi_agg = len(contexts) > 1, cells.aggregation.nunique() > 1
    multi_pool = cells.pool.nunique() > 1

    def label(method, context, aggregation, pool):
        parts = [method]
        if multi_ctx:
            parts.append("any context" if context_free(method) else context)
        if multi_agg:
            parts.append(aggregation)
        if multi_pool:
            parts.append("all items" if pool == "all" else pool)
        return " / ".join(parts)
    return out, label


def plot_curves(cells: pd.DataFrame, path: Path, band: str = "band: ±1.96 se over users") -> None:
    """The paper's Figure 4: satisfaction (top row) and precision (bottom) against w_control,
    one column per k, one line per method (and context / aggregation where they vary); `band`
    says what the band around each line is (mean ± 1.96 se)."""
    ks = sorted(cells.k.unique())
    sat = satisfaction_metric(cells)
    data, label = plot_series(cells)
    fig, axes = _subplots(2, len(ks), figsize=(5.5 * len(ks), 7.5), squeeze=False, sharex=True)
    for col, k in enumerate(ks):
        for row, metric in enumerate((sat, "precision")):
            ax = axes[row][col]
            sub = data[(data.k == k) & (data.metric == metric)]
            if sub.empty:  # e.g. the judge grades only the k=5 lists
                ax.text(0.5, 0.5, f"{metric.replace('_', ' ')} not measured at k={k}",
                        ha="center", va="center", transform=ax.transAxes, color="grey")
                ax.set_yticks([])
            for n, (key, g) in enumerate(sub.groupby(KEYS)):
                g = g.sort_values("w_control")
                ax.plot(g.w_control, g["mean"], marker=".", color=f"C{n}", label=label(*key))
                _band(ax, g, f"C{n}", 0.15)
            ax.set_ylabel(metric_label(metric, k), fontsize=9)
            ax.grid(alpha=0.3)
            if row == 0:
                ax.set_title(f"k = {k}")
            if row == 1:
                ax.set_xlabel(W_AXIS)
    axes[0][0].legend(fontsize=8)
    fig.suptitle(f"Request satisfaction and engagement against w_control (mean over users, "
                 f"{band})")
    _save(fig, path)


def plot_context(cells: pd.DataFrame, path: Path) -> None:
    """Satisfaction against w_control per method, one line style per context, one panel per k
    (the paper's Figures 10-11). Context-free methods are drawn once, dotted."""
    ks = sorted(cells.k.unique())
    sat = satisfaction_metric(cells)
    contexts = list(dict.fromkeys(cells.context))
    styles = {c: ("-", "--", "-.", (0, (6, 2, 1, 2)))[i % 4] for i, c in enumerate(contexts)}
    colors = {m: f"C{i}" for i, m in enumerate(sorted(cells.method.unique()))}
    data, _ = plot_series(cells[cells.metric == sat])
    if data.pool.nunique() > 1:  # all-items series are context-free: curves.png has them
        data = data[data.pool != "all"]
    fig, axes = _subplots(1, len(ks), figsize=(5.5 * len(ks), 4.5), squeeze=False)
    for ax, k in zip(axes[0], ks):
        for (method, ctx, agg, _), g in data[data.k == k].groupby(KEYS):
            g = g.sort_values("w_control")
            free = context_free(method)
            name = f"{method}, {'any context' if free else ctx}"
            if data.aggregation.nunique() > 1:
                name += f", {agg}"
            ax.plot(g.w_control, g["mean"], linestyle=":" if free else styles[ctx],
                    marker="" if free else ".", lw=1.2 if free else 1.8,
                    color=colors[method], alpha=0.7 if free else 1.0, label=name)
            if not free:
                _band(ax, g, colors[method], 0.08)
        ax.set_title(f"k = {k}")
        ax.set_xlabel(W_AXIS)
        ax.set_ylabel(metric_label(sat, k), fontsize=9)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.suptitle("User context: satisfaction against w_control, one line style per context")
    _save(fig, path)


def plot_pareto(cells: pd.DataFrame, sat: str, k: int, path: Path,
                engagement: tuple = ENGAGEMENT) -> None:
    """Satisfaction against each engagement metric at k: every w faint, the non-dominated w
    values connected (the paper's Figures 7-9)."""
    data, label = plot_series(cells[cells.k == k])
    wide = frontier_points(data, sat)
    fig, axes = _subplots(1, len(engagement), figsize=(5 * len(engagement), 4.4), squeeze=False)
    for ax, m in zip(axes[0], engagement):
        for n, (key, g) in enumerate(wide.groupby(KEYS)):
            x, y = g[m].to_numpy(), g[sat].to_numpy()
            ax.scatter(x, y, s=10, color=f"C{n}", alpha=0.25)
            idx = pareto_front(x, y)
            ax.plot(x[idx], y[idx], marker="o", ms=3, color=f"C{n}", label=label(*key))
        ax.set_xlabel(metric_label(m, k) + "  (engagement, higher is better)", fontsize=9)
        ax.set_ylabel(metric_label(sat, k), fontsize=9)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.suptitle(f"Pareto frontiers: request satisfaction vs engagement (k={k}); "
                 "faint points: every w_control")
    _save(fig, path)


def plot_distillation(check: pd.DataFrame, path: Path) -> None:
    """Normalised student score against normalised teacher rating on held-out pairs."""
    from ctrlrec.distill import correlations

    s = check.student.to_numpy()
    norm = (s - s.min()) / max(np.ptp(s), 1e-12)
    fig, ax = _subplots(figsize=(5, 5))
    for kind, g in check.assign(norm=norm).groupby("kind"):
        ax.scatter(g.label, g.norm, s=6, alpha=0.4, label=kind)
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8)
    ax.set_xlabel("teacher: direct-LLM expected rating, (r − 1) / 4")
    ax.set_ylabel("student f(r)·g(i), min-max scaled over the pairs")
    ax.legend(fontsize=7, markerscale=2, title="request kind", title_fontsize=7)
    c = correlations(check.student, check.label)
    ax.set_title(f"Distillation on held-out requests\nPearson {c['pearson']:.3f}, "
                 f"Spearman {c['spearman']:.3f}, n = {c['n']}", fontsize=10)
    _save(fig, path)
