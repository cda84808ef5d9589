import textwrap
from pathlib import Path

import pytest

from bench.suitefile import SuiteError, load_suite


def write(tmp_path, body):
    p = tmp_path / "s.yaml"
    p.write_text(textwrap.dedent(body))
    return p


BASE = """
name: t
methods: [{name: untrained}]
"""


def error_of(tmp_path, body, overrides=()):
    with pytest.raises(SuiteError) as err:
        load_suite(write(tmp_path, body), overrides)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(str(tmp_path / "s.yaml"))
    return msg


def test_shipped_suites_are_valid(capsys):
    """`bench validate` checks both kinds of suite file: benchmark suites (`bench run`) and
    throughput suites (`bench throughput`, their own schema), told apart by their keys."""
    import glob

    from bench.cli import main
    paths = sorted(glob.glob("suites/**/*.yaml", recursive=True))
    assert main(["validate", *paths]) == 0, capsys.readouterr().err
    out = capsys.readouterr().out.splitlines()
    assert [line.split(": ok — ")[0] for line in out] == paths
    kinds = ["throughput suite" in line for line in out]
    assert kinds == [Path(p).stem == "throughput" for p in paths]
    genre = load_suite("suites/genre_untrained.yaml")
    assert genre.users == "all" and len(genre.ws()) == 21 and genre.k == [5, 10]
    assert genre.ws()[0] == 0.0 and genre.ws()[-1] == 1.0 and 0.05 in genre.ws()
    assert len(genre.grid()) == 42
    load_suite("suites/smoke.yaml")


# The one-line errors of bad suites: tests/test_bad_inputs.py (through `bench run`)


def test_validate_reports_every_file_and_fails_if_any_is_bad(tmp_path, capsys):
    from bench.cli import main
    bad = write(tmp_path, "name: t\nk: [0]\n")
    missing = tmp_path / "none.yaml"
    assert main(["validate", "suites/smoke.yaml", str(bad), str(missing),
                 "suites/throughput.yaml"]) == 2
    out, err = capsys.readouterr()
    assert [line.split(":")[0] for line in out.splitlines()] == ["suites/smoke.yaml",
                                                                 "suites/throughput.yaml"]
    assert err.splitlines() == [f"error: {bad}: k[0]: Input should be greater than or equal to 1 "
                                "(got 0)", f"error: {missing}: no such file"]


def test_overrides_take_precedence_and_are_validated(tmp_path):
    s = load_suite(write(tmp_path, BASE), ["engagement.epochs=7", "users=12"])
    assert s.engagement.epochs == 7 and s.users == 12
    with pytest.raises(SuiteError, match="engagement.epochs"):
        load_suite(write(tmp_path, BASE), ["engagement.epochs=0"])
    s = load_suite(write(tmp_path, BASE), ["methods.0.model=my-model"])
    assert s.methods[0].model == "my-model"
    with pytest.raises(SuiteError, match="not an index"):
        load_suite(write(tmp_path, BASE), ["methods.3.model=x"])


def test_engagement_keys_keep_their_shape(tmp_path):
    # bivae's cache key and the config hashes of earlier runs depend on these exact keys
    assert load_suite(write(tmp_path, BASE)).engagement.model_dump(mode="json") == {
        "model": "bivae", "k": 50, "encoder": [100], "act_fn": "tanh", "likelihood": "pois",
        "epochs": 500, "batch_size": 128, "learning_rate": 0.001}
    bpr = load_suite(write(tmp_path, BASE), ["engagement.model=bpr", "engagement.params.k=50",
                                             "engagement.params.learning_rate=1"]).engagement
    assert bpr.model_dump(mode="json") == {  # canonical name; ints as floats; one SGD thread
        "model": "BPR", "params": {"k": 50, "learning_rate": 1.0, "num_threads": 1}}
    neumf = load_suite(write(tmp_path, BASE + "engagement: {model: NeuMF}\n")).engagement
    assert neumf.params == {"backend": "pytorch"}  # not cornac's tensorflow default


def test_config_hash_ignores_description_only(tmp_path):
    a = load_suite(write(tmp_path, BASE))
    b = load_suite(write(tmp_path, BASE + "description: other words\n"))
    c = load_suite(write(tmp_path, BASE + "seed: 1\n"))
    assert a.config_hash() == b.config_hash() != c.config_hash()


def test_backend_and_request_rules(tmp_path):
    msg = error_of(tmp_path, BASE + "requests: {kind: open_ended, generator: template}\n")
    assert "generator: llm" in msg
    msg = error_of(tmp_path, "name: t\nmethods: [{name: direct, llm: {backend: openai}}]\n")
    assert "base_url" in msg and "methods[0].llm" in msg
    msg = error_of(tmp_path, "name: t\nmethods: [{name: direct, llm: {backend: tgi}}]\n")
    assert "'hf'" in msg and "'vllm'" in msg and "'openai'" in msg
    msg = error_of(tmp_path, BASE + "judge: {k: [20]}\n")
    assert "judge.k" in msg


def test_a_shortlist_must_guarantee_the_largest_k_per_user(tmp_path):
    # engagement 3 nominates 3 items per user: a top-10 would need 7 items seen in train
    msg = error_of(tmp_path, BASE + "pool: {kind: shortlist, engagement: 3, random: 0}\n"
                   "k: [5, 10]\n")
    assert msg == (f"{tmp_path / 's.yaml'}: pool: shortlist(engagement 3) guarantees a user only "
                   "3 items (nominators may overlap, so only the largest counts), fewer than the "
                   "largest k, 10; allowed: engagement, random or untrained of at least 10, or k "
                   "up to 3")
    # the random sample may fall inside the engagement top: 8 + 8 guarantees 8, not 16
    msg = error_of(tmp_path, BASE + "pool: {kind: shortlist, engagement: 8, random: 8}\n",
                   ["k=[5, 10]"])
    assert "(with --set): pool: shortlist(engagement 8 + random 8) guarantees a user only 8" in msg
    for ok in ("pool: {kind: shortlist, engagement: 3, random: 10}\nk: [5, 10]\n",
               "pool: {kind: shortlist, engagement: 5, random: 0}\nk: [5]\n",
               # per_category's size per user is the data's (less the user's train items)
               "pool: {kind: shortlist, engagement: 3, random: 0, per_category: 1}\nk: [10]\n",
               "pool: {kind: all}\nk: [100]\n"):
        load_suite(write(tmp_path, BASE + ok))


def test_own_requests_enter_the_plan_only_when_asked(tmp_path):
    from bench.plan import build_plan
    suite = Path(__file__).parent.parent / "suites" / "genre_direct.yaml"
    base = load_suite(suite, ["seeds=[0]"])
    more = load_suite(suite, ["seeds=[0]", "methods.2.distill.own_requests=30"])
    plain, own = ({s.label: s for s in build_plan(x, 150)} for x in (base, more))
    assert "own" not in plain["train_requests"].config and plain["train_requests"].deps == []
    assert own["train_requests"].config["own"] == {"n": 30, "kind": "genre", "users": 150,
                                                   "seed": 0}
    assert own["train_requests"].deps == ["dataset"]
    changed = {k for k in plain if plain[k].key != own[k].key}
    assert changed == {"train_requests", "teacher_labels", "student", "values[distilled]",
                       *[k for k in plain if k.startswith("sweep[distilled")]}
