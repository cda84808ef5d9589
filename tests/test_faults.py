"""Faults during `bench run`: a Ray worker killed mid-stage, the driver interrupted (SIGINT) and
killed (SIGKILL of its whole process group), a corrupt stage-cache entry. Each run must finish
with results identical to an uninterrupted run, and no LLM prompt may be answered twice.

The LLM is an `openai` endpoint served from this test process by `bench serve`'s server: the
tiny random rating model of conftest (`rating_model_dir`: a real Qwen2 whose expected ratings
depend on the prompt, and a few of whose answers carry too little digit mass) on the hf
backend, which records every prompt it is asked. The fault point is exact and lives in
that endpoint: it holds the first request that arrives once n distinct prompts were answered
(the LLM cache commits each chunk of 64 answers before it asks for the next, so exactly n are
committed then), the test strikes, and the held request is then closed unanswered, its prompts
unrecorded. The endpoint needs a key: OPENAI_API_KEY holds a secret that must not appear in any
file written."""

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytestmark = pytest.mark.slow  # Ray runs end to end

REPO = Path(__file__).resolve().parent.parent
SECRET = "sk-test-secret-5f3a9c"
N_PROMPTS = 280  # 20 users x 14 shortlisted items; users with the same request share prompts,
# which are answered once, and the LLM cache commits 64 distinct answers at a time


class RecordingRater:
    """The tiny rating model on the hf backend, as `bench serve` runs a model, recording each
    prompt it is asked and the digit mass of its answer. One prompt per forward pass, so that an
    answer does not depend on which prompts shared its batch (the runs below batch differently
    and must reproduce the reference run's rankings exactly)."""

    def __init__(self, model_dir):
        from ctrlrec.llm.backends import HFBackend

        # whole prompts, not a prefix shared with the other prompts of a request (which would
        # make an answer depend on which prompts came with it)
        self.backend = HFBackend(str(model_dir), dtype="float32", batch_size=1, threads=1,
                                 prefix_reuse=False)
        self.tokenizer = self.backend.tokenizer
        self.identity = {**self.backend.identity, "model": "tiny-rater"}
        self.asked: list[str] = []
        self.mass: dict[str, float] = {}
        self.lock = threading.Lock()

    def top_logprobs(self, texts, n=20):
        from ctrlrec.llm.remote import OpenAIBackend

        with self.lock:  # the server answers on threads; the model computes one batch at a time
            out = self.backend.top_logprobs(texts, n)
            for t, top in zip(texts, out):  # the mass the client reads from the server's reply
                strings = {self.tokenizer.decode([tok]): lp for tok, lp in top}
                self.mass[t] = OpenAIBackend._rating(
                    {"logprobs": {"top_logprobs": [strings]}}).mass
            self.asked += list(texts)
        return out


class FaultPoint:
    """Armed with n, the endpoint holds every POST that arrives once n distinct prompts were
    answered, before reading it; `reached` is then set and `sender` names the process that sent
    the first one. `drop()` closes the held requests without an answer and disarms. Requests are
    handled on threads (a ThreadingHTTPServer), so a held one blocks no other."""

    def __init__(self, rater: RecordingRater):
        self.rater = rater
        self.lock = threading.Lock()
        self.after: int | None = None
        self.sender: int | None = None
        self.reached, self.released = threading.Event(), threading.Event()

    def arm(self, n: int) -> None:
        with self.lock:
            self.after, self.sender = n, None
            self.reached.clear()
            self.released.clear()

    def drop(self) -> None:
        with self.lock:
            self.after = None
            self.released.set()

    def holds(self, client: tuple, server: tuple) -> bool:
        """Whether this request is held (and then dropped) rather than answered."""
        with self.lock:
            with self.rater.lock:
                answered = len(set(self.rater.asked))
            if self.after is None or answered < self.after:
                return False
            if not self.reached.is_set():
                self.sender = pid_of_client(client[1], server[1])  # while it is still alive
                self.reached.set()
        self.released.wait(timeout=600)  # the test drops it long before; never hang a thread
        return True


def pid_of_client(port: int, server_port: int) -> int | None:
    """The process owning the loopback TCP socket from `port` to `server_port`: its inode from
    /proc/net/tcp, then the process with a descriptor on that inode."""
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        f = line.split()
        if (int(f[1].split(":")[1], 16), int(f[2].split(":")[1], 16)) == (port, server_port):
            inodes.add(f"socket:[{f[9]}]")
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if any(os.readlink(fd) in inodes for fd in (d / "fd").iterdir()):
                    return int(d.name)
            except OSError:  # another user's process, or one that just ended
                pass
    return None


@pytest.fixture(scope="module")
def endpoint(rating_model_dir, tmp_path_factory):
    from bench.serve import make_server

    rater = RecordingRater(rating_model_dir)
    fault = FaultPoint(rater)
    srv = make_server(rater, "127.0.0.1", 0)

    class Handler(srv.RequestHandlerClass):
        def do_POST(self):
            if fault.holds(self.client_address, self.server.server_address):
                self.close_connection = True  # no reply: the sender is gone by now
                return
            super().do_POST()

    srv.RequestHandlerClass = Handler
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    tok_dir = tmp_path_factory.mktemp("tok")
    rater.tokenizer.save_pretrained(tok_dir)  # the chat template, without any weights
    yield rater, f"http://127.0.0.1:{srv.server_address[1]}/v1", tok_dir, fault
    fault.drop()
    srv.shutdown()


def suite_file(folder: Path, base_url: str, tok_dir: Path) -> Path:
    f = folder / "faults.yaml"
    f.write_text(f"""
name: faults
users: 20
engagement: {{model: popularity}}
pool: {{kind: shortlist, engagement: 14, untrained: 0}}
methods:
  - name: direct
    llm: {{backend: openai, base_url: "{base_url}", model: tiny-rater, tokenizer: "{tok_dir}",
           batch_size: 8, threads: 1, retries: 1, timeout: 60, workers: 1}}
w_control: [0.0, 0.25, 0.5, 0.75, 1.0]
k: [5]
""")
    return f


RAY_TMPS: list[str] = []


@pytest.fixture(scope="module", autouse=True)
def _remove_ray_temp_folders():
    yield
    for d in RAY_TMPS:
        shutil.rmtree(d, ignore_errors=True)


def start(suite: Path, out: Path, cache: Path, run_id: str, *extra: str):
    """`bench run` in its own process group and with its own Ray temp folder."""
    ray_tmp = tempfile.mkdtemp(prefix="rf", dir="/tmp")  # short: Ray puts sockets there
    RAY_TMPS.append(ray_tmp)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "RAY_AUTH_MODE": "disabled",
           "RAY_TMPDIR": ray_tmp, "OPENAI_API_KEY": SECRET}
    proc = subprocess.Popen([sys.executable, "-m", "bench.cli", "run", str(suite), "--workers", "2",
                             "--out", str(out), "--run-id", run_id, "--cache-dir", str(cache),
                             *extra],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True, preexec_fn=_default_sigint)
    proc.ray_tmp = ray_tmp
    return proc


def _default_sigint():
    """A shell starts background jobs with SIGINT ignored, and children inherit that (Python
    then installs no KeyboardInterrupt handler): give the driver the default, as in a terminal."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def finish(proc, timeout=300):
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def wait_for(fault: FaultPoint, proc, timeout=180) -> int:
    """The pid of the process whose request the endpoint holds."""
    t0 = time.monotonic()
    while not fault.reached.wait(0.2):
        assert proc.poll() is None, f"bench run ended early: {proc.communicate()[1][-2000:]}"
        assert time.monotonic() - t0 < timeout, "the fault point was never reached"
    assert fault.sender is not None and fault.sender != proc.pid  # a Ray worker asks the LLM
    return fault.sender


def leftover_ray_processes(ray_tmp: str, grace: float = 10.0) -> list[int]:
    """Processes of that run's Ray instance still alive after `grace` seconds (found by the
    RAY_TMPDIR in their environment); killed here, by pid, and returned."""
    marker = f"RAY_TMPDIR={ray_tmp}".encode()

    def alive():
        pids = []
        for d in Path("/proc").iterdir():
            if d.name.isdigit() and int(d.name) != os.getpid():
                try:
                    if marker in (d / "environ").read_bytes().split(b"\0"):
                        pids.append(int(d.name))
                except OSError:
                    pass
        return pids

    t0 = time.monotonic()
    while alive() and time.monotonic() - t0 < grace:
        time.sleep(0.5)
    left = alive()
    for pid in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return left


def llm_rows(cache: Path) -> int:
    db = sqlite3.connect(cache / "llm.sqlite")
    try:
        return db.execute("SELECT COUNT(*) FROM calls").fetchone()[0]
    finally:
        db.close()


def manifest(out: Path, run_id: str) -> dict:
    return json.loads((out / "faults" / run_id / "manifest.json").read_text())


def assert_same_results(a: Path, b: Path):
    cells = [pd.read_parquet(x / "cells.parquet").drop(columns="config_hash", errors="ignore")
             for x in (a, b)]  # the hash holds settings that cannot change results (workers)
    pd.testing.assert_frame_equal(*cells)
    ra, rb = (pd.read_parquet(x / "recommendations.parquet") for x in (a, b))
    pd.testing.assert_frame_equal(ra.drop(columns="items"), rb.drop(columns="items"))
    assert all(np.array_equal(x, y) for x, y in zip(ra["items"], rb["items"]))


def assert_no_secret(*roots: Path, texts=()):
    for text in texts:
        assert SECRET not in text
    for root in roots:
        for f in Path(root).rglob("*"):
            if f.is_file():
                assert SECRET.encode() not in f.read_bytes(), f


def stage_entries(cache: Path) -> dict[str, int]:
    return {str(m.parent.relative_to(cache)): m.stat().st_mtime_ns
            for m in cache.glob("*/*/_meta.json")}


@pytest.fixture(scope="module")
def reference(endpoint, tmp_path_factory):
    """The uninterrupted run that every faulty run must reproduce."""
    rater, url, tok_dir, _ = endpoint
    root = tmp_path_factory.mktemp("ref")
    suite = suite_file(root, url, tok_dir)
    rater.asked.clear()
    code, out, err = finish(start(suite, root / "out", root / "cache", "ref"))
    assert code == 0, err[-3000:]
    assert_no_secret(root, texts=(out, err))
    return {"dir": root / "out" / "faults" / "ref", "suite": suite, "cache": root / "cache",
            "asked": list(rater.asked), "mass": dict(rater.mass),
            "manifest": manifest(root / "out", "ref")}


def test_reference_run_counts_low_mass_answers(reference):
    stats = reference["manifest"]["llm"]["values[direct,none]"]
    asked = reference["asked"]
    assert len(asked) == len(set(asked)) and 192 < len(asked) <= N_PROMPTS  # 4 batches
    assert stats["prompts"] == N_PROMPTS and stats["llm_calls"] == len(asked)
    assert stats["cache_hits"] == 0
    # counted per (user, item) cell, so a prompt that two users share counts twice
    low = sum(reference["mass"][p] < 0.9 for p in asked)
    assert 0 < low <= stats["low_mass"] <= low + (N_PROMPTS - len(asked))
    assert stats["low_mass_rate"] == pytest.approx(stats["low_mass"] / N_PROMPTS)
    values = np.load(next((reference["cache"] / "values").glob("*/values.npy")))
    mass = np.load(next((reference["cache"] / "values").glob("*/mass.npy")))
    assert ((mass < 0.9).sum() == stats["low_mass"]) and (values[mass < 0.9] == 1.0).all()


def test_interrupted_driver_and_killed_worker_resume_without_repeating_work(endpoint, reference,
                                                                           tmp_path):
    """One run interrupted at each fault point in turn, each rerun picking up where the last
    stopped: SIGINT of the driver, then kill -9 of the driver's process group (one LLM worker, so
    that these strike points are exact), then (after a finished stage file is damaged on disk)
    kill -9 of one of two LLM workers, with shards of one request (8 prompts) so that a held
    request is the first of its shard. The killed worker's shard goes to a worker again; the
    other worker's held request is closed unanswered and its client asks again. The last run
    completes with the reference results, and the endpoint is asked each prompt exactly once
    over all runs."""
    rater, _, _, fault = endpoint
    rater.asked.clear()
    cache, out = tmp_path / "cache", tmp_path / "out"
    suite = reference["suite"]
    distinct = len(reference["asked"])
    assert distinct > 192  # four batches of answers: three fault points, then the rest

    # 1. Ctrl-C once the first 64 answers are committed: a clean stop, exit code 130, one line.
    fault.arm(64)
    proc = start(suite, out, cache, "r1")
    wait_for(fault, proc)
    assert llm_rows(cache) == 64  # committed before the next chunk was asked
    proc.send_signal(signal.SIGINT)
    code, _, err = finish(proc, timeout=240)
    assert code == 130 and "Traceback" not in err, err[-2000:]
    assert any(line.startswith("interrupted: ") for line in err.replace("\x1b[A", "\n")
               .splitlines()), err[-2000:]
    left_after_sigint = leftover_ray_processes(proc.ray_tmp)
    fault.drop()  # only now: no process of that run is left to ask again
    assert llm_rows(cache) == 64 and len(rater.asked) == 64
    assert not (out / "faults" / "r1").exists()

    # 2. Rerun; once its first batch is committed (128 answers in all), kill -9 the driver's
    # whole process group.
    fault.arm(128)
    proc = start(suite, out, cache, "r2")
    wait_for(fault, proc)
    assert llm_rows(cache) == 128 and len(rater.asked) == 128
    os.killpg(proc.pid, signal.SIGKILL)
    finish(proc, timeout=60)
    left_after_kill = leftover_ray_processes(proc.ray_tmp)
    fault.drop()
    assert len(rater.asked) == 128
    assert not (out / "faults" / "r2").exists()  # no half-written results folder
    before = stage_entries(cache)
    assert "values" not in {k.split("/")[0] for k in before}  # the LLM stage never finished

    # 3. A finished stage file is damaged on disk; rerun with two LLM workers, and once 192
    # answers are in, kill -9 the worker whose request arrived first: Ray restarts it and the
    # stage hands its shard to a worker again; the stage itself (which only coordinates) goes on.
    pool_entry = next(cache / k for k in before if k.startswith("pool/"))
    npy = pool_entry / "pool.npy"
    npy.write_bytes(npy.read_bytes()[:-7])
    fault.arm(192)
    proc = start(suite, out, cache, "r3", "--set", "methods.0.llm.workers=2",
                 "--set", "methods.0.llm.shard_size=8")
    worker = wait_for(fault, proc)
    # the other worker's request may have been answered meanwhile: one shard more at most
    assert 192 <= len(rater.asked) <= 200 and llm_rows(cache) <= len(rater.asked)
    os.kill(worker, signal.SIGKILL)
    fault.drop()  # the killed worker runs no more code; the retried shards are answered
    code, stdout, err = finish(proc)
    assert code == 0, err[-3000:]
    assert "stage cache entry of pool" in err and "corrupt" in err  # reported, recomputed
    m = manifest(out, "r3")
    stats, timing = m["llm"]["values[direct,none]"], m["stages"]["values[direct,none]"]
    assert not timing["cached"]
    (pool,) = m["llm_pools"]
    # two worker processes at the end, the killed one restarted (its counts died with it)
    pids = {w.get("pid") for w in pool["worker_stats"]}
    assert pool["workers"] == 2 and len(pids) == 2 and worker not in pids, pool["worker_stats"]
    # this run found 128 answers cached and asked every other distinct prompt once
    assert stats["llm_calls"] == distinct - 128 and stats["cache_hits"] >= 128
    assert len(rater.asked) == len(set(rater.asked)) == distinct  # no prompt asked twice
    assert llm_rows(cache) == distinct
    assert m["stages"]["pool"].get("repaired_cache_entry") and not m["stages"]["pool"]["cached"]
    for label in ("dataset", "engagement", "requests"):
        assert m["stages"][label]["cached"], label
    after = stage_entries(cache)
    rewritten = [k for k, t in before.items() if k in after and after[k] != t]
    assert rewritten == [str(pool_entry.relative_to(cache))]  # only the damaged entry
    assert_same_results(reference["dir"], out / "faults" / "r3")
    assert_no_secret(tmp_path, texts=(stdout, err))
    print(f"\nSIGINT after 64 answers ({len(left_after_sigint)} Ray processes left), kill -9 of "
          f"the driver after 128 ({len(left_after_kill)} left), one of two workers killed "
          f"after 192 of {distinct}; last run: {stats['llm_calls']} LLM calls, "
          f"{stats['cache_hits']} cache hits, {len(after) - len(before)} new stage entries, "
          f"rewritten: {rewritten}")


def test_gpu_requests_fall_back_to_cpu_and_the_plan_says_so(tmp_path):
    """Fractional GPU requests pass through where the cluster has GPUs; with none, the same suite
    runs on CPU (a GPU request no node can meet would wait forever)."""
    from bench.cache import StageCache
    from bench.plan import Step
    from bench.runner import placement, resource_plan

    llm = Step("values[direct,none]", "values", "m:f", {}, cpus=2, gpus=0.5)
    student = Step("student", "student", "m:f", {}, cpus=4, gpus=1)
    assert placement(llm, 16, 1) == (2, 0.5) and placement(student, 16, 1) == (4, 1)
    assert placement(llm, 1, 0) == (1, 0.0) and placement(student, 2, 0.5) == (2, 0.5)
    info = {"address": "local", "cluster_cpus": 2, "cluster_gpus": 0, "nodes": 1}
    lines = resource_plan([llm, student], StageCache(tmp_path), info, 2)
    assert lines[0].startswith("resources: 1 node(s), 2 CPU, 0 GPU") and len(lines) <= 4
    assert "no GPU in the cluster" in lines[-1] and "student" in lines[-1]
    lines = resource_plan([llm, student], StageCache(tmp_path), {**info, "cluster_gpus": 1}, 2)
    assert any("2 CPU + 0.5 GPU: values[direct,none]" in x for x in lines)
