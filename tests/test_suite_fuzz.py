"""Property tests of the suite validator: whatever a suite file or a --set override holds, loading
it either gives a Suite or raises SuiteError (one line) — never another exception."""

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench.suite import Suite
from bench.suitefile import SuiteError, load_suite

# Real keys (so that generated files get past the top level and into the nested models), with
# some unknown ones mixed in.
KEYS = ["name", "description", "seed", "users", "data", "engagement", "requests", "methods",
        "pool", "judge", "contexts", "aggregation", "w_control", "k", "path", "split",
        "train_fraction", "items", "text", "llm", "backend", "model", "dtype", "batch_size",
        "threads", "num_gpus", "base_url", "retries", "timeout", "epochs", "kind", "generator",
        "start", "stop", "step", "ws", "mass_threshold", "distill", "teacher", "engagement",
        "untrained", "encoder", "act_fn", "bogus", "0", ""]
WORDS = ["untrained", "direct", "distilled", "all", "none", "history:3", "history:0", "rank",
         "minmax", "hf", "openai", "vllm", "genre", "open_ended", "llm", "template", "shortlist",
         "bivae", "popularity", "float32", "smoke", "x y", "-1", "1e309", "nan", ".inf"]

scalars = (st.none() | st.booleans() | st.integers(-10**12, 10**12)
           | st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from(WORDS)
           | st.text(max_size=12))
values = st.recursive(
    scalars,
    lambda inner: (st.lists(inner, max_size=4)
                   | st.dictionaries(st.sampled_from(KEYS), inner, max_size=5)),
    max_leaves=25)
suites = st.fixed_dictionaries(
    {}, optional={"name": st.sampled_from(["smoke", "a b", ""]) | scalars,
                  "methods": st.lists(st.fixed_dictionaries(
                      {"name": st.sampled_from(["untrained", "direct", "distilled", "dirct"])},
                      optional={"llm": values, "model": values, "distill": values}), max_size=3)
                  | values,
                  **{k: values for k in ("users", "data", "engagement", "requests", "pool",
                                         "judge", "contexts", "aggregation", "w_control", "k",
                                         "seed", "bogus")}})

FUZZ = settings(max_examples=200, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])


def _load(tmp_path, text, overrides=()):
    f = tmp_path / "fuzz.yaml"
    f.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8", "surrogatepass"))
    try:
        suite = load_suite(f, overrides)
    except SuiteError as exc:
        assert "\n" not in str(exc) and str(exc).startswith((str(f), "--set"))
        return None
    assert isinstance(suite, Suite)
    suite.grid()  # a valid suite expands to a finite grid
    return suite


@pytest.mark.slow
@FUZZ
@given(doc=suites)
def test_structured_suites_load_or_fail_with_one_line(tmp_path, doc):
    _load(tmp_path, yaml.safe_dump(doc, allow_unicode=True))


@FUZZ
@given(text=st.text(max_size=200) | st.binary(max_size=200))
def test_arbitrary_text_loads_or_fails_with_one_line(tmp_path, text):
    _load(tmp_path, text)


@FUZZ
@given(overrides=st.lists(st.text(max_size=30) | st.builds(
    lambda k, v: f"{k}={v}", st.lists(st.sampled_from(KEYS) | st.sampled_from(["0", "1", "9"]),
                                      min_size=1, max_size=4).map(".".join),
    st.sampled_from(WORDS) | st.text(max_size=10)), max_size=3))
def test_overrides_load_or_fail_with_one_line(tmp_path, overrides):
    _load(tmp_path, "name: t\nmethods: [{name: untrained}, {name: direct}]\n", overrides)
