"""The method registry: one entry per method, and adding one is a module plus one line (the README's
worked example is the tfidf method, checked here against the code it shows)."""

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bench import methods
from bench.methods import METHODS, Method
from bench.plan import build_plan
from bench.suite import MethodCfg
from bench.suitefile import SuiteError, load_suite
from ctrlrec.data import ML_GENRES, item_texts

ROOT = Path(__file__).parent.parent


def test_every_entry_is_complete_and_importable():
    fields = set(MethodCfg.model_fields)
    for name, m in METHODS.items():
        assert callable(m.function()), name
        assert set(m.key_fields) <= fields and "name" in m.key_fields, name
    with pytest.raises(ValueError, match="unknown input or model 'users'"):
        Method("x:y", ("users",), ("name",))


def test_the_readme_example_is_the_code():
    readme = (ROOT / "README.md").read_text()
    line = next(x.strip() for x in (ROOT / "bench/methods.py").read_text().splitlines()
                if x.strip().startswith('"tfidf": Method('))
    assert line in readme  # the registry line, as the README shows it
    block = re.search(r"```python\n# ctrlrec/lexical.py\n(.*?)```", readme, re.S).group(1)
    code = (ROOT / "ctrlrec/lexical.py").read_text()
    for src in block.strip().splitlines():  # every line shown is a line of the module
        assert src.strip() in code, src


def test_tfidf_finds_the_requested_genre(movielens):
    items = movielens.items.assign(text=item_texts(movielens.items))
    req = {"requests": pd.DataFrame({"user_id": [1, 2],
                                     "text": ["I want a horror movie", "a western, please"]})}
    values = METHODS["tfidf"].function()({"name": "tfidf"}, {"items": items}, req)["values"]
    assert values.shape == (2, len(items)) and values.dtype == np.float32
    for row, genre in enumerate(("Horror", "Western")):
        top = np.argsort(-values[row])[:10]
        assert items[genre].to_numpy()[top].mean() == 1.0


def lead_genre_values(config: dict, ds: dict, req: dict) -> dict:
    """A method as a user would add it: 1 for items of the genre the request names, else 0."""
    flags = ds["items"][ML_GENRES].to_numpy(dtype=np.float32)
    named = [[g.lower() in t.lower() for g in ML_GENRES] for t in req["requests"].text]
    return {"values": (np.asarray(named, dtype=np.float32) @ flags.T).clip(0, 1)}


@pytest.mark.slow
def test_a_new_method_is_one_function_and_one_entry(monkeypatch, tmp_path, movielens):
    monkeypatch.setitem(METHODS, "lead_genre", Method(f"{__name__}:lead_genre_values",
                                                      ("dataset", "requests"), ("name",)))
    f = tmp_path / "s.yaml"
    f.write_text("name: t\nusers: 20\nmethods: [{name: untrained}, {name: lead_genre}]\n")
    suite = load_suite(f)
    steps = {s.label: s for s in build_plan(suite, 20)}
    step = steps["values[lead_genre]"]
    assert step.deps == ["dataset", "requests"] and step.config == {"name": "lead_genre"}
    assert "sweep[lead_genre,rank,0:20]" in steps
    items = movielens.items.assign(text=item_texts(movielens.items))
    out = METHODS["lead_genre"].function()(step.config, {"items": items},
                                           {"requests": pd.DataFrame({"text": ["some Drama"]})})
    assert out["values"][0].sum() == movielens.items.Drama.sum()
    monkeypatch.delitem(METHODS, "lead_genre")
    with pytest.raises(SuiteError, match="unknown method 'lead_genre'"):
        load_suite(f)
    assert methods.llm_free_methods() == ["untrained", "distilled", "tfidf"]
