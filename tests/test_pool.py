"""The candidate pool: neutral nominators by default (engagement top-N ∪ a seeded random sample),
the old embedding nominator only by name, provenance per candidate, full-set sweeps beside the
shortlist ones, and the report's table of where each method's top-k came from. Real MovieLens,
popularity as the engagement model, no Ray: a few seconds."""

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from bench.outputs import per_user_metrics
from bench.plan import build_plan
from bench.report.sources import pool_sources
from bench.stages.data import dataset_stage, pool_stage, split_of
from bench.stages.evaluate import provenance_shares, sweep_stage
from bench.suite import NOMINATORS, PoolCfg
from bench.suitefile import load_suite
from ctrlrec.engagement import popularity_scores

BIT = {name: 1 << j for j, name in enumerate(NOMINATORS)}


@pytest.fixture(scope="module")
def ds(tmp_path_factory):
    suite = write_suite(tmp_path_factory.mktemp("ds"), "ds", "{kind: all}")
    return dataset_stage(next(s for s in build_plan(suite, 12) if s.label == "dataset").config)


@pytest.fixture(scope="module")
def eng(ds):
    return {"scores": popularity_scores(split_of(ds))}


def requests(users) -> dict:
    return {"requests": pd.DataFrame({"user_id": list(users), "text": "a comedy, please",
                                      "genre": "Comedy"})}


def shortlist(**kw) -> dict:
    cfg = PoolCfg(kind="shortlist", **kw).model_dump(mode="json")
    return {k: v for k, v in cfg.items() if k not in ("model", "dtype")}


def write_suite(tmp_path, name, pool, methods="[{name: untrained}]"):
    f = tmp_path / f"{name}.yaml"
    f.write_text(f"name: {name}\nusers: 12\npool: {pool}\nmethods: {methods}\n"
                 "w_control: [0.0, 0.5, 1.0]\nk: [5]\n")
    return load_suite(f)


def test_defaults_are_neutral_and_old_suites_keep_their_pool():
    new = PoolCfg(kind="shortlist")
    assert new.nominators() == [("engagement", 20), ("random", 20)]
    assert not new.embedding_nominated()
    old = PoolCfg.model_validate({"kind": "shortlist", "engagement": 20, "untrained": 20})
    assert old.nominators() == [("engagement", 20), ("untrained", 20)] and old.embedding_nominated()
    # a dumped suite (e.g. a manifest's) reads back as the same pool
    assert PoolCfg.model_validate(new.model_dump()) == new
    assert PoolCfg.model_validate(old.model_dump()) == old
    with pytest.raises(ValueError, match="needs a nominator"):
        PoolCfg(kind="shortlist", engagement=0, random=0)


def test_neutral_pool_is_reproducible_and_the_same_for_every_method(ds, eng, tmp_path):
    users = split_of(ds).user_ids[:40]
    cfg = {**shortlist(engagement=10, random=10), "seed": 3}
    a = pool_stage(cfg, ds, eng, requests(users))
    b = pool_stage(cfg, ds, eng, requests(users))
    assert np.array_equal(a["nominated"], b["nominated"])
    # seeded per user: a user's sample does not depend on who else is evaluated
    c = pool_stage(cfg, ds, eng, requests(users[::-1][:7]))
    assert np.array_equal(c["nominated"], a["nominated"][::-1][:7])
    other = pool_stage({**cfg, "seed": 4}, ds, eng, requests(users))
    assert not np.array_equal(other["nominated"], a["nominated"])
    # the pool step (config, inputs, key) is the same whichever methods a suite evaluates
    steps = [{s.label: s for s in build_plan(write_suite(tmp_path, n, "{kind: shortlist}", m), 12)}
             ["pool"] for n, m in (("one", "[{name: untrained}]"),
                                   ("two", "[{name: tfidf}, {name: direct}]"))]
    assert steps[0].key == steps[1].key and steps[0].deps == ["dataset", "engagement", "requests"]


def test_each_candidate_records_its_nominators(ds, eng):
    split = split_of(ds)
    users = split.user_ids[:30]
    out = pool_stage({**shortlist(engagement=8, random=6), "seed": 0}, ds, eng, requests(users))
    nominated, pool = out["nominated"], out["pool"]
    assert out["nominators"] == list(NOMINATORS)
    train = split.matrix("train")[split.user_index(users)]
    assert np.array_equal(pool, nominated > 0) and not (pool & train).any()
    by_eng = (nominated & BIT["engagement"]) > 0
    by_rand = (nominated & BIT["random"]) > 0
    assert (by_eng.sum(axis=1) == 8).all() and (by_rand.sum(axis=1) == 6).all()
    assert not ((nominated & BIT["untrained"]) > 0).any()
    scores = eng["scores"][split.user_index(users)]
    for r in range(len(users)):  # engagement's picks: its 8 best unseen items (ties aside)
        unseen = scores[r][~train[r]]
        assert scores[r][by_eng[r]].min() >= np.sort(unseen)[-8]
    # overlaps keep both bits; the random picks are spread, not the engagement head again
    assert by_rand.sum() > (by_rand & by_eng).sum()


def test_per_category_sample_covers_every_request_category_alike_for_all_users(ds, eng):
    from bench.stages.data import dataset_info

    split = split_of(ds)
    users = split.user_ids[:30]
    cfg = {**shortlist(engagement=4, random=0, per_category=3), "seed": 0}
    out = pool_stage(cfg, ds, eng, requests(users))
    mine = (out["nominated"] & BIT["per_category"]) > 0
    train = split.matrix("train")[split.user_index(users)]
    sample = mine | (train & mine.any(axis=0))  # a user's sample less what they rated in train
    assert (sample == sample[0]).all()  # one sample, the same for every user
    cats = list(dataset_info(ds).request_categories)
    flags = ds["items"][cats].to_numpy(dtype=bool)[sample[0]]
    assert sample[0].sum() == 3 * len(cats) and (flags.sum(axis=0) >= 3).all()
    # the rarest category (Fantasy, 22 of 1,682 films) is far more common in the sample than in
    # the catalogue (1.3 %)
    fantasy = cats.index("Fantasy")
    assert flags[:, fantasy].mean() > 5 * ds["items"]["Fantasy"].mean()
    other = pool_stage({**cfg, "seed": 1}, ds, eng, requests(users))
    assert not np.array_equal((other["nominated"] & BIT["per_category"]) > 0, mine)


def test_a_user_short_of_k_candidates_stops_the_sweep_naming_the_user(ds, eng):
    split = split_of(ds)
    users = split.user_ids[:4]
    req = requests(users)
    pool = pool_stage({**shortlist(engagement=3, random=0), "seed": 0}, ds, eng, req)
    assert (pool["pool"].sum(axis=1) == 3).all()
    cfg = {"rows": [0, 4], "aggregation": "rank", "ws": [0.0, 1.0], "ks": [5, 10]}
    vals = {"values": np.random.default_rng(0).random(pool["pool"].shape)}
    with pytest.raises(ValueError, match=f"user {users[0]} has 3 candidate items \\(the pool's "
                                         "shortlist\\), fewer than k 10 \\(4 such users"):
        sweep_stage(cfg, ds, eng, vals, req, pool)
    out = sweep_stage({**cfg, "ks": [3]}, ds, eng, vals, req, pool)
    assert (out["per_user"].in_pool == 1).all()


def test_nominator_top_n_takes_every_candidate_of_a_user_with_fewer():
    from bench.stages.data import _top_n

    cand = np.array([[True, False, True, False, True], [True, True, True, True, True]])
    mask = _top_n(np.array([[5.0, 9, 1, 9, 3], [5, 4, 3, 2, 1]]), cand, 4)
    assert mask.tolist() == [[True, False, True, False, True], [True, True, True, True, False]]


def test_provenance_shares_by_hand():
    # 2 users × 6 items; bits: engagement 1, random 2; item 5 is outside the pool
    nominated = np.array([[1, 1, 2, 3, 0, 0], [2, 0, 1, 1, 2, 0]], dtype=np.uint8)
    pool = {"pool": nominated > 0, "nominated": nominated, "nominators": list(NOMINATORS)}
    top = np.array([[0, 3, 2, 5], [0, 4, 2, 5]])
    s = provenance_shares(pool, 0, 2, top)
    assert set(s) == {"from_engagement", "from_random", "in_pool"}  # untrained is unused
    assert s["from_engagement"].tolist() == [0.5, 0.25]
    assert s["from_random"].tolist() == [0.5, 0.5]
    assert s["in_pool"].tolist() == [0.75, 0.75]
    assert provenance_shares({"pool": nominated > 0}, 0, 2, top) == {}  # pool: all


def test_pool_sources_on_a_constructed_run():
    rows = []  # pool, w, user, satisfaction, from engagement, from random, in pool
    for u in (1, 2):
        rows += [("shortlist", 0.0, u, 0.2, 0.8, 0.2, 1.0),
                 ("shortlist", 1.0, u, 0.9, 0.2 * u, 0.6, 1.0),
                 ("all", 0.0, u, 0.7, 0.0, 0.0, 1.0),
                 ("all", 1.0, u, 0.6, 0.0, 0.0, 0.1 * u)]
    df = pd.DataFrame(rows, columns=["pool", "w_control", "user_id", "genre_accuracy",
                                     "from_engagement", "from_random", "in_pool"]).assign(
        method="m", context="none", aggregation="rank", k=5)
    t = pool_sources(df, "genre_accuracy", 5)
    assert len(t) == 1
    r = t.iloc[0]
    assert r.w == 1.0 and r.from_engagement == pytest.approx(0.3)
    assert r.from_random == pytest.approx(0.6)
    # the full-set series peaks at w=0 (0.7 > 0.6), where all of its top-k are in the pool
    assert r.w_all == 0.0 and r.all_in_pool == pytest.approx(1.0)
    assert pool_sources(df.drop(columns=["from_engagement", "from_random"]),
                        "genre_accuracy", 5) is None


def test_full_set_methods_also_get_sweeps_over_all_items(ds, eng, tmp_path):
    suite = write_suite(tmp_path, "full", "{kind: shortlist, engagement: 6, random: 6}",
                        "[{name: tfidf}, {name: direct}]")
    plan = build_plan(suite, 12)
    sweeps = {s.label: s for s in plan if s.stage == "sweep"}
    assert set(sweeps) == {"sweep[tfidf,rank,0:12]", "sweep[tfidf,rank,all,0:12]",
                           "sweep[direct,none,rank,0:12]"}
    assert {c["pool"] for c in suite.grid() if c["method"] == "tfidf"} == {"shortlist", "all"}
    assert {c["pool"] for c in suite.grid() if c["method"] == "direct"} == {"shortlist"}
    # an all-items pool needs no second sweep
    assert len([s for s in build_plan(write_suite(tmp_path, "a", "{kind: all}"), 12)
                if s.stage == "sweep"]) == 1
    # the two tfidf sweeps on real data: the shortlist confines the top-k, all items do not
    split = split_of(ds)
    users = split.user_ids[:12]
    req = requests(users)
    pool = pool_stage({**plan[[s.label for s in plan].index("pool")].config}, ds, eng, req)
    from ctrlrec.lexical import tfidf_values
    vals = tfidf_values({"name": "tfidf"}, ds, req)
    outs = {label: sweep_stage(s.config, ds, eng, vals, req, pool)
            for label, s in sweeps.items() if "tfidf" in label}
    short = outs["sweep[tfidf,rank,0:12]"]["per_user"]
    full = outs["sweep[tfidf,rank,all,0:12]"]["per_user"]
    assert (short.in_pool == 1).all() and "from_random" in short
    # the shortlist's cap on genre accuracy: its comedies, out of k
    comedies = (pool["pool"] & ds["items"].Comedy.to_numpy(dtype=bool)).sum(axis=1)
    assert short[short.w_control == 0.0].genre_ceiling.tolist() == \
        (np.minimum(comedies, 5) / 5).tolist()
    assert (short.genre_accuracy <= short.genre_ceiling + 1e-9).all()
    assert (full.genre_ceiling == 1.0).all()
    assert full[full.w_control == 1.0].in_pool.mean() < 0.5   # comedies beyond the shortlist
    assert (full[full.w_control == 1.0].genre_accuracy >= short[short.w_control == 1.0]
            .genre_accuracy.to_numpy()).all()
    # per-user data carries the pool label of each series
    result = SimpleNamespace(outputs={"requests": req, **outs})
    plan_tfidf = [s for s in plan if s.stage == "sweep" and "tfidf" in s.label]
    suite_tfidf = suite.model_copy(update={"methods": suite.methods[:1]})
    per_user, recs = per_user_metrics(suite_tfidf, plan_tfidf, result)
    assert per_user.groupby("pool").size().to_dict() == {"all": 36, "shortlist": 36}
    assert [labels["pool"] for labels, _, _ in recs] == ["shortlist", "all"]


def test_report_shows_the_pool_table_and_flags_an_embedding_pool(tmp_path):
    from bench.report import render, sections, statistics, tables

    rng = np.random.default_rng(0)
    frames = []
    for method, over in (("untrained", "shortlist"), ("untrained", "all"), ("direct", "shortlist")):
        for w in (0.0, 1.0):
            n = 20
            frames.append(pd.DataFrame({
                "method": method, "context": "none", "aggregation": "rank", "pool": over,
                "user_id": np.arange(n), "w_control": w, "k": 5,
                "genre_accuracy": rng.uniform(0, 1, n) * (0.5 + w / 2), "precision": 0.1,
                "recall": 0.1, "ndcg": 0.1, "from_engagement": 1 - w / 2,
                "from_untrained": w / 2 + 0.1, "in_pool": 1.0 if over == "shortlist" else 0.4}))
    per_user = pd.concat(frames, ignore_index=True)
    cells = tables.cells_table(per_user, "0" * 16)
    t1 = statistics.table1(per_user, "genre_accuracy", 5)
    assert set(zip(t1.method, t1.pool)) == {("untrained", "shortlist"), ("untrained", "all"),
                                            ("direct", "shortlist")}
    pairs = statistics.paired_comparisons(per_user, "genre_accuracy", 5)
    assert list(pairs.pool) == ["shortlist"]  # pairs only within one pool
    src = pool_sources(per_user, "genre_accuracy", 5)
    assert list(src.method) == ["direct", "untrained"]
    assert src.set_index("method").loc["untrained", "all_in_pool"] == pytest.approx(0.4)
    assert np.isnan(src.set_index("method").loc["direct", "all_in_pool"])
    manifest = {"suite": {"name": "p", "pool": {"kind": "shortlist", "model": "all-MiniLM-L6-v2"}},
                "config_hash": "0" * 16, "n_users": 20,
                "pool": {"kind": "shortlist", "mean_items_per_user": 39.5, "embedding_nominator": True,
                         "nominators": {"engagement": {"asked": 20, "mean_nominated": 20.0},
                                        "untrained": {"asked": 20, "mean_nominated": 20.0}}}}
    pareto = statistics.pareto_summary(cells, "genre_accuracy", 5)
    text = render.markdown(sections.build(manifest, cells, t1, pareto, pairs, run_dir=tmp_path,
                                          sources=src))
    assert "## Candidate pool: where each method's top-k comes from" in text
    assert "engagement top-N (20) ∪ untrained embedding top-N (20)" in text
    assert text.count("favours embedding methods") >= 3  # facts, Warnings and the pool section
    manifest["pool"].update(embedding_nominator=False, nominators={
        "engagement": {"asked": 20, "mean_nominated": 20.0},
        "random": {"asked": 20, "mean_nominated": 20.0}})
    text = render.markdown(sections.build(manifest, cells, t1, pareto, pairs, run_dir=tmp_path,
                                          sources=src))
    assert "favours embedding" not in text and "seeded random sample (20)" in text
