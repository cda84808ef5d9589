"""The one model both summary.md and report.html are rendered from: a report is a title, a line
of facts about the run and a list of sections, each with a title, an intro sentence, warnings,
tables (DataFrames) and figures (PNG files of the run folder)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from ..seeds import split_label
from .provenance import hardware
from .seeds import first_seed_caption
from .sources import describe_pool, embedding_warning
from .tables import context_free, satisfaction_metric, selected_w


@dataclass
class Table:
    frame: pd.DataFrame
    floatfmt: str = ".3f"
    caption: str | None = None  # a sentence before the table
    empty: str = "none"         # said instead of a table without rows


@dataclass
class Figure:
    path: Path
    alt: str


@dataclass
class Section:
    title: str
    intro: str | None = None
    warnings: list[str] | None = None  # None: the section lists no warnings; []: it found none
    tables: list[Table] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)
    note: str | None = None     # after the tables: where the files are, how to read them


@dataclass
class Report:
    title: str
    facts: list[str]
    sections: list[Section]


def rows_frame(rows: list[list], header: list[str]) -> pd.DataFrame:
    """A table given as rows; object dtype keeps ints, strings and None as they are."""
    return pd.DataFrame(rows, columns=header, dtype=object)


def eval_seen_in_training(manifest: dict) -> int | None:
    """Over every seed's distilled values (a run of several seeds labels them `...@sN`)."""
    seen = [st.get("eval_requests_seen_in_training")
            for label, st in (manifest.get("llm") or {}).items()
            if split_label(label)[0] == "values[distilled]"]
    return sum(seen) if seen and None not in seen else None


def warnings(manifest: dict) -> tuple[list[list], list[str]]:
    """(rows of the mass-check table: stage, ratings, below threshold, rate, mean mass;
    warning sentences) from the manifest."""
    rows, notes = [], judge_validation_notes(manifest)  # first: it decides what grades mean
    for label, st in (manifest.get("llm") or {}).items():
        if "low_mass_rate" in st:
            n = st.get("ratings", st.get("feeds_judged", st.get("prompts")))
            rows.append([label, n, st.get("low_mass"), f"{st['low_mass_rate']:.2%}",
                         f"{st['mean_mass']:.3f}" if st.get("mean_mass") is not None else "–"])
            if st["low_mass_rate"] > 0:
                what = ("left out of the averages" if label.startswith("judge") else
                        "left out of training" if split_label(label)[0] == "teacher_labels" else
                        "scored 1 (lowest)")
                notes.append(f"{label}: {st['low_mass']} of {n} LLM ratings "
                             f"({st['low_mass_rate']:.2%}) failed the probability-mass check "
                             f"and were {what}.")
        if st.get("fallbacks"):
            notes.append(f"{label}: {st['fallbacks']} of {st.get('prompts')} requests fell back "
                         "to the template writer (the LLM gave no valid request).")
        leaks = st.get("leaks") or {}
        if leaks.get("found"):
            notes.append(f"{label}: {leaks['found']} requests named one of the user's test items; "
                         f"{leaks['rewritten']} were written again without it, "
                         f"{leaks['scrubbed']} had the title replaced (ctrlrec/leaks.py).")
    if manifest.get("judge_is_scorer"):
        notes.append("The judge is the same model as the direct scorer (the paper used different "
                     "models): judge scores may favour the direct method.")
        if ((manifest.get("suite") or {}).get("judge") or {}).get("mode") == "item":
            notes.append("The judge grades item by item with the direct scorer's own prompt: its "
                         "grades are the direct method's objective, not an independent check.")
    if embedding_warning(manifest):
        notes.append(embedding_warning(manifest))
    seen = eval_seen_in_training(manifest)
    if seen:
        notes.append(f"{seen} evaluation requests were also distillation training requests.")
    return rows, notes


def judge_validation_notes(manifest: dict) -> list[str]:
    """Warnings about the judge's validation on planted feeds (none for a suite without a judge):
    an AUC below its minimum at some k, or no validation at all."""
    if not (manifest.get("suite") or {}).get("judge"):
        return []
    v = manifest.get("judge_validation")
    if v is None:
        why = ("judge.validate: false" if "judge_validation" in manifest
               else "the run predates judge validation")
        return [(f"The judge was not validated on planted feeds ({why}): nothing shows that "
                 "its grades tell lists that fit a request from lists that do not.")]
    return [f"Judge validation failed at k={r['k']}: on planted lists (fitting vs plainly "
            f"unrelated, mode {v['mode']}) the judge's AUC is {r['auc']:.3f} < {v['min_auc']} "
            f"(mean gap {r['gap']:+.3f}): its grades cannot be trusted to rank methods."
            for r in v["rows"]
            if r["basis"] == "all" and not r["auc"] >= v["min_auc"]]  # NaN fails too


def judge_validation_section(manifest: dict) -> Section | None:
    """The judge's separation of planted feeds per k, overall and per basis of the targets."""
    v = manifest.get("judge_validation")
    if not v:
        return None
    rows = [[r["k"], r["basis"], r["requests"], r["n_pos"], r["n_neg"], r["auc"], r["gap"],
             r["mean_pos"], r["mean_neg"], r["ungraded"]] for r in v["rows"]]
    header = ["k", "basis", "requests", "fitting lists", "unfitting lists", "AUC", "mean gap",
              "grade (fitting)", "grade (unfitting)", "ungraded"]
    return Section(
        f"Judge validation: planted lists (mode {v['mode']})",
        f"Before grading, the judge graded planted lists for {v['requests_planted']} distinct "
        "requests: lists that fit (items of the requested genre, of the genres a request "
        "names, or of the genre the user's liked items point to: `basis`) and lists of plainly "
        "unrelated genres. AUC: the chance that a fitting list outgrades an unfitting one; "
        f"below {v['min_auc']} the judge's grades are not trusted.",
        warnings=judge_validation_notes(manifest), tables=[Table(rows_frame(rows, header))],
        note="Every planted list and its grade: `feeds.parquet` of the `judge_validation` stage "
             "in the stage cache (`bench.stages.judge`).")


def warnings_section(manifest: dict) -> Section:
    rows, notes = warnings(manifest)
    judge = manifest.get("judge_is_scorer")
    judge_line = ("no judge in this suite" if judge is None else
                  "judge = direct scorer: **yes**" if judge else "judge = direct scorer: no")
    frame = rows_frame(rows, ["stage", "ratings", "below threshold", "rate", "mean mass"])
    return Section("Warnings", warnings=notes, tables=[Table(
        frame, caption=f"LLM probability-mass check per stage ({judge_line}):",
        empty="No LLM ratings in this run.")])


def engagement_section(engagement: dict, by_seed: dict | None = None) -> Section:
    """Mean ± se per engagement model and metric (and seed, in a run of several)."""
    named = ({f"{name} (seed {seed})": m for seed, models in by_seed.items()
              for name, m in models.items()} if by_seed else engagement)
    rows = [[name] + [f"{v[0]:.3f} ± {v[1]:.3f}" for v in m.values()]
            for name, m in named.items()]
    header = ["model"] + list(next(iter(engagement.values())))
    return Section("Engagement model on the test half (all non-train items are candidates)",
                   tables=[Table(rows_frame(rows, header))])


def clusters_named(frame: pd.DataFrame) -> str:
    """What a table's intervals resampled, from its `unit` and `n_clusters` columns, e.g.
    'request text (39)'; tables from before them resampled users."""
    from .statistics import UNITS
    if "unit" not in frame or not len(frame):
        return "user (each user alone)"
    name = " / ".join(UNITS.get(u, u) for u in dict.fromkeys(frame.unit))
    if "n_clusters" not in frame:
        return name
    lo, hi = int(frame.n_clusters.min()), int(frame.n_clusters.max())
    return f"{name} ({lo}{'' if lo == hi else f'–{hi}'})"


def _unitless(frame: pd.DataFrame) -> pd.DataFrame:
    """The table without the columns its caption already names; over several seeds, the
    interval and test columns say in their header that they are the first seed's."""
    if "n_seeds" in frame:
        frame = frame.rename(columns={c: f"{c} (first seed)" for c in frame.columns
                                      if "ci_" in c or c == "p_value"})
    return frame.drop(columns=[c for c in ("unit", "n_clusters", "n_seeds") if c in frame])


def table1_section(sat: str, t1: pd.DataFrame) -> Section:
    return Section(f"Table 1: maximum request satisfaction ({sat.replace('_', ' ')}@k) per method",
                   "Percentile cluster-bootstrap intervals: whole clusters of users are "
                   "redrawn, since users who share a request share its LLM answers; `diff_ci` is "
                   "the paired interval of the difference to the untrained method, each at its "
                   "own best w. `pool`: the candidates ranked (`all`: every unseen item, for "
                   "methods cheap over all items in a shortlist run).",
                   tables=[Table(_unitless(t1), caption=first_seed_caption(t1)
                                 + "95% interval, clusters: " + clusters_named(t1))])


def paired_section(pairs: pd.DataFrame | None) -> Section:
    title = "Paired comparison of methods, each at its best w"
    if pairs is None:
        return Section(title, "Needs per-user data (`per_user.parquet`), which this run folder "
                              "lacks.")
    if not len(pairs):
        return Section(title, "One method per context and aggregation: no pair to compare.")
    return Section(title, "`diff` = mean over the same users of satisfaction(a) − "
                          "satisfaction(b); 95% cluster-bootstrap interval; two-sided sign-flip "
                          "p-value flipping whole clusters (exact when there are few). The best w "
                          "is chosen on these users, so the intervals are somewhat optimistic.",
                   tables=[Table(_unitless(pairs.assign(
                       p_value=pairs.p_value.map(lambda p: f"{p:.4f}"))),
                       caption=first_seed_caption(pairs) + "95% interval and p-value, "
                       "clusters: " + clusters_named(pairs))])


def pareto_section(run_dir: Path, pareto: pd.DataFrame, with_contexts: bool) -> Section:
    return Section(
        "Pareto frontiers (area under the satisfaction-vs-engagement frontier, engagement "
        "scaled by its best value in this run)",
        tables=[Table(_unitless(pareto), caption=first_seed_caption(pareto) + (
            f"`area_ci`: 95% interval of `area_vs_precision`, clusters: {clusters_named(pareto)}"
            if "area_ci_low" in pareto else ""))],
        figures=[Figure(run_dir / f"pareto_k{k}.png", f"Pareto frontiers at k={k}")
                 for k in sorted(pareto.k.unique())],
        note="Plots: `curves.png` (against w), `pareto_k*.png` (frontiers)"
             + (", `context.png` (contexts)" if with_contexts else "") + ".")


def context_section(run_dir: Path, contexts: pd.DataFrame, clusters: str = "user") -> Section:
    names = [c for c in contexts.columns if c not in ("method", "aggregation", "pool", "k")]
    free = sorted({m for m in contexts.method if context_free(m)})
    same = (f" {', '.join(free)} ignore{'s' if len(free) == 1 else ''} the context, so "
            "their columns are equal by construction." if free else "")
    return Section(
        "Context comparison: best satisfaction per method × context",
        f"Contexts {', '.join(names)}: `history:N` shows the LLM the user's N most recent "
        f"train ratings, `none` shows only the request. Max over w, 95% bootstrap "
        f"interval, the w that reaches it.{same} Figure: `context.png`.",
        tables=[Table(contexts, caption=f"95% interval, clusters: {clusters}")],
        figures=[Figure(run_dir / "context.png", "satisfaction per context")])


def pool_section(manifest: dict, sources: pd.DataFrame) -> Section:
    """Which nominator each method's top-k came from, and what the shortlist hides."""
    pool = manifest.get("pool") or {}
    warning = embedding_warning(manifest)
    return Section(
        "Candidate pool: where each method's top-k comes from",
        f"Pool {describe_pool(pool)}, {pool.get('mean_items_per_user', float('nan')):.1f} items "
        "per user on average, the same for every method. `from_<nominator>`: share of the "
        "method's top-k that the nominator put forward (an item two nominators chose counts for "
        "both), at `w`, the w of its maximum satisfaction. `all_in_pool`: for a method also "
        "ranked over all items, the share of that full-set top-k inside the shortlist, at its "
        "own best w (`w_all`)." + (" `genre_ceiling`: the best genre accuracy any ranking of "
                                   "the shortlist could reach, a cap on every method over it."
                                   if "genre_ceiling" in sources else ""),
        warnings=[warning] if warning else None, tables=[Table(sources)],
        note="Per-user shares: the `from_*` and `in_pool` columns of `per_user.parquet`; this "
             "table: `pool_sources.csv`.")


def curves_section(run_dir: Path, cells: pd.DataFrame) -> Section:
    return Section(
        "Satisfaction and engagement at selected w_control",
        tables=[Table(selected_w(cells))],
        figures=[Figure(run_dir / "curves.png", "satisfaction and precision against w_control")],
        note="All cells: `cells.parquet` (mean, standard error and user count per metric); "
             "per-user values: `per_user.parquet`.")


def llm_section(manifest: dict) -> Section | None:
    """LLM work of the run: prompts, calls made, cache hits, mass-check failures, fallbacks."""
    rows = [[label, s.get("prompts"), s.get("llm_calls"), s.get("cache_hits"),
             s.get("low_mass", "–"),
             f"{s['low_mass_rate']:.2%}" if "low_mass_rate" in s else "–",
             s.get("fallbacks", "–"), (s.get("backend") or {}).get("model")]
            for label, s in (manifest.get("llm") or {}).items() if s.get("prompts") is not None]
    if not rows:
        return None
    header = ["stage", "prompts", "LLM calls", "cache hits", "mass < threshold", "rate",
              "template fallbacks", "model"]
    return Section("LLM work", tables=[Table(rows_frame(rows, header))],
                   note="Direct scoring: an item whose digit mass is below the threshold gets "
                        "the lowest rating (1). Judge: such grades are left out of the averages.")


def distillation_section(run_dir: Path, manifest: dict) -> Section | None:
    """Pearson, Spearman and n on held-out pairs: student, untrained, then per request kind."""
    d = manifest.get("distillation")
    if not d:
        return None
    rows = [["all held-out pairs (student)", d["overall"]["pearson"], d["overall"]["spearman"],
             d["overall"]["n"]],
            ["all held-out pairs (untrained, before)", d["untrained_overall"]["pearson"],
             d["untrained_overall"]["spearman"], d["untrained_overall"]["n"]]]
    rows += [[f"kind: {k}", v["pearson"], v["spearman"], v["n"]]
             for k, v in d["per_kind"].items()]
    others = manifest.get("distillation_by_seed") or {}
    rows += [[f"all held-out pairs (student, seed {seed})", o["overall"]["pearson"],
              o["overall"]["spearman"], o["overall"]["n"]] for seed, o in others.items()]
    return Section(
        "Distillation check (held-out requests" + (", first seed unless named)" if others
                                                    else ")"),
        f"{d['train_requests']} training requests ({d['train_pairs']} pairs), "
        f"{d['val_requests']} held out ({d['val_pairs']} pairs); loss per epoch: "
        + ", ".join(f"{h['loss']:.4f}" for h in d["history"]) + ".",
        tables=[Table(rows_frame(rows, ["pairs", "Pearson", "Spearman", "n"]))],
        figures=[Figure(run_dir / "distill.png", "student vs teacher on held-out pairs")],
        note=f"Evaluation requests that also were training requests: "
             f"{eval_seen_in_training(manifest)}. The distilled values made no LLM call. "
             "Scatter: `distill.png`; pairs: `distill_check.parquet`.")


def describe_split(split: dict | None) -> str | None:
    """The train/test split in words (runs made before the manifest held it: None)."""
    if not split:
        return None
    if split["kind"] == "global_time":
        cutoff = datetime.fromtimestamp(split["cutoff"], timezone.utc).isoformat(timespec="seconds")
        return (f"split at one time for all users ({cutoff}, {split['train_share']:.1%} of ratings "
                f"train; {split['evaluable_users']} users with train and test ratings)")
    return (f"split per user by time (earliest {split['train_fraction']:.0%} of each user's "
            "ratings train)")


def facts(manifest: dict) -> list[str]:
    """Which run this is and where it ran, for the line under the title."""
    out = [f"run {manifest.get('run_id')}", manifest.get("created_utc"),
           f"{manifest['n_users']} users", f"config {manifest['config_hash'][:12]}",
           f"git {str(manifest.get('git_commit', ''))[:10]}",
           f"data from {manifest.get('data_source')}", describe_split(manifest.get("split")),
           f"candidate pool {describe_pool(manifest.get('pool') or {})}"
           + (" (embedding-nominated: favours embedding methods)"
              if embedding_warning(manifest) else ""),
           hardware(manifest)]
    runs = (manifest.get("seeds") or {}).get("runs") or []
    if len(runs) > 1:
        out.insert(3, f"seeds {', '.join(map(str, runs))}")
    return [f for f in out if f]


def build(manifest: dict, cells: pd.DataFrame, table1: pd.DataFrame, pareto: pd.DataFrame,
          pairs: pd.DataFrame | None = None, contexts: pd.DataFrame | None = None,
          run_dir: Path = Path("."), sources: pd.DataFrame | None = None) -> Report:
    """The report of a run from its manifest and tables alone (no run objects), so that
    `bench report` can rebuild it from the files; figures are read from run_dir. `sources`:
    the candidate-pool table of a shortlist run (bench/report/sources.py)."""
    suite = manifest["suite"]
    with_contexts = contexts is not None and len(contexts) > 0
    sections = [warnings_section(manifest),
                engagement_section(manifest["engagement_metrics"],
                                   manifest.get("engagement_metrics_by_seed"))
                if manifest.get("engagement_metrics") else None,
                table1_section(satisfaction_metric(cells), table1),
                judge_validation_section(manifest),
                paired_section(pairs),
                pool_section(manifest, sources) if sources is not None else None,
                pareto_section(run_dir, pareto, with_contexts),
                context_section(run_dir, contexts, clusters_named(table1))
                if with_contexts else None,
                curves_section(run_dir, cells),
                llm_section(manifest),
                distillation_section(run_dir, manifest)]
    return Report(f"{suite['name']}: {suite.get('description', '')}".rstrip(": "),
                  facts(manifest), [s for s in sections if s is not None])
