"""Reports from constructed run data: report.html, the context figure, `bench report`, the paired
comparison, the leaderboard over two tiny runs and a corrupt folder, `bench show`'s table and its
input errors. No Ray, no model: a few seconds."""

import html
import json
import re

import numpy as np
import pandas as pd
import pytest

from bench import cli
from bench.leaderboard import collect_all, write
from bench.outputs import write_reports
from bench.report import provenance, render, statistics, tables

METHODS = ("untrained", "direct")
WS = (0.0, 0.5, 1.0)


def per_user_frame(contexts=("none",), n_users=40, seed=0) -> pd.DataFrame:
    """Satisfaction rises with w and falls back at w=1 for untrained; direct is better with no
    context than with history; precision falls with w."""
    rng = np.random.default_rng(seed)
    rows = []
    for method in METHODS:
        for ctx in contexts:
            for w in WS:
                for k in (5, 10):
                    base = {"untrained": (0.3, 0.7, 0.6), "direct": (0.3, 0.8, 0.9)}[method]
                    shift = -0.2 if (method == "direct" and ctx != "none") else 0.0
                    acc = np.clip(base[WS.index(w)] + (shift if w else 0)
                                  + rng.normal(0, 0.1, n_users), 0, 1)
                    prec = np.clip(0.3 - 0.15 * w + rng.normal(0, 0.05, n_users), 0, 1)
                    rows.append(pd.DataFrame({
                        "method": method, "context": ctx, "aggregation": "rank",
                        "user_id": np.arange(1, n_users + 1), "w_control": w, "k": k,
                        "genre_accuracy": acc, "precision": prec, "recall": prec / 3,
                        "ndcg": prec * 1.1}))
    return pd.concat(rows, ignore_index=True)


def manifest(name="tiny", contexts=("none",), judge_is_scorer=None, low_mass=0) -> dict:
    return {
        "suite": {"name": name, "description": "constructed", "requests": {"kind": "genre"},
                  "engagement": {"model": "bivae"}, "pool": {"kind": "all"},
                  "methods": [{"name": "untrained", "model": "all-MiniLM-L6-v2"},
                              {"name": "direct", "llm": {"model": "qwen"}}],
                  "contexts": list(contexts)},
        "config_hash": "0123456789abcdef", "run_id": "r1", "created_utc": "2026-01-02T03:04:05",
        "git_commit": "abcdef1234567", "data_source": "cache", "n_users": 40,
        "engagement_metrics": {"bivae": {"precision@5": [0.31, 0.01]}},
        "pool": {"kind": "all"}, "ray": {"address": "local", "cluster_cpus": 2.0},
        "llm": {"values[direct,none]": {"prompts": 200, "llm_calls": 200, "cache_hits": 0,
                                        "low_mass": low_mass, "low_mass_rate": low_mass / 200,
                                        "mean_mass": 0.97, "backend": {"model": "qwen",
                                                                       "device": "cpu"}}},
        "judge_is_scorer": judge_is_scorer, "distillation": None, "stages": {},
    }


def write_run(folder, contexts=("none",), **kw):
    folder.mkdir(parents=True)
    per_user = per_user_frame(contexts)
    per_user.to_parquet(folder / "per_user.parquet", index=False)
    cells = tables.cells_table(per_user, "0123456789abcdef")
    cells.to_parquet(folder / "cells.parquet", index=False)
    m = manifest(folder.parent.name, contexts, **kw)
    write_reports(folder, m, cells, per_user)
    provenance.write_json(folder / "manifest.json", m)
    return folder


@pytest.fixture(scope="module")
def ctx_run(tmp_path_factory):
    return write_run(tmp_path_factory.mktemp("runs") / "ctx" / "r1", ("none", "history:5"),
                     judge_is_scorer=True, low_mass=7)


@pytest.mark.slow
def test_report_html_is_self_contained_with_every_section(ctx_run):
    page = (ctx_run / "report.html").read_text()
    assert page.count('<img alt=') == page.count('src="data:image/png;base64,') >= 4
    srcs = [chunk.split('"')[1] for chunk in page.split('src=')[1:]]
    assert all(s.startswith("data:image/png;base64,") for s in srcs)
    assert "<link" not in page and "http://" not in page and "https://" not in page
    for heading in ("Warnings", "Table 1", "Paired comparison", "Satisfaction and engagement",
                    "Pareto frontiers", "Context comparison"):
        assert f"<h2>{heading}" in page, heading
    assert "same model as the direct scorer" in page
    assert "7 of 200 LLM ratings (3.50%)" in page


@pytest.mark.slow
def test_summary_and_report_share_their_sections(ctx_run):
    # both documents are rendered from one section model: same titles, same order
    md = [line[3:] for line in (ctx_run / "summary.md").read_text().splitlines()
          if line.startswith("## ")]
    page = (ctx_run / "report.html").read_text()
    assert [html.unescape(t) for t in re.findall(r"<h2>(.*?)</h2>", page)] == md
    assert len(md) == 8 and "Context comparison: best satisfaction per method × context" in md


@pytest.mark.slow
def test_context_figure_and_table_in_summary(ctx_run):
    assert (ctx_run / "context.png").stat().st_size > 10_000
    summary = (ctx_run / "summary.md").read_text()
    assert "[report.html](report.html)" in summary
    assert "## Warnings" in summary and "3.50%" in summary
    assert "## Context comparison" in summary and "history:5" in summary
    ctx = tables.context_table(pd.read_csv(ctx_run / "table1.csv")).set_index(["method", "k"])
    assert list(ctx.columns) == ["aggregation", "history:5", "none"]
    best = {c: float(ctx.loc[("direct", 5), c].split()[0]) for c in ("history:5", "none")}
    assert best["none"] > best["history:5"] + 0.1  # constructed: context hurts direct
    assert ctx.loc[("direct", 5), "none"].endswith("at w=1")


@pytest.mark.slow
def test_no_context_section_with_one_context(tmp_path):
    run = write_run(tmp_path / "one" / "r", ("none",))
    assert not (run / "context.png").exists()
    assert "Context comparison" not in (run / "report.html").read_text()
    assert "- none" in (run / "summary.md").read_text()  # no warnings


@pytest.mark.slow
def test_bench_report_rebuilds_from_files(ctx_run, capsys):
    t1 = (ctx_run / "table1.csv").read_text()
    for f in ("report.html", "summary.md", "curves.png", "context.png", "table1.csv"):
        (ctx_run / f).unlink()
    assert cli.main(["report", str(ctx_run)]) == 0
    assert "report.html" in capsys.readouterr().out
    assert (ctx_run / "table1.csv").read_text() == t1
    assert (ctx_run / "report.html").exists() and (ctx_run / "context.png").exists()


def test_bench_report_errors_are_one_line(tmp_path, capsys):
    assert cli.main(["report", str(tmp_path / "nope")]) == 2
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "manifest.json").write_text("{}")
    assert cli.main(["report", str(tmp_path / "half")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "no such run folder" in err[0] and "cells.parquet" in err[1]


def test_paired_comparison_by_construction():
    rows = []
    for u in range(60):
        for w in (0.0, 1.0):
            rows.append(("a", u, w, 0.5 + 0.3 * w + 0.01 * (u % 3)))
            rows.append(("b", u, w, 0.5 + 0.1 * w + 0.01 * (u % 3)))
            rows.append(("c", u, w, 0.5 + 0.1 * w + 0.01 * (u % 3) + 0.02 * ((u % 2) - 0.5)))
    df = pd.DataFrame(rows, columns=["method", "user_id", "w_control", "genre_accuracy"]).assign(
        context="none", aggregation="rank", k=5)
    p = statistics.paired_comparisons(df, "genre_accuracy", 5).set_index(["method_a", "method_b"])
    ab = p.loc[("a", "b")]
    assert ab["diff"] == pytest.approx(0.2) and ab.ci_low > 0.19 and ab.p_value < 0.001
    assert ab.w_a == 1.0 and ab.w_b == 1.0
    bc = p.loc[("b", "c")]  # same mean, symmetric noise: no evidence of a difference
    assert abs(bc["diff"]) < 1e-9 and bc.p_value > 0.2 and bc.ci_low < 0 < bc.ci_high
    assert statistics.sign_flip_p(np.zeros(10)) == 1.0


def test_pareto_summary_on_constructed_cells():
    rows = []
    for w, sat, prec in ((0.0, 0.3, 0.4), (0.5, 0.8, 0.3), (0.75, 0.7, 0.1), (1.0, 0.9, 0.2)):
        rows += [("m", "none", "rank", w, 5, "genre_accuracy", sat),
                 ("m", "none", "rank", w, 5, "precision", prec)]
    cells = pd.DataFrame(rows, columns=["method", "context", "aggregation", "w_control", "k",
                                        "metric", "mean"])
    s = statistics.pareto_summary(cells, "genre_accuracy", 5, engagement=("precision",))
    # frontier by precision: (0.2, 0.9), (0.3, 0.8), (0.4, 0.3); (0.1, 0.7) is dominated
    expected = (0.2 * 0.9 + 0.1 * 0.8 + 0.1 * 0.3) / 0.4
    assert s.area_vs_precision.iloc[0] == pytest.approx(expected)


@pytest.mark.slow
def test_leaderboard_over_two_runs_and_a_corrupt_folder(tmp_path):
    write_run(tmp_path / "alpha" / "r1")
    write_run(tmp_path / "beta" / "r2", ("none", "history:5"))
    broken = tmp_path / "alpha" / "broken"
    broken.mkdir()
    (broken / "manifest.json").write_text("{not json")
    (broken / "table1.csv").write_text("method\nx\n")
    (tmp_path / "alpha" / "notes").mkdir()  # no run file: not a run, not listed
    df, skipped = collect_all(tmp_path)
    assert set(df.suite) == {"alpha", "beta"} and set(df.run) == {"r1", "r2"}
    for col in ("method", "model", "max_satisfaction", "ci95", "precision", "frontier_area",
                "run", "date", "hardware"):
        assert df[col].notna().all(), col
    assert (df.hardware == "2 CPU, LLM on cpu").all() and (df.date == "2026-01-02").all()
    assert [s[0] for s in skipped] == ["alpha/broken"]
    for _, g in df.groupby(["suite", "k"]):  # best first within a suite and k
        assert g.max_satisfaction.is_monotonic_decreasing
    again, _ = collect_all(tmp_path)
    pd.testing.assert_frame_equal(df, again)
    text = write(tmp_path)
    assert "## Skipped folders" in text and "alpha/broken" in text and "| beta" in text


def test_leaderboard_ranks_a_row_only_among_rows_over_the_same_candidates(tmp_path):
    # a per_category shortlist lets a method reach far more than an 8 + 8 one (genre ceilings
    # ~0.93 and ~0.47): the narrow pool's runs must not be ranked between the wide pool's
    pools = {"wide": ({"kind": "shortlist", "engagement": 8, "random": 0, "per_category": 3},
                      0.80),
             "narrow": ({"kind": "shortlist", "engagement": 8, "random": 8}, 0.85),
             "wide2": ({"kind": "shortlist", "engagement": 8, "random": 0, "per_category": 3},
                       0.90),
             # written before `random` existed: the suite reads it as no random sample
             "old": ({"kind": "shortlist", "engagement": 20, "untrained": 20}, 0.95),
             # another split: other users and test halves, ranked apart from the rest
             "late": ({"kind": "shortlist", "engagement": 8, "random": 0, "per_category": 3},
                      0.99)}
    for run, (pool, sat) in pools.items():
        folder = tmp_path / "genre" / run
        folder.mkdir(parents=True)
        data = {"data": {"split": {"kind": "global_time"}}} if run == "late" else {}
        (folder / "manifest.json").write_text(json.dumps({
            "suite": {"name": "genre", "engagement": {"model": "bivae"}, "pool": pool,
                      "methods": [{"name": "untrained"}], **data},
            "git_commit": "f" * 40, "git": {"commit": "f" * 40, "dirty": False}}))
        (folder / "table1.csv").write_text(
            "method,context,aggregation,pool,k,max_satisfaction,ci_low,ci_high,w_control,"
            f"precision\nuntrained,none,rank,shortlist,5,{sat},0.1,0.9,0.5,0.1\n"
            f"untrained,none,rank,all,5,{sat - 0.5},0.1,0.9,0.5,0.1\n")
    df, skipped = collect_all(tmp_path)
    assert skipped == []
    assert list(zip(df.pool, df.run)) == [
        ("all", "late"), ("shortlist(engagement 8 + per_category 3)", "late"),
        ("all", "old"), ("all", "wide2"), ("all", "narrow"), ("all", "wide"),
        ("shortlist(engagement 20 + untrained 20)", "old"),
        ("shortlist(engagement 8 + per_category 3)", "wide2"),
        ("shortlist(engagement 8 + per_category 3)", "wide"),
        ("shortlist(engagement 8 + random 8)", "narrow")]
    assert df.split.tolist() == ["global_time"] * 2 + ["per_user_chronological"] * 8
    assert "| shortlist(engagement 8 + random 8) " in write(tmp_path)


# ---------------------------------------------------------------- bench show

def test_show_table_rows_and_extremes():
    from bench.show import qualitative, render

    from ctrlrec.data import ML_GENRES

    items = pd.DataFrame({"item_id": [1, 2, 3, 4, 5],
                          "title": [f"Film {c} (1990)" for c in "ABCDE"], "year": [1990] * 5})
    for g in ML_GENRES:
        items[g] = False
    items["Comedy"] = [True, False, True, False, True]
    eng = np.array([5.0, 4.0, 3.0, 2.0, 1.0])    # engagement order A B C D E
    val = np.array([0.1, 0.2, 0.3, 0.4, 0.5])    # request order E D C B A
    cand = np.array([True, True, True, True, False])  # E was seen in train
    out = qualitative(items, eng, val, cand, [0.0, 0.5, 1.0], k=3)
    assert list(out[0.0].title) == ["Film A (1990)", "Film B (1990)", "Film C (1990)"]
    assert list(out[1.0].title) == ["Film D (1990)", "Film C (1990)", "Film B (1990)"]
    assert list(out[1.0]["request rank"]) == [1, 2, 3]
    assert list(out[1.0]["engagement rank"]) == [4, 3, 2]
    assert out[0.5]["combined score"].iloc[0] == pytest.approx(0.5)  # every item ties at 0.5
    assert out[0.0].genres.iloc[0] == "Comedy" and len(out[0.5]) == 3
    text = render(out, "## header")
    assert text.count("### w_control") == 3 and "| title" in text


@pytest.mark.parametrize("args, message", [
    (["--user", "1", "--request", "  "], "request is empty"),
    (["--user", "1", "--request", "x", "--w", "0,1.2"], "outside [0, 1]"),
    (["--user", "1", "--request", "x", "--w", "a,b"], "expected numbers"),
    (["--user", "one", "--request", "x"], "whole number"),
    (["--user", "1", "--request", "x", "--k", "0"], "at least 1"),
    (["--user", "1", "--request", "x", "--run", "/no/such/run"], "no such run folder"),
])
def test_show_bad_input_is_one_line_exit_2(args, message, capsys):
    assert cli.main(["show", *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err


def test_show_run_without_manifest(tmp_path, capsys):
    assert cli.main(["show", "--run", str(tmp_path), "--user", "1", "--request", "x"]) == 2
    assert "manifest.json" in capsys.readouterr().err


@pytest.mark.slow
def test_manifest_json_roundtrip_keeps_engagement_table(ctx_run):
    m = json.loads((ctx_run / "manifest.json").read_text())
    text = render.summary_markdown(m, pd.read_parquet(ctx_run / "cells.parquet"),
                                   pd.read_csv(ctx_run / "table1.csv"),
                                   pd.read_csv(ctx_run / "pareto.csv"))
    assert "0.310 ± 0.010" in text


@pytest.mark.slow
def test_tables_name_the_resampled_unit_and_bench_report_unit_redoes_them(tmp_path, capsys):
    run = tmp_path / "units" / "r1"
    run.mkdir(parents=True)
    per_user = per_user_frame()
    users = np.arange(1, 41)  # 8 request texts, 3 genres among the 40 users
    requests = pd.DataFrame({"user_id": users, "kind": "genre",
                             "genre": [f"g{u % 3}" for u in users],
                             "text": [f"request {u % 8}" for u in users]})
    requests.to_parquet(run / "requests.parquet", index=False)
    per_user.to_parquet(run / "per_user.parquet", index=False)
    cells = tables.cells_table(per_user, "0123456789abcdef")
    cells.to_parquet(run / "cells.parquet", index=False)
    m = {**manifest("units"), "suite": {**manifest("units")["suite"],
                                        "statistics": {"unit": "request", "resamples": 500}}}
    provenance.write_json(run / "manifest.json", m)
    write_reports(run, m, cells, per_user)
    summary = (run / "summary.md").read_text()
    assert "95% interval, clusters: request text (8)" in summary  # Table 1
    assert "95% interval and p-value, clusters: request text (8)" in summary  # paired
    assert "clusters: request text" in (run / "report.html").read_text()
    assert set(pd.read_csv(run / "table1.csv").unit) == {"request"}
    assert set(pd.read_csv(run / "pareto.csv").unit) == {"request"}
    by_request = pd.read_csv(run / "paired.csv")
    assert cli.main(["report", str(run), "--unit", "genre"]) == 0
    assert "95% interval, clusters: requested genre (3)" in (run / "summary.md").read_text()
    by_genre = pd.read_csv(run / "paired.csv")
    assert set(by_genre.n_clusters) == {3} and (by_genre["diff"] == by_request["diff"]).all()
    assert not np.allclose(by_genre.ci_low, by_request.ci_low)
    board, _ = collect_all(tmp_path)
    assert set(board.ci_clusters) == {"requested genre (3)"}
    requests.assign(genre=None).to_parquet(run / "requests.parquet", index=False)
    capsys.readouterr()
    assert cli.main(["report", str(run), "--unit", "genre"]) == 2  # open-ended: no genre
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no genre" in err[0] and "allowed here: request, user" in err[0]


def test_statistics_unit_is_checked_in_the_suite():
    from bench.suitefile import SuiteError, load_suite

    assert load_suite("suites/genre_untrained.yaml", []).statistics.unit == "request"
    same = load_suite("suites/genre_untrained.yaml", ["statistics.unit=genre"])
    assert same.config_hash() == load_suite("suites/genre_untrained.yaml", []).config_hash()
    with pytest.raises(SuiteError) as err:
        load_suite("suites/genre_untrained.yaml", ["statistics.unit=team"])
    text = str(err.value)
    assert "\n" not in text and "statistics.unit" in text and "team" in text and "genre" in text
    from bench.checks import preflight
    with pytest.raises(SuiteError, match="open_ended requests name no genre"):  # before the run
        preflight(load_suite("suites/open_ended.yaml", ["statistics.unit=genre"]), "o.yaml")
