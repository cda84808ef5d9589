"""`bench run` end to end through Ray on the smoke suite: real data, BiVAE, MiniLM embeddings."""

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

pytestmark = pytest.mark.slow  # Ray runs end to end


def bench(*args, cache, cwd):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "RAY_AUTH_MODE": "disabled"}
    return subprocess.run([sys.executable, "-m", "bench.cli", *args, "--cache-dir", str(cache)],
                          capture_output=True, text=True, env=env, cwd=cwd, timeout=600)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    suite = os.path.join(repo, "suites", "smoke.yaml")
    out = {}
    p = bench("run", suite, "--workers", "2", "--out", str(root / "two"), "--run-id", "r",
              cache=root / "cache-two", cwd=repo)
    assert p.returncode == 0, p.stderr[-2000:]
    out["two"] = root / "two" / "smoke" / "r"
    # a warm rerun of the same suite: everything comes from the cache, so Ray is not started
    p = bench("run", suite, "--workers", "2", "--out", str(root / "warm"), "--run-id", "r",
              cache=root / "cache-two", cwd=repo)
    assert p.returncode == 0, p.stderr[-2000:]
    out["warm"], out["warm_stdout"] = root / "warm" / "smoke" / "r", p.stdout
    # again, with one cached entry damaged: the run finds it, starts Ray and recomputes it
    (entry,) = (root / "cache-two" / "requests").iterdir()
    for f in entry.glob("*.parquet"):
        f.write_bytes(f.read_bytes()[:-9])
    p = bench("run", suite, "--workers", "2", "--out", str(root / "repair"), "--run-id", "r",
              cache=root / "cache-two", cwd=repo)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "stage cache entry of requests" in p.stderr and "corrupt" in p.stderr
    out["repair"] = root / "repair" / "smoke" / "r"
    return out


def test_outputs_exist_and_are_sane(runs):
    d = runs["two"]
    for f in ("cells.parquet", "recommendations.parquet", "summary.md", "manifest.json",
              "curves.png", "requests.parquet", "table1.csv", "pareto_k5.png", "pareto_k10.png",
              "per_user.parquet", "report.html", "paired.csv"):
        assert (d / f).stat().st_size > 0, f
    cells = pd.read_parquet(d / "cells.parquet")
    assert set(cells.metric) == {"genre_accuracy", "precision", "recall", "ndcg"}
    assert len(cells) == 16 * 4 and (cells.n_users == 30).all()
    assert cells["mean"].between(0, 1).all() and cells.config_hash.nunique() == 1
    acc = cells[(cells.metric == "genre_accuracy") & (cells.k == 5) & (cells.aggregation == "rank")]
    acc = acc.set_index("w_control")["mean"]
    assert acc[1.0] > acc[0.0] + 0.3          # control raises genre accuracy a lot
    prec = cells[(cells.metric == "precision") & (cells.k == 5) & (cells.aggregation == "rank")]
    prec = prec.set_index("w_control")["mean"]
    assert prec[0.0] > prec[1.0]              # at some cost in engagement


def test_recommendations_exclude_train_items_and_match_k(runs, split):
    recs = pd.read_parquet(runs["two"] / "recommendations.parquet")
    assert set(recs.k) == {5, 10} and (recs["items"].map(len) == recs.k).all()
    train = set(zip(split.train.user_id, split.train.item_id))
    assert not any((u, i) in train for u, items in zip(recs.user_id, recs["items"]) for i in items)
    assert recs["items"].map(lambda x: len(set(x)) == len(x)).all()


def test_manifest_records_config_versions_and_timings(runs):
    m = json.loads((runs["two"] / "manifest.json").read_text())
    assert m["suite"]["name"] == "smoke" and m["suite"]["engagement"]["epochs"] == 20
    assert m["versions"]["cornac"] and m["versions"]["ray"] and m["versions"]["torch"]
    assert m["data_source"] in ("wheel", "cache", "grouplens", "folder")
    assert m["ray"]["workers"] == 2
    assert not any(s["cached"] for s in m["stages"].values())
    assert m["stages"]["engagement"]["seconds"] > 0
    warm = json.loads((runs["warm"] / "manifest.json").read_text())
    assert all(s["cached"] for s in warm["stages"].values())
    assert warm["ray"]["started"] is False and "Ray not started" in runs["warm_stdout"]
    repair = json.loads((runs["repair"] / "manifest.json").read_text())
    assert repair["ray"]["ray_version"] and repair["ray"]["workers"] == 2  # started after all
    assert [k for k, s in repair["stages"].items() if not s["cached"]] == ["requests"]
    assert isinstance(m["git"]["dirty"], bool) and m["git_commit"].startswith(m["git"]["commit"])


def test_dry_run_finds_every_stage_cached(runs):
    """Cache entries record their code hash and input keys; with the code unchanged a dry run
    finds every step cached and none out of date."""
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    p = bench("run", os.path.join(repo, "suites", "smoke.yaml"), "--dry-run",
              cache=runs["two"].parents[2] / "cache-two", cwd=repo)
    assert p.returncode == 0, p.stderr[-2000:]
    steps = [line for line in p.stdout.splitlines() if line.startswith("#   ")]
    assert steps and all(line.endswith("cached") for line in steps)
    assert "out of date" not in p.stdout


def test_same_numbers_warm(runs):
    cols = ["method", "context", "aggregation", "w_control", "k", "metric", "mean", "se"]
    two = pd.read_parquet(runs["two"] / "cells.parquet")[cols]
    pd.testing.assert_frame_equal(two, pd.read_parquet(runs["warm"] / "cells.parquet")[cols])
    pd.testing.assert_frame_equal(two, pd.read_parquet(runs["repair"] / "cells.parquet")[cols])
    a = pd.read_parquet(runs["two"] / "recommendations.parquet")
    b = pd.read_parquet(runs["warm"] / "recommendations.parquet")
    assert all(np.array_equal(x, y) for x, y in zip(a["items"], b["items"]))


def test_bad_suite_is_one_line_and_exit_2(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nmethods: [{name: untrained}]\nw_control: [0.5, 2]\n")
    p = bench("run", str(bad), cache=tmp_path / "c", cwd=tmp_path)
    assert p.returncode == 2
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "w_control[1]" in lines[0] and str(bad) in lines[0]


def test_leaderboard_lists_every_method_of_a_run(runs):
    from bench.leaderboard import collect, write

    root = runs["two"].parent.parent  # <out>/smoke/r -> <out>
    df = collect(root, include_dirty=True)  # the run is as dirty as the checkout testing it
    assert set(df.method) == {"untrained"} and set(df.aggregation) == {"rank", "minmax"}
    assert set(df.k) == {5, 10} and (df.users == 30).all()
    assert "| smoke " in write(root, include_dirty=True) and (root / "leaderboard.md").exists()


def test_bench_show_on_the_smoke_run(runs, capsys):
    """`bench show` from the run's cached stages: one table per w with k rows; w=0 is the
    engagement order, w=1 the request order; an unknown user is one line and exit 2. In this
    process (the command line itself is tested in tests/test_report.py): a new interpreter cost
    ~10 s of imports."""
    from bench import cli

    args = ["show", "--run", str(runs["two"]), "--user", "196",
            "--request", "a good movie for a fun night with my 8 year old kids", "--w", "0,1",
            "--k", "4"]
    assert cli.main(args) == 0
    sections = capsys.readouterr().out.split("### w_control = ")[1:]
    assert [s.split()[0] for s in sections] == ["0", "1"]
    for s, col in zip(sections, ("engagement rank", "request rank")):
        rows = [line for line in s.splitlines() if line.startswith("|") and "---" not in line]
        header = [c.strip() for c in rows[0].strip("|").split("|")]
        assert header == ["#", "title", "genres", "request rank", "engagement rank",
                          "combined score"]
        body = [[c.strip() for c in r.strip("|").split("|")] for r in rows[1:]]
        assert len(body) == 4
        assert [int(r[header.index(col)]) for r in body] == [1, 2, 3, 4]
    assert cli.main(args[:4] + ["99999"] + args[5:]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "no such user" in err
