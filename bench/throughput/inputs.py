"""The texts that are scored: plausible requests, and MovieLens (or a file's) item texts."""

from __future__ import annotations

from pathlib import Path

from .config import ThroughputError


def request_texts(n: int) -> list[str]:
    """n distinct, plausible requests (phrasing × genre × occasion)."""
    phrasings = ["I'd like {g} movie {o}.", "Show me {g} film {o}.",
                 "Any good {g} picture {o}?", "Looking for {g} movie to watch {o}.",
                 "Recommend me {g} film {o}, please."]
    genres = ["a horror", "a crime", "a funny", "a romantic", "a war", "a sci-fi", "an animated",
              "a musical", "a documentary", "a thriller", "an adventure", "a children's"]
    occasions = ["tonight", "this weekend", "with my family", "on a rainy day", "after work",
                 "with friends", "on a long flight", "for a date night", "on my own",
                 "before bed", "on Sunday", "with my kids", "for a movie club", "on a holiday",
                 "to cheer me up", "that is not too long", "from the nineties",
                 "that critics loved", "I have not seen", "with a twist"]
    out = [p.format(g=g, o=o) for o in occasions for g in genres for p in phrasings]
    return [out[i % len(out)] + ("" if i < len(out) else f" (#{i})") for i in range(n)]


def item_texts(spec: str) -> list[str]:
    """MovieLens item texts (title, year, genres), or one text per line of a file."""
    if spec != "movielens":
        texts = [x.strip() for x in Path(spec).read_text().splitlines() if x.strip()]
        if not texts:
            raise ThroughputError(f"item_texts: {spec}: no lines")
        return texts
    from ctrlrec.data import item_texts as ml_texts, load_movielens
    return list(ml_texts(load_movielens().items))
