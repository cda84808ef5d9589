"""The LLM worker pool end to end (bench/llmpool.py): request writing, direct scoring with and
without user context, distillation (training requests, teacher labels) and the judge, all served
by one pool of a tiny random Qwen2, with a tiny random sentence encoder for the student. Shards
are fixed by content, so 1 worker and 2 workers spread over a two-node Ray cluster give
identical files. Both runs come from `bench scale --address`, whose report and projection are
checked on them. Two workers, one of them killed mid-stage, are in tests/test_faults.py."""

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd
import pytest
from test_scaling import JUDGE  # the paper suite's judge, which suites/gpu/genre.yaml lacks

pytestmark = pytest.mark.slow  # Ray runs end to end

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LLM_PATHS = ("requests.llm", "methods.0.llm", "methods.1.distill.teacher", "judge.llm")


@pytest.fixture(scope="module")
def suite(tmp_path_factory, tiny_model_dir, tiny_encoder_dir):
    llm = (f'{{model: "{tiny_model_dir}", dtype: float32, batch_size: 4, threads: 1, '
           f'shard_size: 8}}')
    f = tmp_path_factory.mktemp("suite") / "pool.yaml"
    f.write_text(f"""
name: pool_tiny
users: 4
engagement: {{model: popularity}}
requests: {{kind: genre, generator: llm, llm: {llm}}}
pool: {{kind: shortlist, engagement: 6, untrained: 0}}
methods:
  - name: direct
    llm: {llm}
  - name: distilled
    model: "{tiny_encoder_dir}"
    distill: {{teacher: {llm}, batches: 1, per_batch: 2, parallel: 1, own_requests: 6,
               items_per_request: 6, epochs: 1, threads: 1, mass_threshold: 0.0}}
contexts: [none, "history:3"]
judge: {{llm: {llm}, k: [5], ws: [0.0, 1.0], mass_threshold: 0.0}}
w_control: [0.0, 0.5, 1.0]
k: [5]
""")
    return f


def files(folder):
    # the config hash holds `workers`
    return [pd.read_parquet(folder / f).drop(columns="config_hash", errors="ignore")
            for f in ("cells.parquet", "requests.parquet")]


def served(manifest) -> dict:
    """stage -> (prompts the pool answered for it, its workers' processes), as the stage counted
    them: a worker that Ray restarts (e.g. when a loaded node runs short of memory) loses its own
    counters, the stage's counts stay."""
    (pool,) = manifest["llm_pools"]  # one model, one way of loading it: one pool for all stages
    return {s: (manifest["llm"][s]["pool_work"]["prompts"],
                manifest["llm"][s]["pool_work"]["worker_pids"]) for s in pool["steps"]}


@pytest.fixture(scope="module")
def ray_tmp():
    tmp = tempfile.mkdtemp(prefix="rc", dir="/tmp")  # short: Ray puts sockets there
    yield tmp
    shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="module")
def ray_cluster(ray_tmp):
    """A real two-node Ray cluster on this machine (head + a worker node, 3 logical CPUs each),
    with its own temp folder so that no other Ray user on the machine finds it. (Three nodes
    showed nothing more and cost more CPU: this module alone under scripts/cpu_by_process.py,
    253 CPU-seconds in 175 s with three, 216 in 156 s with two, on a 2-core AVX2 CPU.)"""
    old = os.environ.get("RAY_TMPDIR")
    os.environ["RAY_TMPDIR"] = ray_tmp
    from ray.cluster_utils import Cluster

    node = dict(num_cpus=3, object_store_memory=80 * 1024**2)
    cluster = Cluster(initialize_head=True, head_node_args={**node, "include_dashboard": False})
    cluster.add_node(**node)
    cluster.wait_for_nodes()
    yield cluster
    cluster.shutdown()
    if old is None:
        os.environ.pop("RAY_TMPDIR", None)
    else:
        os.environ["RAY_TMPDIR"] = old


@pytest.fixture(scope="module")
def scaled(suite, ray_cluster, ray_tmp, tmp_path_factory):
    """`bench scale --workers 1,2 --address` of the cluster: the suite cold with 1 and with 2 LLM
    workers (each run with caches of its own), the scaling report, and each run's files under
    runs/w<N>/."""
    root = tmp_path_factory.mktemp("scale")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "RAY_AUTH_MODE": "disabled",
           "RAY_TMPDIR": ray_tmp, "CTRLREC_LLM_CACHE": str(root / "never.sqlite")}
    p = subprocess.run([sys.executable, "-m", "bench.cli", "scale", str(suite), "--workers", "1,2",
                        "--address", ray_cluster.address, "--out", str(root / "scaling")],
                       capture_output=True, text=True, cwd=REPO, check=False, timeout=900, env=env)
    assert p.returncode == 0, p.stderr[-3000:]
    assert not (root / "never.sqlite").exists()  # each run had an answer cache of its own
    out = root / "scaling"
    return out, {n: (out / "runs" / f"w{n}", json.loads(
        (out / "runs" / f"w{n}" / "manifest.json").read_text())) for n in (1, 2)}


def test_one_pool_serves_every_llm_stage(scaled):
    folder, m = scaled[1][1]
    work = served(m)
    for stage in ("requests", "values[direct,none]", "values[direct,history:3]",
                  "train_requests", "teacher_labels", "judge"):
        prompts, pids = work[stage]
        assert prompts > 0 and pids, stage
    assert m["llm"]["teacher_labels"]["llm_calls"] > 0
    cells = files(folder)[0]
    assert {"direct", "distilled"} <= set(cells.method) and "judge" in set(cells.metric)


def test_two_workers_on_two_nodes_give_the_files_of_one(scaled):
    """The pool of 2 workers spreads one per node and lives through the run (the other stages
    fit beside it); shards are answered on every node, where each stage ran is recorded, and the
    files equal the 1-worker run bit for bit (outputs travel back to the driver, which caches)."""
    (one, _), (two, m) = scaled[1][1], scaled[1][2]
    assert m["ray"]["nodes"] == 2 and m["ray"]["cluster_cpus"] == 6
    assert all(t.get("node_id") for t in m["stages"].values())
    (pool,) = m["llm_pools"]
    assert pool["workers"] == 2 and pool["starts"] == 1, pool
    answering = {w["node_id"] for w in pool["worker_stats"] if w["prompts"] > 0}
    assert len(answering) == 2, pool["worker_stats"]
    for a, b in zip(files(one), files(two)):
        pd.testing.assert_frame_equal(a, b)


def test_bench_scale_report_and_projection(scaled):
    """The scaling table from the two cold runs, and `bench project` of the paper's suite from
    it (every number marked projected)."""
    from bench.cli import main
    from bench.scaling.report import LLM_ROW, TOTAL_ROW

    out, runs = scaled
    for f in ("table.md", "scaling.csv", "scaling.png", "scaling.json"):
        assert (out / f).stat().st_size > 0, f
    info = json.loads((out / "scaling.json").read_text())
    assert [r["workers"] for r in info["runs"]] == [1, 2] and info["git_commit"]
    assert info["machine"]["cpu_capability"] and info["llm_sections"] == list(LLM_PATHS)
    for run in info["runs"]:
        assert not any(s["cached"] for s in run["stages"].values())  # cold
        (pool,) = run["pools"]
        workers = [w for w in pool["worker_stats"] if w.get("prompts")]
        assert pool["workers"] == run["workers"] and len(workers) == run["workers"]
        assert all(w["load_seconds"] > 0 for w in workers)
    # the same prompts asked, whatever the worker count; how many the pool computed may differ:
    # answers already in a run's own cache are not computed again (a 1-worker run once found 24
    # of its 36 teacher-label prompts there, most likely left by an attempt Ray retried)
    asked = [sum(s.get("prompts") or 0 for s in runs[n][1]["llm"].values()) for n in (1, 2)]
    assert asked[0] == asked[1] > 0
    prompts = [sum(s["prompts"] or 0 for s in r["stages"].values() if s["llm"])
               for r in info["runs"]]
    assert min(prompts) > 0  # (a retried generation computes more prompts than were asked)
    csv = pd.read_csv(out / "scaling.csv")
    llm = csv[csv.stage == LLM_ROW].set_index("workers")
    assert (llm.wall_seconds > 0).all() and llm.prompts.tolist() == prompts
    assert llm.loc[2, "efficiency"] == pytest.approx(
        llm.loc[1, "wall_seconds"] / (2 * llm.loc[2, "wall_seconds"]))
    total = csv[csv.stage == TOTAL_ROW].set_index("workers").wall_seconds
    assert (total > llm.wall_seconds).all()
    assert "| 2 |" in (out / "table.md").read_text()

    res = Path(REPO) / "results"
    assert main(["project", str(out), "--set", JUDGE, "--gpus", "1,8",
                 "--suite", str(res.parent / "suites" / "gpu" / "genre.yaml"),
                 "--throughput", str(res / "throughput" / "h200-random-weight"),
                 "--sweep-run", str(res / "genre_untrained" / "reference"),
                 "--judge-run", str(res / "open_ended" / "avx512bf16")]) == 0
    text = (out / "projection.md").read_text()
    assert text.startswith("# PROJECTED") and "Serial fraction (Amdahl)" in text
    proj = pd.read_csv(out / "projection.csv")
    assert set(proj.basis) == {"projected"}
    walls = proj[proj.step == "TOTAL (wall)"].set_index("gpus").seconds
    assert walls[8] < walls[1]


def test_stopping_a_pool_waits_for_a_slow_worker_not_an_unstarted_one(ray_cluster, tiny_model_dir,
                                                                     monkeypatch):
    """A worker whose stats come late (a loaded machine can keep Ray from answering for a
    while) is waited for, since the scaling report is built from them; one that never got its
    CPUs is labelled so and holds nothing up."""
    import time

    import ray

    from bench import llmpool
    from bench.llmpool import LLMPools, LLMWorker

    monkeypatch.setattr(llmpool, "STATS_WAIT", (2.0, 30.0))

    class SlowToReport(LLMWorker):
        def info(self):
            time.sleep(4)  # longer than the first wait
            return super().info()

    ray.init(address=ray_cluster.address)
    try:
        args = ("hf", str(tiny_model_dir), {"dtype": "float32"}, 1)
        slow = ray.remote(SlowToReport).options(num_cpus=1).remote(*args)
        never = ray.remote(LLMWorker).options(num_cpus=100).remote(*args)  # no node has 100
        pools = LLMPools(cpus=9, gpus=0)
        pools.pools["p"] = {"starts": 1, "actors": [slow, never],
                            "pings": [a.ready.remote() for a in (slow, never)]}
        ray.get(slow.ready.remote(), timeout=60)
        t0 = time.monotonic()
        pools._stop("p")
        waited = time.monotonic() - t0
    finally:
        ray.shutdown()
    first, second = pools.pools["p"]["worker_stats"]
    assert first["pid"] and first["prompts"] == 0 and "note" not in first, first
    assert second == {"start": 1, "prompts": 0, "note": "not started"}
    assert 4 <= waited < 30
