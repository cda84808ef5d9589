"""`bench throughput`: suite validation, the chunked top-k, the cost-model fit, and a tiny end-to-end
measurement with random-weight models of a tiny shape (real code paths, seconds)."""

import json

import numpy as np
import pytest
import torch

from bench import throughput as tp
from ctrlrec.retrieval import topk_dot


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
    ({"items": []}, "items: []: expected a non-empty list of positive integers"),
    ({"requests": [1, -2]}, "requests: [1, -2]"),
    ({"speed": 1}, "speed: unknown key"),
    ({"paths": [{"method": "fast"}]}, "paths[0].method: 'fast': allowed: direct, distilled"),
    ({"paths": [{"method": "direct", "model": "x", "dtype": "fp8"}]}, "paths[0].dtype: 'fp8'"),
    ({"paths": [{"method": "distilled", "random_arch": "bert-huge", "tokenizer": "t"}]},
     "paths[0].random_arch: 'bert-huge': allowed: stella-400m-shape, tiny"),
    ({"paths": [{"method": "direct", "model": "x", "random_arch": "tiny"}]}, "exactly one of"),
    ({"paths": [{"method": "distilled", "model": "x", "max_item_matrix_gib": -1}]},
     "paths[0].max_item_matrix_gib: -1: expected a positive number"),
    ({"paths": [{"method": "direct", "model": "x", "device": "tpu"}]}, "paths[0].device: 'tpu'"),
    ({"paths": [{"method": "direct", "model": "x", "budget_s": ".inf"}]}, "paths[0].budget_s"),
])
def test_bad_suites_give_one_line_errors(patch, message):
    raw = {"name": "t", "items": [10], "requests": [1],
           "paths": [{"method": "distilled", "model": "all-MiniLM-L6-v2"}], **patch}
    with pytest.raises(tp.ThroughputError) as err:
        tp.validate(raw, "t.yaml")
    assert message in str(err.value) and "\n" not in str(err.value)


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
    assert (out / "throughput.png").stat().st_size > 10_000
    # the report alone, from the measurements
    assert tp.main(["--from", str(out / "measurements.json"), "--out", str(tmp_path / "again")]) == 0
    assert (tmp_path / "again" / "table.md").read_text().split("Created")[1] == table.split("Created")[1]
