"""`bench throughput`: suite validation, the chunked top-k, the cost-model fit, and a tiny end-to-end
measurement with random-weight models of a tiny shape (real code paths, seconds)."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from bench import throughput as tp
from ctrlrec.hardware import resolve_dtype
from ctrlrec.retrieval import topk_dot

ROOT = Path(__file__).resolve().parents[1]


def test_chunked_topk_matches_a_full_sort():
    g = torch.Generator().manual_seed(0)
    items, queries = torch.randn(1000, 16, generator=g), torch.randn(7, 16, generator=g)
    full = (queries @ items.T).argsort(dim=1, descending=True)[:, :10]
    for chunk in (3, 64, 999, 5000):
        v, i = topk_dot(queries, items, 10, chunk=chunk)
        assert torch.equal(i, full), chunk
        assert torch.allclose(v, torch.gather(queries @ items.T, 1, full))


def test_fit_recovers_a_known_cost_model_and_reports_its_error():
    items = np.array([10, 100, 1000, 10, 100, 10])
    reqs = np.array([1, 1, 1, 10, 10, 100])
    secs = 0.05 + 0.2 * reqs + 0.002 * reqs * items
    fit = tp.fit_part("direct", "", items, reqs, secs)
    assert fit["terms"]["per_prompt_s"] == pytest.approx(0.002, rel=1e-6)
    assert fit["terms"]["per_request_s"] == pytest.approx(0.2, rel=1e-6)
    assert fit["max_rel_error"] < 1e-6 and fit["loo_max_rel_error"] < 1e-6
    noisy = tp.fit_part("direct", "", items, reqs, secs * (1 + 0.1 * (-1) ** np.arange(6)))
    assert 0.02 < noisy["max_rel_error"] < 0.3


@pytest.mark.parametrize("patch, message", [
    ({"items": []}, "items: List should have at least 1 item after validation, not 0 (got [])"),
    ({"requests": [1, -2]}, "requests[1]: Input should be greater than or equal to 1 (got -2)"),
    ({"items": [10, True]}, "items[1]: Input should be a valid integer (got True)"),
    ({"speed": 1}, "speed: unknown key; allowed: name, description, seed, top_k, threads, "
                   "item_texts, items, requests, paths (got 1)"),
    ({"paths": [{"method": "fast"}]},
     "paths[0].method: allowed: direct, distilled (got 'fast')"),
    ({"paths": [{"model": "x"}]}, "paths[0].method: allowed: direct, distilled (got None)"),
    ({"paths": [{"method": "direct", "model": "x", "encode_batch": 8}]},
     "paths[0].encode_batch: unknown key; allowed: method, dtype, budget_s, device, model, "
     "random_arch, tokenizer, backend, batch_size (got 8)"),
    ({"paths": [{"method": "direct", "model": "x", "dtype": "fp8"}]},
     "paths[0].dtype: Input should be 'auto', 'bfloat16', 'float32' or 'float16' (got 'fp8')"),
    ({"paths": [{"method": "distilled", "random_arch": "bert-huge", "tokenizer": "t"}]},
     "paths[0].random_arch: Input should be 'stella-400m-shape' or 'tiny' (got 'bert-huge')"),
    ({"paths": [{"method": "direct", "model": "x", "random_arch": "tiny"}]},
     "paths[0]: give exactly one of model (real weights) or random_arch (llama-3.1-8b, "
     "qwen2.5-1.5b, tiny)"),
    ({"paths": [{"method": "direct", "random_arch": "tiny"}]},
     "paths[0]: a random_arch needs a tokenizer (packaged alias or folder)"),
    ({"paths": [{"method": "distilled", "model": "x", "max_item_matrix_gib": -1}]},
     "paths[0].max_item_matrix_gib: Input should be greater than 0 (got -1)"),
    ({"paths": [{"method": "direct", "model": "x", "device": "tpu"}]},
     "paths[0].device: allowed: cpu, cuda, cuda:N (default: cuda where there is a GPU) "
     "(got 'tpu')"),
    ({"paths": [{"method": "direct", "model": "x", "budget_s": float("inf")}]},
     "paths[0].budget_s: Input should be a finite number (got inf)"),
    ({"paths": [{"method": "direct", "model": "x", "backend": "vllm"}]},
     "paths[0].backend: Input should be 'hf' (got 'vllm')"),
])
def test_bad_suites_give_one_line_errors(patch, message):
    raw = {"name": "t", "items": [10], "requests": [1],
           "paths": [{"method": "distilled", "model": "all-MiniLM-L6-v2"}], **patch}
    with pytest.raises(tp.ThroughputError) as err:
        tp.validate(raw, "t.yaml")
    assert str(err.value) == f"t.yaml: {message}"


def test_suite_defaults_and_normalisation():
    cfg = tp.validate({"items": [100, 10, 100], "requests": [4, 1],
                       "paths": [{"method": "direct", "model": "x", "budget_s": 2.5}]},
                      "suites/some.yaml")
    assert cfg["name"] == "some" and cfg["items"] == [10, 100] and cfg["requests"] == [1, 4]
    assert cfg["paths"] == [{"method": "direct", "dtype": "auto", "budget_s": 2.5, "device": None,
                             "model": "x", "backend": "hf", "batch_size": 32}]


@pytest.mark.slow
@pytest.mark.parametrize("suite", ["suites/throughput.yaml", "suites/gpu/throughput.yaml"])
def test_measuring_side_needs_no_pydantic_pandas_or_ray(suite):
    """A bare GPU machine has torch, transformers and sentence-transformers only: measuring must
    import nothing else, and read a suite there as the schema does here."""
    blocked = ("pydantic", "pydantic_core", "pandas", "ray", "matplotlib", "scipy", "tabulate")
    code = (f"import json, sys\nfor m in {blocked!r}: sys.modules[m] = None\n"
            "import ctrlrec.hardware, bench.throughput.measure, bench.throughput.cli\n"
            "import bench.report.provenance\n"  # measure() records git_state from it
            f"print(json.dumps(bench.throughput.load_config({suite!r})))")
    read = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert read.returncode == 0, read.stderr
    assert "read without validation (pydantic is not installed here)" in read.stderr
    assert json.loads(read.stdout) == tp.load_config(ROOT / suite)


def test_a_bad_suite_file_is_one_error_line_and_exit_code_2(tmp_path, capsys):
    suite = tmp_path / "bad.yaml"
    suite.write_text("items: [10]\nrequests: [1]\npaths:\n  - method: direct\n    model: x\n"
                     "    batch_size: many\n")
    assert tp.main([str(suite), "--out", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err == (f"error: {suite}: paths[0].batch_size: Input should be a "
                                       "valid integer (got 'many')\n")
    assert not (tmp_path / "out").exists()


def test_a_benchmark_suite_or_an_override_is_pointed_to_its_command(tmp_path, capsys):
    from bench.cli import main

    assert main(["throughput", "suites/genre.yaml", "--out", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err == ("error: suites/genre.yaml: a benchmark suite (it has "
                                       "`methods`, no `paths`); `bench run suites/genre.yaml` "
                                       "runs it\n")
    assert main(["validate", "suites/throughput.yaml", "--set", "top_k=3"]) == 2
    assert "`bench throughput` takes no --set" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_tiny_measurement_end_to_end(tmp_path, capsys):
    suite = tmp_path / "tiny.yaml"
    suite.write_text(json.dumps({
        "name": "tiny", "items": [10, 100, 3000], "requests": [1, 2], "threads": 1,
        "paths": [
            {"method": "direct", "random_arch": "tiny", "tokenizer": "qwen2.5-coder-1.5b-instruct",
             "dtype": "float32", "batch_size": 16, "budget_s": 2},
            {"method": "distilled", "random_arch": "tiny", "tokenizer": "all-MiniLM-L6-v2",
             "budget_s": 5, "max_item_matrix_gib": 1e-4}]}))
    out = tmp_path / "out"
    assert tp.main([str(suite), "--out", str(out)]) == 0
    meas = json.loads((out / "measurements.json").read_text())
    # the distilled path leaves dtype at auto: measured in the dtype it resolves to on its device
    dev, auto = meas["paths"][1]["device"], resolve_dtype("auto", meas["paths"][1]["device"])
    assert meas["config"]["paths"][1]["dtype"] == "auto" and meas["paths"][1]["dtype"] == auto
    assert meas["hardware"]["dtypes"][1] == {"path": meas["paths"][1]["label"], "dtype": "auto",
                                             "resolved": auto}
    assert meas["hardware"]["describe"]["device"] == dev
    assert meas["git"]["commit"] and "dirty" in meas["git"]  # which code made the figures
    assert f"code at {meas['git']['commit'][:10]} (" in (out / "table.md").read_text()
    assert meas["hardware"]["describe"]["auto_dtype"] == auto
    direct = [r for r in meas["rows"] if r["method"] == "direct"]
    dist = [r for r in meas["rows"] if r["method"] == "distilled"]
    assert direct and all(r["seconds"] > 0 for r in direct)
    # 3000 × 32 float32 = 0.37 MiB > 1e-4 GiB: the memory cap stops the distilled path there
    assert {r["items"] for r in dist} == {10, 100} and "memory_stop" in meas["paths"][1]
    cells = (out / "cells.csv").read_text().splitlines()
    assert len(cells) == 1 + 2 * 3 * 2  # every path × items × requests, measured or extrapolated
    assert "extrapolated" in (out / "cells.csv").read_text()
    table = (out / "table.md").read_text()
    assert "Speedup at 3,000 items × 2 requests" in table and "random weights" in table
    if dev == "cpu":  # the instruction set, which decides a CPU's bf16 speed, heads the table
        d = meas["hardware"]["describe"]
        assert f"**CPU {d['cpu_capability']}{'+AMX' if d['cpu_amx'] else ''} (" in table
    assert (out / "throughput.png").stat().st_size > 10_000
    # the report alone, from the measurements
    assert tp.main(["--from", str(out / "measurements.json"), "--out", str(tmp_path / "again")]) == 0
    assert (tmp_path / "again" / "table.md").read_text().split("Created")[1] == table.split("Created")[1]
