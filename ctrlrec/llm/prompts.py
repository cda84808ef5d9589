"""Every prompt the project sends to an LLM, in one place.

Bump PROMPTS_VERSION when a template changes: it is part of every cache key and manifest. The
item always comes last in a rating prompt, so that everything about the request (and the user's
history) forms a shared prefix whose attention state is computed once per request. The prefix ends
with a newline, so that tokenising prefix and item separately gives the same tokens as tokenising
the whole prompt (a trailing space would merge with the item's first word)."""

from __future__ import annotations

from dataclasses import dataclass

PROMPTS_VERSION = 1
ITEM_SLOT = "\x00ITEM\x00"  # marks where the item goes when a prompt is split into prefix/suffix

RATE_SYSTEM = (
    "You assist a movie recommender. A viewer says what they would like to watch, and you judge "
    "single movies against that wish. Answer with one digit only: 1 = does not fit the request at "
    "all, 2 = fits poorly, 3 = fits somewhat, 4 = fits well, 5 = fits the request perfectly."
)
RATE_USER = (
    "The viewer's request: \"{request}\"\n"
    "{history}"
    "How well does the following movie fit this request? Reply with a single digit.\n"
    "Movie:\n{item}"
)
HISTORY_BLOCK = "Movies this viewer rated most recently (rating out of 5):\n{lines}\n"

JUDGE_SYSTEM = (
    "You grade a list of movies that a recommender showed a viewer in reply to their request. "
    "Scale: 1 = poor, few or none of the movies match; 3 = good, many of them match; "
    "5 = excellent, every movie matches the request strongly. Answer with one digit only."
)
JUDGE_USER = "The viewer's request: \"{request}\"\nRecommended movies:\n{items}\nGrade the list."

GENRE_REQUEST_SYSTEM = (
    "You write what a movie viewer might type into a recommender. Given the movies they rated, "
    "write one sentence in the first person in which they ask for a movie of exactly one genre "
    "that they would want to watch next. Pick the genre from this list: {genres}. Name that one "
    "genre and no other, mention no movie titles, and say nothing about what to avoid. "
    "Reply with the sentence only."
)
OPEN_REQUEST_SYSTEM = (
    "You write what a movie viewer might type into a recommender. Given the movies they rated, "
    "write one short, casual sentence in the first person about the kind of movie they want to "
    "watch right now. It may be about genre, theme, style, look, acting or mood. Write it in a "
    "{style} way. Put the sentence between <statement> and </statement>."
)
OPEN_STYLES = ("direct", "descriptive", "mood-based", "preference-focused", "contextual",
               "comparative")
REQUEST_USER = "Movies this viewer rated (out of 5):\n{lines}\n{earlier}Now write the request."
EARLIER_BLOCK = "Requests other viewers already wrote (write something different):\n{lines}\n"


@dataclass(frozen=True)
class Chat:
    system: str
    user: str


def history_block(lines: list[str]) -> str:
    return HISTORY_BLOCK.format(lines="\n".join(f"- {x}" for x in lines)) if lines else ""


def rating_chat(request: str, history: list[str] = ()) -> Chat:
    """The direct-scoring conversation with ITEM_SLOT where the movie goes."""
    return Chat(RATE_SYSTEM, RATE_USER.format(request=request, history=history_block(list(history)),
                                              item=ITEM_SLOT))


def judge_chat(request: str, items: list[str] | None = None) -> Chat:
    """Without `items`, ITEM_SLOT stands where the list goes (so the request is a shared prefix)."""
    listing = ITEM_SLOT if items is None else judge_listing(items)
    return Chat(JUDGE_SYSTEM, JUDGE_USER.format(request=request, items=listing))


def judge_listing(items: list[str]) -> str:
    return "\n".join(f"{i}. {t}" for i, t in enumerate(items, 1))


def _request_user(history: list[str], earlier: list[str]) -> str:
    block = EARLIER_BLOCK.format(lines="\n".join(f"- {x}" for x in earlier)) if earlier else ""
    return REQUEST_USER.format(lines="\n".join(f"- {x}" for x in history), earlier=block)


def genre_request_chat(history: list[str], genres: list[str]) -> Chat:
    return Chat(GENRE_REQUEST_SYSTEM.format(genres=", ".join(genres)), _request_user(history, []))


def open_request_chat(history: list[str], style: str, earlier: list[str]) -> Chat:
    return Chat(OPEN_REQUEST_SYSTEM.format(style=style), _request_user(history, earlier))


SUMMARY_SYSTEM = (
    "You write short movie profiles for a recommender system. In plain prose of at most 120 "
    "words cover: the director and main cast; what happens, spoilers included; themes and tone; "
    "how it is made (look, music, pacing); how critics received it; who would enjoy it; and any "
    "content warnings. If you do not know the film, say so and describe what its title, year and "
    "genres suggest."
)


def summary_chat(basic_text: str) -> Chat:
    return Chat(SUMMARY_SYSTEM, f"Movie: {basic_text}")


TRAIN_REQUESTS_SYSTEM = (
    "You help build training data for a movie recommender that takes requests in plain language. "
    "Write {n} new requests that different viewers might type. Vary them: some name one genre, "
    "some mix several, some describe a mood, theme, era, style or audience, and some say what to "
    "avoid. Write one JSON object per line, like {{\"request\": \"...\"}}, and nothing else."
)


TRAIN_REQUEST_FOCUS = (
    "a single genre", "a mix of two or three genres", "a mood or feeling",
    "a theme or subject", "a decade or era", "a visual or musical style",
    "who they are watching with", "what they want to avoid", "a favourite kind of story",
    "the acting or characters",
)


def train_requests_chat(earlier: list[str], n: int = 20, batch: int = 0) -> Chat:
    """Batch b leans on one focus (so parallel batches differ and are cached separately)."""
    shown = "\n".join(f"- {x}" for x in earlier) if earlier else "(none yet)"
    focus = TRAIN_REQUEST_FOCUS[batch % len(TRAIN_REQUEST_FOCUS)]
    return Chat(TRAIN_REQUESTS_SYSTEM.format(n=n),
                f"Requests written so far (do not repeat them):\n{shown}\n"
                f"Write the next {n}; let most of them be about {focus}.")
