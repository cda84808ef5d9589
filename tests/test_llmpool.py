"""The LLM worker pool end to end (bench/llmpool.py): request writing, direct scoring with and
without user context, distillation (training requests, teacher labels) and the judge, all served
by one pool of a tiny random Qwen2, with a tiny random sentence encoder for the student. Shards
are fixed by content, so 1 worker and 3 workers on a three-node cluster give identical files.
Two workers, one of them killed mid-stage, are in tests/test_faults.py."""

import json
import os
import shutil
import tempfile

import pandas as pd
import pytest

from test_run import bench

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


def run(suite, out, cache, workers: int, *extra):
    sets = [f"--set={path}.workers={workers}" for path in LLM_PATHS]
    p = bench("run", str(suite), "--out", str(out), "--run-id", f"w{workers}", *sets, *extra,
              cache=cache, cwd=REPO)
    assert p.returncode == 0, p.stderr[-3000:]
    folder = out / "pool_tiny" / f"w{workers}"
    return folder, json.loads((folder / "manifest.json").read_text()), p.stdout


def files(folder):
    # the config hash holds `workers`
    return [pd.read_parquet(folder / f).drop(columns="config_hash", errors="ignore")
            for f in ("cells.parquet", "requests.parquet")]


def served(manifest) -> dict:
    """stage -> prompts that each worker (of any start of the pool) answered for it."""
    (pool,) = manifest["llm_pools"]  # one model, one way of loading it: one pool for all stages
    return {s: [w.get("prompts_by_stage", {}).get(s, 0) for w in pool["worker_stats"]]
            for s in pool["steps"]}


@pytest.fixture(scope="module")
def one_worker(suite, tmp_path_factory):
    root = tmp_path_factory.mktemp("one")
    folder, m, _ = run(suite, root / "out", root / "cache", 1, "--workers", "2")
    return folder, m


def test_one_pool_serves_every_llm_stage(one_worker):
    folder, m = one_worker
    work = served(m)
    for stage in ("requests", "values[direct,none]", "values[direct,history:3]",
                  "train_requests", "teacher_labels", "judge"):
        assert sum(work[stage]) > 0, stage
    assert m["llm"]["teacher_labels"]["llm_calls"] > 0
    cells = files(folder)[0]
    assert {"direct", "distilled"} <= set(cells.method) and "judge" in set(cells.metric)


@pytest.fixture
def ray_cluster(monkeypatch):
    """A real three-node Ray cluster on this machine (head + 2 workers, 3 logical CPUs each),
    with its own temp folder so that no other Ray user on the machine finds it."""
    tmp = tempfile.mkdtemp(prefix="rc", dir="/tmp")  # short: Ray puts sockets there
    monkeypatch.setenv("RAY_TMPDIR", tmp)
    from ray.cluster_utils import Cluster

    node = dict(num_cpus=3, object_store_memory=100 * 1024**2)
    cluster = Cluster(initialize_head=True, head_node_args={**node, "include_dashboard": False})
    for _ in range(2):
        cluster.add_node(**node)
    cluster.wait_for_nodes()
    yield cluster
    cluster.shutdown()
    shutil.rmtree(tmp, ignore_errors=True)


def test_three_node_cluster_gives_the_files_of_one_worker(suite, one_worker, ray_cluster, tmp_path):
    """`--address` of a 3-node cluster and 3 LLM workers: the pool spreads one worker per node
    and lives through the run (the other stages, the distilled values with 2 CPUs, fit beside
    it); LLM shards are answered on all three nodes, and the files equal the 1-worker run bit
    for bit (outputs travel back to the driver, which caches).
    Two workers, one of them killed mid-stage, are in tests/test_faults.py."""
    folder, m, stdout = run(suite, tmp_path / "out", tmp_path / "cache", 3,
                            "--address", ray_cluster.address)
    assert "resources: 3 node(s), 9 CPU" in stdout
    assert m["ray"]["nodes"] == 3
    assert all(t.get("node_id") for t in m["stages"].values())  # where each stage ran
    (pool,) = m["llm_pools"]
    assert pool["workers"] == 3 and pool["starts"] == 1, pool
    answering = {w["node_id"] for w in pool["worker_stats"] if w["prompts"] > 0}
    assert len(answering) == 3, pool["worker_stats"]
    for a, b in zip(files(one_worker[0]), files(folder)):
        pd.testing.assert_frame_equal(a, b)
