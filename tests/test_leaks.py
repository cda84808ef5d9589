"""Requests that name one of the user's test items: the detector, and the generators' rewrite
path (a retry that forbids the titles, then replacing them) on hand-written answers in the real
LLM cache, so no model runs."""

import pytest

from ctrlrec.leaks import held_out_titles, leak_stats, leaked, scrub
from ctrlrec.llm.cache import CachedLLM, LLMCache, call_key
from ctrlrec.llm.prompts import OPEN_STYLES, genre_request_chat, open_request_chat
from ctrlrec.requests import (
    REQUEST_GENRES,
    liked_lines,
    llm_genre_requests,
    llm_open_requests,
)


def test_user_570s_request_is_his_test_item(split, movielens):
    titles = held_out_titles(split, movielens.items, [570])[570]
    assert "A Life Less Ordinary" in titles and "The English Patient" in titles
    assert leaked("A Life Less Ordinary", titles) == ["A Life Less Ordinary"]
    assert leaked("Something with a Life Less Ordinary feel", titles) == ["A Life Less Ordinary"]
    assert leaked("a life that is less ordinary than mine", titles) == []  # not in a row
    assert leaked("A romantic comedy with some bite", titles) == []


@pytest.mark.parametrize("text, titles, expected", [
    ("I loved g.i. jane and want more", ["G.I. Jane"], ["G.I. Jane"]),     # punctuation
    ("Something like AMELIE, please", ["Amélie"], ["Amélie"]),            # case and accents
    ("A story about a mother and her son", ["Mother"], []),               # one word: lowercase
    ("Something like Mother, but funnier", ["Mother"], ["Mother"]),       # ... capitalised
    ("Show me a drama. Fear no sequels", ["The Show", "Fear"], []),       # ... starting a sentence
    ("Ed and Ran are fine", ["Ed", "Ran", "I.Q."], []),                   # under 4 characters
    ("No Evitation or Spawning", ["Evita", "Spawn"], []),                 # whole words only
    ("More like Shanghai Triad", ["Shanghai Triad (Yao a yao yao dao waipo qiao)"],
     ["Shanghai Triad (Yao a yao yao dao waipo qiao)"]),                  # alternative title
    (None, ["Fargo"], []),
])
def test_the_detector(text, titles, expected):
    assert leaked(text, titles) == expected


def test_scrub_replaces_every_named_title():
    text, own = scrub("Something like The English Patient or Fargo, but shorter",
                      ["The English Patient", "Fargo"], "a movie I liked")
    assert text == "Something like a movie I liked or a movie I liked, but shorter"
    assert own == 5 and leaked(text, ["The English Patient", "Fargo"]) == []
    assert scrub("A Life Less Ordinary", ["A Life Less Ordinary"], "x") == ("x", 0)


def _cached(tmp_path, request, answers: dict) -> CachedLLM:
    """The real LLM cache holding `answers` ({(prompt, params): text}); a prompt without one
    would load the tiny random model (and fail the test's assertions)."""
    identity = {"model": "hand-written answers"}
    cache = LLMCache(tmp_path / "llm.sqlite")
    cache.put_many("generate", {call_key(identity, "generate", p, dict(params)): text
                                for (p, params), text in answers.items()})
    return CachedLLM(lambda: request.getfixturevalue("tiny_backend"), identity, cache)


def test_a_leaking_request_is_written_again_then_scrubbed(split, movielens, tmp_path, request):
    items = movielens.items
    other = next(int(u) for u in split.user_ids if u != 570 and any(
        len(t.split()) > 2 for t in held_out_titles(split, items, [u]).get(int(u), [])))
    users = [570, other]
    title = next(t for t in held_out_titles(split, items, [other])[other] if len(t.split()) > 2)
    lines = liked_lines(split, items)
    def draw(chat):  # the prompt as a completion model reads it
        return f"{chat.system}\n\n{chat.user}"

    greedy, sampled = {"max_new_tokens": 64, "temperature": 0.0, "seed": 0}, \
        {"max_new_tokens": 64, "temperature": 0.8, "seed": 1}

    def ask(u, style, avoid=()):
        return draw(open_request_chat(lines[u], style, [], avoid=list(avoid)))

    answers = {  # 570 names his test item, then writes a clean request; `other` names one twice
        (ask(570, OPEN_STYLES[0]), tuple(greedy.items())):
            "<statement>A Life Less Ordinary</statement>",
        (ask(570, OPEN_STYLES[0], ["A Life Less Ordinary"]), tuple(sampled.items())):
            "<statement>I want a quirky romantic caper tonight.</statement>",
        (ask(other, OPEN_STYLES[1]), tuple(greedy.items())):
            f"<statement>Something like {title}, but darker.</statement>",
        (ask(other, OPEN_STYLES[1], [title]), tuple(sampled.items())):
            f"<statement>Just {title} again for me.</statement>",
    }
    llm = _cached(tmp_path, request, answers)
    df = llm_open_requests(llm, draw, split, items, users, tries=2).set_index("user_id")
    assert llm.calls == 0  # every prompt asked, retries included, was one written above
    assert df.loc[570, "text"] == "I want a quirky romantic caper tonight."
    assert df.loc[other, "text"] == "Something like a movie I liked, but darker."
    assert list(df.leak) == ["rewritten", "scrubbed"] and (df.source == "llm").all()
    assert leak_stats(df.reset_index()) == {"found": 2, "rewritten": 1, "scrubbed": 1}

    # genre requests: both tries name the test item; the replaced request keeps its one genre
    genres = list(REQUEST_GENRES)
    g0, g1 = ({**p, "max_new_tokens": 48} for p in (greedy, sampled))
    answers = {
        (draw(genre_request_chat(lines[570], genres)), tuple(g0.items())):
            "I'd love a drama like The English Patient.",
        (draw(genre_request_chat(lines[570], genres, avoid=["The English Patient"])),
         tuple(g1.items())): "The English Patient is the drama I want again.",
    }
    llm = _cached(tmp_path / "g", request, answers)
    df = llm_genre_requests(llm, draw, split, items, [570], tries=2)
    assert llm.calls == 0
    assert df.text.tolist() == ["I'd love a drama like a movie I liked."]
    assert df.genre.tolist() == ["Drama"] and df.leak.tolist() == ["scrubbed"]
