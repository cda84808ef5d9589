"""Several seeds in one suite (`seeds: [0, 1]`): the plan repeats exactly the seeded stages and
shares the rest, old `seed:` suites keep their keys, bad seed lists are one-line errors, the
report's mean ± sd over seeds is right on constructed tables, and a tiny run of two seeds gives
two different outcomes from one dataset and one set of item embeddings."""

import importlib
import json
import textwrap

import numpy as np
import pandas as pd
import pytest

from bench.plan import build_plan
from bench.report import seeds as by_seed
from bench.seeds import seed_steps, split_label
from bench.suitefile import SuiteError, load_suite

BASE = """
name: t
users: 40
methods: [{name: untrained}, {name: distilled}]
pool: {kind: shortlist, engagement: 5, random: 5}
w_control: [0.0, 0.5, 1.0]
k: [5]
"""


def suite_of(tmp_path, extra=""):
    p = tmp_path / "s.yaml"
    p.write_text(textwrap.dedent(BASE) + extra)
    return load_suite(p)


def plan_of(suite):
    return {s.label: s for s in build_plan(suite, 40)}


def test_two_seeds_repeat_the_seeded_stages_and_share_the_rest(tmp_path):
    plan = plan_of(suite_of(tmp_path, "seeds: [0, 1]\n"))
    shared = {label for label in plan if split_label(label)[1] is None}
    # the embeddings' label names their dtype where `auto` resolves to bf16 (native-bf16 CPUs)
    (embeddings,) = {label for label in plan if label.startswith("item_embeddings[")}
    assert shared == {"dataset", embeddings}
    repeated = {split_label(label)[0] for label in plan} - shared
    assert repeated == {"engagement", "requests", "pool", "train_requests", "teacher_labels",
                        "student", "values[untrained]", "values[distilled]",
                        "sweep[untrained,rank,0:40]", "sweep[untrained,rank,all,0:40]",
                        "sweep[distilled,rank,0:40]", "sweep[distilled,rank,all,0:40]"}
    assert len(plan) == len(shared) + 2 * len(repeated)
    for seed in (0, 1):
        steps = seed_steps(list(plan.values()), seed)
        for name in ("engagement", "requests", "pool", "train_requests", "teacher_labels",
                     "student"):  # every seeded stage gets this seed, and only this one
            assert steps[name].config["seed"] == seed, name
        # inputs: this seed's steps and the shared ones, never the other seed's
        other = f"@s{1 - seed}"
        assert not any(d.endswith(other) for s in steps.values() for d in s.deps)
        assert steps["values[untrained]"].deps == [embeddings, f"requests@s{seed}"]
    assert plan["engagement@s0"].key != plan["engagement@s1"].key
    assert len({s.key for s in plan.values()}) == len(plan)


def test_old_seed_suites_keep_their_plan_keys_and_hash(tmp_path):
    plain, old, new = (suite_of(tmp_path, x) for x in ("", "seed: 0\n", "seeds: [0]\n"))
    assert plain.seeds == old.seeds == new.seeds == [0]
    assert plain.config_hash() == old.config_hash() == new.config_hash()
    assert old.model_dump(mode="json")["seed"] == 0 and "seeds" not in old.model_dump()
    steps = [[(s.label, s.key) for s in build_plan(x, 40)] for x in (plain, old, new)]
    assert steps[0] == steps[1] == steps[2]
    assert not any("@s" in label for label, _ in steps[0])  # single seed: labels as before
    one = dict(steps[0])
    assert one["student"] and plan_of(old)["student"].config["seed"] == 0
    # seed 0 of a run of several reuses the single-seed cache entries, step for step
    two = plan_of(suite_of(tmp_path, "seeds: [0, 2]\n"))
    for label, key in one.items():
        assert (two[label] if label in two else two[f"{label}@s0"]).key == key, label
    # an old suite with another seed: every seeded stage, distillation included, follows it
    three = plan_of(suite_of(tmp_path, "seed: 3\n"))
    assert three["student"].config["seed"] == three["engagement"].config["seed"] == 3
    assert three["dataset"].key == one["dataset"] and three["engagement"].key != one["engagement"]


def test_multi_seed_suite_round_trips_through_its_dump(tmp_path):
    from bench.suite import Suite
    suite = suite_of(tmp_path, "seeds: [2, 0, 1]\n")
    dump = suite.model_dump(mode="json")
    assert dump["seeds"] == [2, 0, 1] and "seed" not in dump
    again = Suite.model_validate(dump)  # as `bench show` reads a manifest
    assert again.seeds == [2, 0, 1] and again.config_hash() == suite.config_hash()
    assert suite.config_hash() != suite_of(tmp_path, "seeds: [2, 0]\n").config_hash()


@pytest.mark.parametrize("extra,words", [
    ("seeds: []\n", ["seeds:", "at least one seed", "(got [])"]),
    ("seeds: [1, 2, 1]\n", ["seeds:", "each seed once", "1 appears twice", "(got [1, 2, 1])"]),
    ("seed: 0\nseeds: [0, 1]\n", ["seeds:", "not both", "seed is 0", "(got [0, 1])"]),
    ("seeds: [0, -1]\n", ["seeds[1]:", "greater than or equal to 0", "(got -1)"]),
    ("seeds: 3\n", ["seeds:", "valid list", "(got 3)"]),
])
def test_bad_seed_lists_are_one_line_errors(tmp_path, extra, words):
    with pytest.raises(SuiteError) as err:
        suite_of(tmp_path, extra)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(str(tmp_path / "s.yaml"))
    assert all(w in msg for w in words), msg


def test_mean_and_sd_over_seeds_on_constructed_rows():
    rows = []
    for seed, sat, lo, prec in ((5, 0.50, 0.40, 0.30), (1, 0.60, 0.55, 0.20),
                                (2, 0.70, 0.65, 0.10)):
        for method, shift in (("untrained", 0.0), ("direct", 0.2)):
            rows.append({"method": method, "context": "none", "aggregation": "rank",
                         "pool": "all", "k": 5, "max_satisfaction": sat + shift,
                         "ci_low": lo + shift, "ci_high": lo + shift + 0.1, "w_control": 0.9,
                         "precision": prec, "unit": "request", "n_clusters": 30 + seed,
                         "seed": seed})
    t1 = by_seed.over_seeds(pd.DataFrame(rows), by_seed.TABLE1).set_index("method")
    assert t1.loc["direct", "max_satisfaction"] == pytest.approx(0.8)
    assert t1.loc["direct", "max_satisfaction_sd"] == pytest.approx(0.1)  # sample sd
    assert t1.loc["untrained", "precision_sd"] == pytest.approx(0.1)
    assert t1.loc["untrained", "w_control_sd"] == pytest.approx(0.0)
    # intervals and cluster counts are the first seed's (5: first in run order), not averaged
    assert t1.loc["untrained", ["ci_low", "ci_high"]].tolist() == pytest.approx([0.40, 0.50])
    assert t1.loc["direct", "n_clusters"] == 35 and (t1.n_seeds == 3).all()
    assert list(t1.index) == ["untrained", "direct"]  # the per-seed order
    shown = by_seed.with_spread(t1.reset_index()).set_index("method")
    assert shown.loc["direct", "max_satisfaction"] == "0.800 ± 0.100"
    # one seed: the table as a single run gives it, without the seed column
    one = pd.DataFrame(rows[:2])
    pd.testing.assert_frame_equal(by_seed.over_seeds(one, by_seed.TABLE1),
                                  one.drop(columns="seed"))


def test_a_first_seed_interval_left_nan_stays_nan_not_the_next_seeds():
    # seed 0 has a single cluster: no interval, no test; seeds 1 and 2 have both
    keys = {"method": "direct", "context": "none", "aggregation": "rank", "pool": "all", "k": 5}
    t1 = by_seed.over_seeds(pd.DataFrame({
        **keys, "max_satisfaction": [0.5, 0.6, 0.7], "ci_low": [np.nan, 0.4, 0.45],
        "ci_high": [np.nan, 0.7, 0.75], "unit": "request", "n_clusters": [1, 12, 13],
        "seed": [0, 1, 2]}), by_seed.TABLE1)
    row = t1.iloc[0]
    assert np.isnan(row.ci_low) and np.isnan(row.ci_high) and row.n_clusters == 1
    assert row.max_satisfaction == pytest.approx(0.6)  # means still over every seed
    pairs = by_seed.over_seeds(pd.DataFrame({
        **{c: keys[c] for c in ("context", "aggregation", "pool", "k")}, "method_a": "direct",
        "method_b": "untrained", "diff": [0.1, 0.2, 0.3], "ci_low": [np.nan, 0.1, 0.2],
        "ci_high": [np.nan, 0.3, 0.4], "p_value": [np.nan, 0.01, 0.02], "n_clusters": [1, 12, 13],
        "seed": [0, 1, 2]}), by_seed.PAIRED)
    assert pairs[["ci_low", "ci_high", "p_value"]].isna().all(axis=None)
    pareto = by_seed.over_seeds(pd.DataFrame({
        **keys, "area_vs_precision": [0.5, 0.6, 0.7], "area_ci_low": [np.nan, 0.4, 0.5],
        "area_ci_high": [np.nan, 0.8, 0.9], "seed": [0, 1, 2]}), by_seed.PARETO)
    assert pareto[["area_ci_low", "area_ci_high"]].isna().all(axis=None)
    # the report's table shows the gap under the first seed's header
    from bench.report.render import html_rows
    from bench.report.sections import table1_section
    table = table1_section("genre_accuracy", by_seed.with_spread(t1)).tables[0]
    shown = dict(zip(table.frame.columns, html_rows(table)[0]))
    assert shown["ci_low (first seed)"] == shown["ci_high (first seed)"] == "–"


def test_selected_w_and_plot_cells_average_over_seeds():
    from bench.report.tables import selected_w
    cells = pd.DataFrame([{"method": "untrained", "context": "none", "aggregation": "rank",
                           "pool": "all", "w_control": w, "k": 5, "metric": m,
                           "mean": base + 0.1 * seed, "se": 0.01, "n_users": 10, "seed": seed}
                          for seed in (0, 1) for w in (0.0, 1.0)
                          for m, base in (("genre_accuracy", 0.4 + w / 2), ("precision", 0.2))])
    table = selected_w(cells).set_index("w_control")
    assert table.loc[1.0, "genre_accuracy"] == f"0.950 ± {np.std([0.9, 1.0], ddof=1):.3f}"
    assert table.loc[0.0, "precision"] == f"0.250 ± {np.std([0.2, 0.3], ddof=1):.3f}"
    drawn, n = by_seed.seed_mean_cells(cells)
    assert n == 2 and len(drawn) == 4
    row = drawn[(drawn.metric == "precision") & (drawn.w_control == 0.0)].iloc[0]
    assert row["mean"] == pytest.approx(0.25) and 1.96 * row.se == pytest.approx(
        np.std([0.2, 0.3], ddof=1))


@pytest.mark.slow  # the plan's stages in this process on MovieLens (a tiny encoder, no Ray)
def test_two_seeds_give_two_outcomes_from_shared_inputs(tmp_path, tiny_encoder_dir):
    from bench.leaderboard import collect_all
    from bench.outputs import rebuild, write_run
    from bench.runner import RunResult
    from bench.show import show

    (tmp_path / "s.yaml").write_text(textwrap.dedent(f"""
        name: seeds
        seeds: [0, 1]
        users: 12
        engagement: {{model: popularity}}
        methods: [{{name: untrained, model: {tiny_encoder_dir}}}]
        w_control: [0.0, 0.5, 1.0]
        k: [5]
        statistics: {{resamples: 200, permutations: 200}}
        """))
    suite = load_suite(tmp_path / "s.yaml")
    plan = build_plan(suite, 12)
    out, ran = {}, []
    for step in plan:
        module, name = step.fn.split(":")
        fn = getattr(importlib.import_module(module), name)
        out[step.label] = fn(step.config, *[out[d] for d in step.deps])
        ran.append(step.label)
    assert ran.count("dataset") == 1 and sum(x.startswith("item_embeddings") for x in ran) == 1
    first, second = (out[f"requests@s{s}"]["requests"] for s in (0, 1))
    assert set(first.user_id) != set(second.user_id)  # each seed samples its own users
    run = tmp_path / "out" / "seeds" / "r"
    run.mkdir(parents=True)
    (tmp_path / "cache").mkdir()  # where `bench show` caches what it computes
    write_run(run, suite, plan, RunResult(outputs=out),
              {"run_id": "r", "cache_dir": str(tmp_path / "cache")}, 1.0)

    cells = pd.read_parquet(run / "cells.parquet")
    assert set(cells.seed) == {0, 1} and (cells.n_users == 12).all()
    acc = cells[(cells.metric == "genre_accuracy") & (cells.pool == "all")].pivot_table(
        index="w_control", columns="seed", values="mean")
    assert not np.allclose(acc[0], acc[1])  # two seeds, two outcomes
    for f in ("recommendations.parquet", "requests.parquet", "per_user.parquet"):
        assert set(pd.read_parquet(run / f).seed) == {0, 1}, f
    t1 = pd.read_csv(run / "table1.csv")
    assert sorted(t1.seed) == [0, 1]
    summary = (run / "summary.md").read_text()
    assert "Mean ± sd over 2 seeds" in summary and "ci_low (first seed)" in summary
    assert f"{t1.max_satisfaction.mean():.3f} ± {t1.max_satisfaction.std():.3f}" in summary
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["seeds"]["runs"] == [0, 1] and "engagement" in manifest["seeds"][
        "per_seed_stages"] and "dataset" not in manifest["seeds"]["per_seed_stages"]
    assert manifest["suite"]["seeds"] == [0, 1] and manifest["n_users"] == 12
    board, skipped = collect_all(tmp_path / "out", include_dirty=True)
    assert not skipped and len(board) == 1 and board.seeds[0] == 2
    assert board.max_satisfaction[0] == pytest.approx(t1.max_satisfaction.mean())
    assert board.sd_seeds[0] == pytest.approx(t1.max_satisfaction.std())
    before = t1.to_csv(index=False)
    assert "report.html" in rebuild(run)  # `bench report` on the folder
    assert pd.read_csv(run / "table1.csv").to_csv(index=False) == before
    text = show(str(run), 1, "a funny movie", [0.0, 1.0], k=3)  # the first seed's inputs
    assert f"run {run}, seed 0" in text and text.count("### w_control") == 2
