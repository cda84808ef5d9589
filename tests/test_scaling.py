"""`bench scale` (cold runs per LLM worker count) and `bench project` (GPU projection): the
arithmetic on hand-checkable inputs and the prompt counts of the paper-scale suite. Both
commands end to end, on cold runs with a tiny random Qwen2: tests/test_llmpool.py."""

import math
from pathlib import Path

import pytest

from bench.scaling import model
from bench.scaling.model import INF, Work, critical_path, project, serial_fraction
from bench.scaling.report import LLM_ROW, TOTAL_ROW, rows

REPO = Path(__file__).resolve().parents[1]
JUDGE = "judge={llm: {backend: vllm, model: Qwen/Qwen2.5-7B-Instruct, num_gpus: 1}, k: [5, 10]}"


def steps():
    """start (10 s CPU) → an LLM step (20 s fixed, 1000 shards of 1 s, 1 GPU per worker) and,
    beside it, a CPU step of 50 s → a GPU step of 30 s → a 5 s report."""
    return [Work("start", fixed_s=10),
            Work("llm", ("start",), fixed_s=20, shards=1000, shard_s=1.0, gpus_per_worker=1),
            Work("cpu", ("start",), fixed_s=50),
            Work("train", ("llm",), fixed_s=30, gpus_per_worker=1),
            Work("report", ("train", "cpu"), fixed_s=5)]


def test_projection_arithmetic_by_hand():
    s = steps()
    assert model.wall_seconds(s, 1) == 10 + 20 + 1000 + 30 + 5
    assert model.wall_seconds(s, 8) == 10 + 20 + 125 + 30 + 5            # ceil(1000 / 8) = 125
    assert model.wall_seconds(s, 64) == 10 + 20 + 16 + 30 + 5            # ceil(1000 / 64) = 16
    assert model.wall_seconds(s, INF) == 10 + 20 + 1 + 30 + 5
    assert serial_fraction(s) == pytest.approx(66 / 1065)
    _, r8, r512 = project(s, [1, 8, 512])
    assert r8["speedup"] == pytest.approx(1065 / 190)
    assert r8["efficiency"] == pytest.approx(1065 / (8 * 190))
    assert r512["seconds"] == 10 + 20 + 2 + 30 + 5 and r512["gpu_hours"] == pytest.approx(
        512 * 67 / 3600)
    assert r8["amdahl_seconds"] == pytest.approx(1065 * (66 / 1065 + (1 - 66 / 1065) / 8))
    assert critical_path(s, 8) == ["report", "train", "llm", "start"]
    # with 1000 shards on 64 GPUs the LLM step is shorter than the CPU step beside it
    fast = [*s[:2], Work("cpu", ("start",), fixed_s=100), *s[3:]]
    assert critical_path(fast, 512) == ["report", "cpu", "start"]


def test_gpu_steps_share_the_gpus_and_big_workers_are_flagged():
    a = Work("a", fixed_s=0, shards=8, shard_s=1, gpus_per_worker=4)
    b = Work("b", fixed_s=3, gpus_per_worker=1)  # independent of a, but needs the GPUs too
    assert model.wall_seconds([a, b], 4) == 8 + 3 and model.wall_seconds([a, b], 8) == 4 + 3
    (one, eight) = project([a, b], [1, 8])
    assert one["lent"] == ["a"] and eight["lent"] == []


def test_scaling_rows_speedup_and_efficiency():
    def run(n, direct, judge, total):
        return {"workers": n, "threads": 1, "process_seconds": total,
                "stages": {"engagement": {"wall_seconds": 40, "llm": False, "prompts": None,
                                          "cached": False},
                           "values[direct,none]": {"wall_seconds": direct, "llm": True,
                                                   "prompts": 300, "cached": False},
                           "judge": {"wall_seconds": judge, "llm": True, "prompts": 100,
                                     "cached": False}},
                "pools": [{"worker_stats": [{"load_seconds": 10, "prompts": 400 // n,
                                             "busy_seconds": 200 / n} for _ in range(n)]}]}
    data = {(r["workers"], r["stage"]): r for r in rows(
        {"runs": [run(1, 600, 200, 900), run(2, 320, 110, 520)]})}
    llm = data[(2, LLM_ROW)]
    assert llm["wall_seconds"] == 430 and llm["speedup"] == pytest.approx(800 / 430)
    assert llm["efficiency"] == pytest.approx(800 / (2 * 430))
    assert llm["prompts_per_s_per_worker"] == pytest.approx(400 / (2 * 430))
    assert llm["busy_prompts_per_s"] == pytest.approx(2.0) and llm["loads"] == 2
    assert data[(2, TOTAL_ROW)]["efficiency"] == pytest.approx(900 / (2 * 520))
    assert data[(2, "engagement")]["efficiency"] is None  # a serial stage: no efficiency
    # the stages' own counts of the pool's work win over the workers' counters, which a
    # restarted worker loses
    restarted = run(1, 600, 200, 900)
    restarted["pools"][0]["worker_stats"][0].update(prompts=100, busy_seconds=50)
    restarted["llm"] = {"values[direct,none]": {"pool_work": {"prompts": 300,
                                                              "busy_seconds": 150}},
                        "judge": {"pool_work": {"prompts": 100, "busy_seconds": 50}}}
    (llm,) = [r for r in rows({"runs": [restarted]}) if r["stage"] == LLM_ROW]
    assert llm["busy_prompts_per_s"] == pytest.approx(2.0)


def test_llm_sections_and_bad_counts():
    from bench.scaling.run import ScaleError, llm_sections, parse_counts
    from bench.suitefile import load_suite

    suite = load_suite(REPO / "suites" / "gpu" / "genre.yaml", [JUDGE])
    assert llm_sections(suite) == ["data.items.llm", "requests.llm", "methods.1.llm",
                                   "methods.2.distill.teacher", "judge.llm"]
    assert llm_sections(load_suite(REPO / "suites" / "genre_untrained.yaml")) == []
    assert parse_counts("2,1") == [1, 2]
    for bad in ("0,1", "1,1", "one", ""):
        with pytest.raises(ScaleError, match="--workers"):
            parse_counts(bad)


def measured_by_hand():
    """Measured inputs as bench/scaling/inputs.measured() returns them, written out by hand."""
    return {"source": "hand", "workers": 1, "git_commit": "x", "machine": {}, "stage_models": {},
            "suite": {"engagement": {"model": "bivae", "epochs": 500}},
            "cpu": {"dataset": 2.0, "engagement": 60.0, "pool": 0.1},
            "startup_s": 8.0, "reports_s": 4.0, "stage_fixed_s": 3.0, "own_per_prompt_s": 0.0,
            "own_recorded": True, "load_bytes_per_s": 1e9, "cpu_busy_prompts_per_s": None,
            "judge_distinct": (0.5, 7, "hand")}


def test_paper_suite_prompt_counts():
    """suites/gpu/genre.yaml with a judge: prompts and shards per LLM stage follow from the
    data (943 users, every non-train item) and the suite; costs from the committed H200 run."""
    from bench.plan import build_plan
    from bench.scaling.inputs import Assumptions, dataset_facts, throughput
    from bench.scaling.project import Projector
    from bench.suitefile import load_suite

    suite = load_suite(REPO / "suites" / "gpu" / "genre.yaml", [JUDGE])
    facts = dataset_facts(suite)
    assert facts["users"] == 943 and facts["items"] == 1682
    assert facts["candidates"] == pytest.approx(1682 - 50_000 / 943, abs=1)  # half the ratings
    # one cutoff in time: only the 134 users with ratings on both sides, and their train halves
    late = dataset_facts(load_suite(REPO / "suites" / "gpu" / "genre.yaml",
                                    [JUDGE, "data.split.kind=global_time"]))
    assert late["users"] == 134 and late["candidates"] == pytest.approx(1682 - 17_812 / 134)
    tp = throughput(REPO / "results" / "throughput" / "h200-random-weight")
    cache = {"per_prompt_s": 1e-5, "per_shard_s": 1e-3, "chars": 1}
    p = Projector(suite, facts, measured_by_hand(), tp, 1e-8, Assumptions(), cache)
    works = {w.label: w for w in p.steps(build_plan(suite, facts["users"], gpus=8))}
    direct = works["values[direct,none]"]
    assert direct.shards == math.ceil(943 * facts["candidates"] / 64)
    assert works["teacher_labels"].shards == math.ceil((50 * 20 + 72) * 100 / 64)
    assert works["train_requests"].rounds == math.ceil(50 / 4) and \
        works["train_requests"].shards == 1
    assert works["requests"].gpus_per_worker == 4 and works["requests"].workers(8) == 2
    # a direct shard: fixed + prefixes + 64 prompts of 22.3 + 160 item tokens, at 8.03/8.22 B
    t = tp["rate"]
    per_prompt = t["per_prompt_s"] * (tp["suffix_tokens"] + 160) / tp["suffix_tokens"]
    assert direct.shard_s == pytest.approx(t["fixed_s"] + 8.03e9 / tp["rate_params"] * (
        t["per_request_s"] * (943 + direct.shards - 1) / direct.shards
        + per_prompt * 943 * facts["candidates"] / direct.shards))
    # judge: 943 users × 3 methods × 21 w × 2 k, half of them distinct feeds (as measured)
    assert works["judge"].shards == math.ceil(943 * 3 * 21 * 2 * 0.5 / 64)
    assert works["engagement"].fixed_s == 60.0  # measured, same BiVAE


def test_llm_wall_counts_overlapping_stages_once():
    from bench.scaling.report import llm_seconds

    def stage(start, wall, llm=True):
        return {"started_s": start, "wall_seconds": wall, "llm": llm}
    run = {"stages": {"a": stage(0, 10), "b": stage(5, 10), "c": stage(30, 5),
                      "cpu": stage(0, 100, llm=False)}}
    assert llm_seconds(run) == 15 + 5   # [0, 15] and [30, 35]
    del run["stages"]["a"]["started_s"]  # a manifest from before stage starts were recorded
    assert llm_seconds(run) == 10 + 10 + 5
