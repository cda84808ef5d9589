"""Cache keys hold a hash of the code each stage runs: an edit misses exactly the entries of the
stages whose code reaches it (and, through input keys, what lies downstream of them)."""

import ast
from pathlib import Path

import numpy as np
import pytest

from bench.cache import StageCache
from bench.codehash import ROOT, SourceIndex, code_hash, stale_entries
from bench.plan import build_plan
from bench.suitefile import load_suite

SUITE = Path(__file__).parent.parent / "suites" / "open_ended.yaml"
OVERRIDES = ["methods=[{name: untrained}, {name: tfidf}, {name: direct}]", "users=40"]


@pytest.fixture(scope="module")
def tree() -> dict[str, str]:
    """This checkout's sources by module name, as SourceIndex reads them."""
    return {".".join(f.relative_to(ROOT).with_suffix("").parts): f.read_text()
            for pkg in ("ctrlrec", "bench") for f in sorted((ROOT / pkg).rglob("*.py"))}


@pytest.fixture(scope="module")
def suite():
    return load_suite(SUITE, OVERRIDES)


def edited(tree: dict, module: str, name: str) -> dict:
    """The tree with one statement added at the end of top-level def `name` of `module`."""
    lines = tree[module].split("\n")
    node = next(n for n in ast.parse(tree[module]).body if getattr(n, "name", None) == name)
    indent = " " * (node.body[-1].col_offset)
    lines.insert(node.end_lineno, f"{indent}_edited = 1")
    return {**tree, module: "\n".join(lines)}


def changes(suite, before: dict | SourceIndex, after: dict) -> tuple[set, set]:
    """(steps whose own code hash changed, steps whose key changed)."""
    a = build_plan(suite, 40, sources=before if isinstance(before, SourceIndex)
                   else SourceIndex(before))
    b = {s.label: s for s in build_plan(suite, 40, sources=SourceIndex(after))}
    return ({s.label for s in a if s.code != b[s.label].code},
            {s.label for s in a if s.key != b[s.label].key})


def downstream(suite, labels: set) -> set:
    plan = build_plan(suite, 40)
    out = set(labels)
    for s in plan:  # dependency order: one pass reaches everything below
        if out & set(s.deps):
            out.add(s.label)
    return out


def test_an_edit_misses_exactly_the_stages_whose_code_reaches_it(tree, suite):
    labels = [s.label for s in build_plan(suite, 40)]
    sweeps = {x for x in labels if x.startswith("sweep[")}
    cases = {  # edited function -> the steps that run it
        ("ctrlrec.metrics", "ndcg_at_k"): {"engagement", *sweeps},  # engagement reports NDCG
        ("ctrlrec.lexical", "tfidf_values"): {"values[tfidf]"},
        ("ctrlrec.requests", "parse_statement"): {"requests"},
        # same module as engagement_stage, which never calls it
        ("bench.stages.data", "pool_stage"): {"pool"},
        ("ctrlrec.judging", "planted_feeds"): {"judge_validation"},
    }
    base = SourceIndex(tree)  # parsed once, hashes memoised
    for (module, name), expected in cases.items():
        code, keys = changes(suite, base, edited(tree, module, name))
        assert code == expected, (module, name)
        assert keys == downstream(suite, expected), (module, name)
        assert "dataset" not in keys


def test_the_hash_ignores_what_cannot_change_a_result(tree, suite):
    # a comment between functions, moved lines, Windows line endings, a progress bar
    moved = {**tree, "ctrlrec.metrics": "# a new comment\n\n" + tree["ctrlrec.metrics"],
             "ctrlrec.aggregate": tree["ctrlrec.aggregate"].replace("\n", "\r\n")}
    moved = edited(moved, "ctrlrec.progress", "progress")
    assert changes(suite, tree, moved) == (set(), set())
    assert code_hash("bench.stages.data:engagement_stage") == \
        SourceIndex(tree).code_hash("bench.stages.data:engagement_stage")
    with pytest.raises(ValueError, match="no module 'no_such_plugin'"):
        code_hash("no_such_plugin:values")


def test_stale_entries_say_why_a_cached_stage_missed(tree, suite, tmp_path):
    cache = StageCache(tmp_path)
    old = build_plan(suite, 40, sources=SourceIndex(tree))
    keys = {s.label: s.key for s in old}
    for s in old[:4]:  # dataset, engagement, requests, pool: written as the runner writes them
        cache.save(s.stage, s.key, {"x": np.zeros(1)},
                   {"label": s.label, "config": s.config, "code": s.code,
                    "inputs": [keys[d] for d in s.deps]})
    assert stale_entries(old, cache) == {}
    new = build_plan(suite, 40, sources=SourceIndex(edited(tree, "ctrlrec.metrics", "ndcg_at_k")))
    assert stale_entries(new, cache) == {"engagement": "code changed", "pool": "inputs changed"}


def test_new_encoder_weights_at_the_same_path_miss_what_used_the_encoder(tiny_encoder_dir,
                                                                          tmp_path, monkeypatch):
    """A sentence encoder given by its path and saved over with new weights (same files, same
    sizes): its item embeddings and everything downstream of them get new keys, the rest keeps
    its own. A packaged encoder's name keys its embeddings without a revision, as before."""
    import shutil

    from safetensors.numpy import load_file, save_file

    monkeypatch.setenv("CTRLREC_CACHE", str(tmp_path / "cache"))
    enc = tmp_path / "enc"
    shutil.copytree(tiny_encoder_dir, enc)
    suite = load_suite(SUITE, [*OVERRIDES, f"methods.0.model={enc}"])
    before = {s.label: s for s in build_plan(suite, 40)}
    (label,) = [x for x, s in before.items() if s.stage == "item_embeddings"]
    assert "revision" in before[label].config
    (weights,) = enc.rglob("*.safetensors")
    size, tensors = weights.stat().st_size, load_file(weights)
    name = sorted(tensors)[-1]
    save_file({**tensors, name: -tensors[name]}, weights, metadata={"format": "pt"})
    assert weights.stat().st_size == size
    after = {s.label: s.key for s in build_plan(suite, 40)}
    changed = {x for x, s in before.items() if s.key != after[x]}
    assert changed == downstream(suite, {label}) and len(changed) < len(before)
    packaged = build_plan(load_suite(SUITE, OVERRIDES), 40)
    assert all("revision" not in s.config for s in packaged if s.stage == "item_embeddings")
