"""report.html: one self-contained page per run (plots as base64 PNG, tables as HTML, inline CSS;
no external links, so it opens anywhere and can be mailed as one file)."""

from __future__ import annotations

import base64
import html
from pathlib import Path

import pandas as pd

from . import report

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1180px;
margin:1.5em auto;padding:0 1em;color:#222;line-height:1.4}
h1{font-size:1.5em}h2{font-size:1.2em;border-bottom:1px solid #ccc;padding-bottom:.2em;
margin-top:1.8em}
table{border-collapse:collapse;font-size:.85em;margin:.6em 0}
th,td{border:1px solid #ccc;padding:.2em .5em;text-align:right}
th{background:#f2f2f2}td:first-child,th:first-child{text-align:left}
img{max-width:100%;border:1px solid #eee;margin:.4em 0}
.warn{background:#fff4e5;border-left:4px solid #f0a020;padding:.4em .8em;margin:.3em 0}
.ok{background:#eef7ee;border-left:4px solid #4a4;padding:.4em .8em}
.meta{color:#555;font-size:.9em}caption{caption-side:top;text-align:left;color:#555}
"""


def _table(df: pd.DataFrame | None, floatfmt: str = "{:.3f}") -> str:
    if df is None or not len(df):
        return "<p><em>none</em></p>"
    return df.to_html(index=False, float_format=floatfmt.format, na_rep="–", border=0,
                      escape=True)


def _rows(rows: list[list], header: list[str]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_fmt(v))}</td>" for v in r) + "</tr>"
                   for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _fmt(v) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.3f}"
    return str(v)


def _img(path: Path, alt: str) -> str:
    if not path.exists():
        return f"<p><em>{html.escape(path.name)} missing</em></p>"
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _p(text: str) -> str:
    return f"<p>{html.escape(text)}</p>"


def hardware(manifest: dict) -> str:
    """A short line on where the run ran: CPUs Ray saw, LLM devices, the platform."""
    ray = manifest.get("ray") or {}
    parts = []
    if ray.get("cluster_cpus"):
        parts.append(f"{int(float(ray['cluster_cpus']))} CPU")
    if ray.get("cluster_gpus"):
        parts.append(f"{int(float(ray['cluster_gpus']))} GPU")
    devices = sorted({str((s.get("backend") or {}).get("device"))
                      for s in (manifest.get("llm") or {}).values()
                      if (s.get("backend") or {}).get("device")})
    if devices:
        parts.append("LLM on " + "/".join(devices))
    if ray.get("address") not in (None, "local"):
        parts.append(f"cluster {ray['address']}")
    return ", ".join(parts) or "unknown"


def write_html(run_dir: Path, manifest: dict, cells: pd.DataFrame, table1: pd.DataFrame,
               pareto: pd.DataFrame, pairs: pd.DataFrame | None,
               contexts: pd.DataFrame | None) -> Path:
    suite = manifest["suite"]
    sat = report.satisfaction_metric(cells)
    ks = sorted(cells.k.unique())
    title = f"{suite['name']}: {suite.get('description', '')}".rstrip(": ")
    out = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
           f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>",
           f"<h1>{html.escape(title)}</h1>",
           "<p class='meta'>" + html.escape(
               f"run {manifest.get('run_id')} · {manifest.get('created_utc', '')} · "
               f"{manifest['n_users']} users · config {manifest['config_hash'][:12]} · "
               f"git {str(manifest.get('git_commit', ''))[:10]} · data from "
               f"{manifest.get('data_source')} · candidate pool "
               f"{(manifest.get('pool') or {}).get('kind', 'all')} · {hardware(manifest)}")
           + "</p>"]

    # warnings first: they qualify every number below
    rows, notes = report.warnings(manifest)
    judge = manifest.get("judge_is_scorer")
    out.append("<h2>Warnings</h2>")
    out += [f"<div class='warn'>{html.escape(n)}</div>" for n in notes] or \
        ["<div class='ok'>No warnings: every LLM rating passed the probability-mass check.</div>"]
    out.append(_p("Judge is the direct scorer: " + ("no judge in this suite" if judge is None
                                                    else "yes" if judge else "no")
                  + ". Probability mass on the digits 1-5 per LLM stage:"))
    out.append(_rows(rows, ["stage", "ratings", "below threshold", "rate", "mean mass"])
               if rows else _p("No LLM ratings in this run."))

    sat_name = report.metric_label(sat, "k")
    out += ["<h2>Table 1: maximum request satisfaction per method</h2>",
            _p(f"Satisfaction = {sat_name}. Max over w_control of the mean over users, 95% "
               "bootstrap interval over users (ci_low, ci_high), the w that reaches it, % vs "
               "the untrained method, the paired interval of the difference to untrained "
               "(diff_ci), and precision / recall / NDCG@k at that w."),
            _table(table1)]
    out += ["<h2>Paired comparison of methods at their best w</h2>"]
    if pairs is None:
        out.append(_p("Needs per-user data (per_user.parquet), which this run folder lacks."))
    else:
        out += [_p("diff = mean over the same users of satisfaction(method_a) − "
                   "satisfaction(method_b), each method at its own best w; 95% bootstrap "
                   "interval; two-sided sign-flip p-value. The best w is chosen on these users, "
                   "so the intervals lean optimistic."),
                _table(pairs.assign(p_value=pairs.p_value.map(lambda p: f"{p:.4f}")))]
    out += ["<h2>Satisfaction and engagement against w_control (Figure 4)</h2>",
            _img(run_dir / "curves.png", "satisfaction and precision against w_control")]
    out += ["<h2>Pareto frontiers</h2>",
            _p("Area under each frontier, engagement scaled by its best value in this run "
               "(1 = best satisfaction and engagement at once)."), _table(pareto)]
    out += [_img(run_dir / f"pareto_k{k}.png", f"Pareto frontiers at k={k}") for k in ks]
    if contexts is not None and len(contexts):
        out += ["<h2>Context comparison</h2>",
                _p("history:N shows the LLM the user's N most recent train ratings; none shows "
                   "only the request. Context-free methods (dotted) have one curve for every "
                   "context. Best satisfaction per method and context, 95% interval, its w:"),
                _table(contexts), _img(run_dir / "context.png", "satisfaction per context")]
    d = manifest.get("distillation")
    if d:
        out += ["<h2>Distillation check</h2>",
                _p(f"{d['train_requests']} training requests ({d['train_pairs']} pairs), "
                   f"{d['val_requests']} held out ({d['val_pairs']} pairs); loss per epoch: "
                   + ", ".join(f"{h['loss']:.4f}" for h in d["history"])
                   + f". Evaluation requests also used in training: "
                   f"{report.eval_seen_in_training(manifest)}."),
                _rows(report.distillation_rows(d), ["pairs", "Pearson", "Spearman", "n"]),
                _img(run_dir / "distill.png", "student vs teacher on held-out pairs")]
    eng = manifest.get("engagement_metrics") or {}
    if eng:
        out += ["<h2>Engagement model on the test half</h2>",
                _rows(*report.engagement_rows(eng))]
    stats = manifest.get("llm") or {}
    llm_rows = [[label, s.get("prompts"), s.get("llm_calls"), s.get("cache_hits"),
                 (s.get("backend") or {}).get("model")] for label, s in stats.items()
                if s.get("prompts") is not None]
    if llm_rows:
        out += ["<h2>LLM work</h2>",
                _rows(llm_rows, ["stage", "prompts", "LLM calls", "cache hits", "model"])]
    out.append("<p class='meta'>Written by bench (ctrlrec-bench); rebuild with "
               "<code>bench report RUN_DIR</code>.</p></body></html>")
    path = run_dir / "report.html"
    path.write_text("\n".join(out))
    return path
