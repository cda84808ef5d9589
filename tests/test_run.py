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
    # (another worker count: the 3-node test below runs the same suite with 3 workers)
    p = bench("run", suite, "--workers", "2", "--out", str(root / "two"), "--run-id", "r",
              cache=root / "cache-two", cwd=repo)
    assert p.returncode == 0, p.stderr[-2000:]
    out["two"] = root / "two" / "smoke" / "r"
    # a warm rerun of the same suite: everything comes from the cache
    p = bench("run", suite, "--workers", "2", "--out", str(root / "warm"), "--run-id", "r",
              cache=root / "cache-two", cwd=repo)
    assert p.returncode == 0, p.stderr[-2000:]
    out["warm"] = root / "warm" / "smoke" / "r"
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


def test_same_numbers_warm(runs):
    cols = ["method", "context", "aggregation", "w_control", "k", "metric", "mean", "se"]
    two = pd.read_parquet(runs["two"] / "cells.parquet")[cols]
    pd.testing.assert_frame_equal(two, pd.read_parquet(runs["warm"] / "cells.parquet")[cols])
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
    df = collect(root)
    assert set(df.method) == {"untrained"} and set(df.aggregation) == {"rank", "minmax"}
    assert set(df.k) == {5, 10} and (df.users == 30).all()
    assert "| smoke " in write(root) and (root / "leaderboard.md").exists()


def test_bench_show_on_the_smoke_run(runs):
    """`bench show` from the run's cached stages: one table per w with k rows; w=0 is the
    engagement order, w=1 the request order; an unknown user is one line and exit 2."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    cmd = [sys.executable, "-m", "bench.cli", "show", "--run", str(runs["two"]), "--user", "196",
           "--request", "a good movie for a fun night with my 8 year old kids", "--w", "0,1",
           "--k", "4"]
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=repo, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    sections = p.stdout.split("### w_control = ")[1:]
    assert [s.split()[0] for s in sections] == ["0", "1"]
    for s, col in zip(sections, ("engagement rank", "request rank")):
        rows = [line for line in s.splitlines() if line.startswith("|") and "---" not in line]
        header = [c.strip() for c in rows[0].strip("|").split("|")]
        assert header == ["#", "title", "genres", "request rank", "engagement rank",
                          "combined score"]
        body = [[c.strip() for c in r.strip("|").split("|")] for r in rows[1:]]
        assert len(body) == 4
        assert [int(r[header.index(col)]) for r in body] == [1, 2, 3, 4]
    bad = subprocess.run(cmd[:7] + ["99999"] + cmd[8:], capture_output=True, text=True, env=env,
                         cwd=repo, timeout=300)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1
    assert "no such user" in bad.stderr



@pytest.fixture
def ray_cluster(monkeypatch):
    """A real three-node Ray cluster on this machine (head + 2 workers, 1 CPU each), with its own
    temp folder so that no other Ray user on the machine finds it."""
    import shutil
    import tempfile

    tmp = tempfile.mkdtemp(prefix="rc", dir="/tmp")  # short: Ray puts sockets there
    monkeypatch.setenv("RAY_TMPDIR", tmp)
    from ray.cluster_utils import Cluster

    node = dict(num_cpus=1, object_store_memory=100 * 1024**2)
    cluster = Cluster(initialize_head=True, head_node_args={**node, "include_dashboard": False})
    for _ in range(2):
        cluster.add_node(**node)
    cluster.wait_for_nodes()
    yield cluster
    cluster.shutdown()
    shutil.rmtree(tmp, ignore_errors=True)


def test_multi_node_cluster_gives_the_single_node_results(runs, ray_cluster, tmp_path):
    """`--address` of a 3-node cluster: tasks land on several nodes; results equal, bit for bit,
    the single-node run of the same suite (outputs travel back to the driver, which caches)."""
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    p = bench("run", os.path.join(repo, "suites", "smoke.yaml"), "--address", ray_cluster.address,
              "--out", str(tmp_path / "out"), "--run-id", "r", cache=tmp_path / "cache", cwd=repo)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "resources: 3 node(s), 3 CPU" in p.stdout
    d = tmp_path / "out" / "smoke" / "r"
    m = json.loads((d / "manifest.json").read_text())
    assert m["ray"]["nodes"] == 3 and m["ray"]["workers"] == 3
    nodes = {t["node_id"] for t in m["stages"].values()}
    assert len(nodes) > 1, nodes
    one = runs["two"]
    pd.testing.assert_frame_equal(pd.read_parquet(one / "cells.parquet"),
                                  pd.read_parquet(d / "cells.parquet"))
    a, b = pd.read_parquet(one / "recommendations.parquet"), pd.read_parquet(d / "recommendations.parquet")
    pd.testing.assert_frame_equal(a.drop(columns="items"), b.drop(columns="items"))
    assert all(np.array_equal(x, y) for x, y in zip(a["items"], b["items"]))


def test_llm_stages_give_the_same_files_with_one_or_two_llm_workers(tmp_path, tiny_model_dir):
    """Request writing (generate), direct scoring with and without user context and the judge
    (rate), all served by a pool of LLM workers (tiny random Qwen2). Shards are fixed by content,
    so 1 and 2 workers give identical files, and the manifest says what each worker did.
    Resuming from the answer cache end to end (stages gone, answers kept) is in
    tests/test_faults.py. The distillation stages call their LLM through the same pool; they are
    left out only to keep the test short (MiniLM and the student would double its time)."""
    llm = (f'{{model: "{tiny_model_dir}", dtype: float32, batch_size: 4, threads: 1, '
           f'shard_size: 8}}')
    suite = tmp_path / "pool.yaml"
    suite.write_text(f"""
name: pool_tiny
users: 4
engagement: {{model: popularity}}
requests: {{kind: genre, generator: llm, llm: {llm}}}
pool: {{kind: shortlist, engagement: 6, untrained: 0}}
methods:
  - name: direct
    llm: {llm}
contexts: [none, "history:3"]
judge: {{llm: {llm}, k: [5], ws: [0.0, 1.0], mass_threshold: 0.0}}
w_control: [0.0, 0.5, 1.0]
k: [5]
""")
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    files = {}
    for n in (1, 2):
        sets = [f"--set={path}.workers={n}" for path in ("requests.llm", "methods.0.llm",
                                                         "judge.llm")]
        p = bench("run", str(suite), "--workers", "2", "--out", str(tmp_path / "out"),
                  "--run-id", f"w{n}", *sets, cache=tmp_path / f"cache{n}", cwd=repo)
        assert p.returncode == 0, p.stderr[-2000:]
        folder = tmp_path / "out" / "pool_tiny" / f"w{n}"
        files[n] = [pd.read_parquet(folder / f).drop(columns="config_hash", errors="ignore")
                    for f in ("cells.parquet", "requests.parquet")]  # the hash holds `workers`
        manifest = json.loads((folder / "manifest.json").read_text())
        stats = manifest["llm"]["values[direct,none]"]
        assert stats["llm_calls"] > 0 and stats["cache_hits"] == 0
        pools = manifest["llm_pools"]
        assert pools and all(p["workers"] == n for p in pools)
        served = {s: [w["prompts"] for w in p["worker_stats"]] for p in pools for s in p["steps"]}
        assert sum(served["values[direct,none]"]) > 0 and sum(served["judge"]) > 0
        if n == 2:  # 24 prompts in shards of 8: both workers answered some
            assert all(x > 0 for x in served["values[direct,none]"])
    assert "judge" in set(files[1][0].metric)
    assert set(files[1][0].context) == {"none", "history:3"}
    for a, b in zip(files[1], files[2]):
        pd.testing.assert_frame_equal(a, b)
