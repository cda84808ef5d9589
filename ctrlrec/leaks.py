"""Requests that name one of the user's test items.

LLM requests are written from the user's ratings, by default those of the test half (as in the
paper), so a model may simply name one of them ("A Life Less Ordinary"), and the item it names
then counts as a hit. Each written request is checked against the titles of the user's test items;
a request that names one is written again with those titles forbidden, and when every try still
names one, the titles are replaced by a neutral phrase (`scrub`).

When a title counts as named: its words appear in the request in order, as whole words, compared
without case, accents or punctuation ("G.I. Jane" is named by "g.i. jane" and "G I Jane"), with
or without a leading article ("The English Patient" also as "English Patient") and without an
alternative title in brackets. Titles of fewer than 4 letters and digits (M, Ed, Ran, I.Q.) are
ignored: as words they turn up in ordinary requests. For the same reason a title of one word
(or an article and one word, which then needs its article) counts only when capitalised other
than as the first word of a sentence: "a movie about a mother" does not name "Mother", nor
"Show me a drama" "The Show", but "something like Mother" does."""

from __future__ import annotations

import re
import unicodedata

import pandas as pd

from .data import Split, display_title

MIN_CHARS = 4
LEAK_PHRASE = "a {noun} I liked"  # what a named title becomes when every try named one
ARTICLES = ("the", "a", "an")
_WORD = re.compile(r"[^\W_]+")


def _fold(word: str) -> str:
    return "".join(c for c in unicodedata.normalize("NFKD", word)
                   if not unicodedata.combining(c)).lower()


def _forms(title: str) -> set[tuple[str, ...]]:
    """The word sequences that count as naming `title` (display form, year dropped)."""
    out = set()
    for name in {title, title.split(" (")[0]}:
        words = tuple(_fold(w) for w in _WORD.findall(name))
        out.add(words)
        if len(words) > 2 and words[0] in ARTICLES:  # "The Show" never as "Show"
            out.add(words[1:])
    return {f for f in out if len("".join(f)) >= MIN_CHARS}


def _named_word(text: str, word: re.Match) -> bool:
    """A one-word title counts when capitalised, and not merely as a sentence's first word."""
    before = text[:word.start()].rstrip(" \"'(")
    return word.group()[0].isupper() and bool(before) and before[-1] not in ".!?"


def find_titles(text: str, titles: list[str]) -> list[tuple[str, int, int]]:
    """(title, start, end) of each place `text` names one of `titles`; overlapping matches keep
    the longest."""
    words = list(_WORD.finditer(text))
    folded = [_fold(m.group()) for m in words]
    hits = []
    for title in titles:
        for form in _forms(title):
            n = len(form)
            for i in range(len(words) - n + 1):
                if tuple(folded[i:i + n]) == form and (n > 1 or _named_word(text, words[i])):
                    hits.append((title, words[i].start(), words[i + n - 1].end()))
    kept: list[tuple[str, int, int]] = []
    for hit in sorted(hits, key=lambda h: (h[1], -(h[2] - h[1]))):
        if not kept or hit[1] >= kept[-1][2]:
            kept.append(hit)
    return kept


def leaked(text: str | None, titles: list[str]) -> list[str]:
    """The titles among `titles` that `text` names, sorted."""
    return sorted({t for t, _, _ in find_titles(text or "", titles)})


def scrub(text: str, titles: list[str], phrase: str) -> tuple[str, int]:
    """`text` with every title it names replaced by `phrase` (e.g. "a movie I liked"), and the
    number of its own words left besides the replacements (few: the request was little more than
    the title)."""
    out, last, own = [], 0, 0
    for _, start, end in find_titles(text, titles):
        out += [text[last:start], phrase]
        own += len(_WORD.findall(text[last:start]))
        last = end
    own += len(_WORD.findall(text[last:]))
    return "".join(out + [text[last:]]), own


def held_out_titles(split: Split, items: pd.DataFrame, user_ids) -> dict[int, list[str]]:
    """Per user, the display titles (no year) of their test items."""
    names = dict(zip(items.item_id, (display_title(str(t)) for t in items.title)))
    test = split.test[split.test.user_id.isin([int(u) for u in user_ids])]
    return {int(u): sorted({names[i] for i in g.item_id if i in names})
            for u, g in test.groupby("user_id")}


class LeakGuard:
    """Across a generator's tries: which titles each user's tries named (forbidden in their next
    prompt) and their first request that was valid but for naming one (what `scrub` rewrites)."""

    def __init__(self, titles: dict[int, list[str]]):
        self.titles = titles
        self.avoid: dict[int, list[str]] = {}
        self.first: dict[int, str] = {}
        self.passed: set[int] = set()

    def clean(self, user: int, text: str) -> bool:
        """Whether an otherwise valid request names none of the user's test items (call it only
        for requests that will be taken when it does not)."""
        named = leaked(text, self.titles.get(user, []))
        if named:
            self.avoid[user] = sorted(set(self.avoid.get(user, [])) | set(named))
            self.first.setdefault(user, text)
        else:
            self.passed.add(user)
        return not named

    def scrubbed(self, user: int, words) -> tuple[str, int]:
        """The user's first leaking request with its titles replaced (see `scrub`)."""
        return scrub(self.first[user], self.titles[user], words.fill(LEAK_PHRASE))

    def outcome(self, user: int) -> str:
        """'' (no try named a test item), 'rewritten' (a later try wrote a clean request) or
        'scrubbed' (none did: the titles were replaced, or the template request taken)."""
        if user not in self.first:
            return ""
        return "rewritten" if user in self.passed else "scrubbed"


def leak_stats(requests: pd.DataFrame) -> dict:
    """Counts for the manifest: requests whose tries named a test item, and how each was fixed."""
    col = requests["leak"] if "leak" in requests else pd.Series([""] * len(requests))
    return {"found": int((col != "").sum()), "rewritten": int((col == "rewritten").sum()),
            "scrubbed": int((col == "scrubbed").sum())}
