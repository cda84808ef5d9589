"""Every prompt the project sends to an LLM, in one place.

Bump PROMPTS_VERSION when a template changes: it is part of every cache key and manifest. The
item always comes last in a rating prompt, so that everything about the request (and the user's
history) forms a shared prefix whose attention state is computed once per request. The prefix ends
with a newline, so that tokenising prefix and item separately gives the same tokens as tokenising
the whole prompt (a trailing space would merge with the item's first word).

The templates speak of items through `Words` (the dataset's noun, who asks, what they do with an
item, what its categories are called). MOVIE_WORDS renders exactly the movie prompts the project
had before datasets were plug-ins, so cached answers stay valid; other nouns get generic wording."""

from __future__ import annotations

from dataclasses import dataclass

PROMPTS_VERSION = 1
ITEM_SLOT = "\x00ITEM\x00"  # marks where the item goes when a prompt is split into prefix/suffix

RATE_SYSTEM = (
    "You assist {a_noun} recommender. A {person} says what they would like to {verb}, and you "
    "judge single {nouns} against that wish. Answer with one digit only: 1 = does not fit the "
    "request at all, 2 = fits poorly, 3 = fits somewhat, 4 = fits well, 5 = fits the request "
    "perfectly."
)
RATE_USER = (
    "The {person}'s request: \"{request}\"\n"
    "{history}"
    "How well does the following {noun} fit this request? Reply with a single digit.\n"
    "{Noun}:\n{item}"
)
HISTORY_BLOCK = "{Nouns} this {person} rated most recently (rating out of 5):\n{lines}\n"

JUDGE_SYSTEM = (
    "You grade a list of {nouns} that a recommender showed a {person} in reply to their request. "
    "Scale: 1 = poor, few or none of the {nouns} match; 3 = good, many of them match; "
    "5 = excellent, every {noun} matches the request strongly. Answer with one digit only."
)
JUDGE_USER = "The {person}'s request: \"{request}\"\nRecommended {nouns}:\n{items}\nGrade the list."

GENRE_REQUEST_SYSTEM = (
    "You write what {a_noun} {person} might type into a recommender. Given the {nouns} they "
    "rated, write one sentence in the first person in which they ask for {a_noun} of exactly one "
    "{category} that they would want to {verb} next. Pick the {category} from this list: "
    "{genres}. Name that one {category} and no other, mention no {noun} titles, and say nothing "
    "about what to avoid. Reply with the sentence only."
)
OPEN_REQUEST_SYSTEM = (
    "You write what {a_noun} {person} might type into a recommender. Given the {nouns} they "
    "rated, write one short, casual sentence in the first person about the kind of {noun} they "
    "want to {verb} right now. It may be about {aspects}. Write it in a {style} way. Put the "
    "sentence between <statement> and </statement>."
)
OPEN_STYLES = ("direct", "descriptive", "mood-based", "preference-focused", "contextual",
               "comparative")
REQUEST_USER = "{Nouns} this {person} rated (out of 5):\n{lines}\n{earlier}Now write the request."
EARLIER_BLOCK = "Requests other {person}s already wrote (write something different):\n{lines}\n"
# on a retry after a request named one of the user's test items (ctrlrec/leaks.py)
AVOID_BLOCK = "Do not name these {nouns} or quote their titles: {titles}.\n"

TRAIN_REQUESTS_SYSTEM = (
    "You help build training data for {a_noun} recommender that takes requests in plain "
    "language. Write {n} new requests that different {person}s might type. Vary them: some name "
    "one {category}, some mix several, some describe a mood, theme, era, style or audience, and "
    "some say what to avoid. Write one JSON object per line, like {{\"request\": \"...\"}}, and "
    "nothing else."
)

# ---------------------------------------------------------------- the words of a dataset

MOVIE_SUMMARY = (
    "You write short movie profiles for a recommender system. In plain prose of at most 120 "
    "words cover: the director and main cast; what happens, spoilers included; themes and tone; "
    "how it is made (look, music, pacing); how critics received it; who would enjoy it; and any "
    "content warnings. If you do not know the film, say so and describe what its title, year and "
    "genres suggest."
)
ITEM_SUMMARY = (
    "You write short profiles of {nouns} for a recommender system. In plain prose of at most 120 "
    "words cover: what the {noun} is; its main features; its style and tone; what people say "
    "about it; who would enjoy it; and anything a {person} should know before choosing it. If you "
    "do not know the {noun}, say so and describe what its title, description and {categories} "
    "suggest."
)
MOVIE_FOCUS = (
    "a single genre", "a mix of two or three genres", "a mood or feeling",
    "a theme or subject", "a decade or era", "a visual or musical style",
    "who they are watching with", "what they want to avoid", "a favourite kind of story",
    "the acting or characters",
)
ITEM_FOCUS = (
    "a single {category}", "a mix of two or three {categories}", "a mood or feeling",
    "a theme or subject", "an era or age", "a style or look", "who it is for",
    "what they want to avoid", "a favourite kind of {noun}", "a quality they care about",
)
# Evaluation requests of the template generator ({g}: the category as it reads in a sentence).
MOVIE_TEMPLATES = (
    "I'm in the mood for a {g} movie tonight.",
    "Could you find me a good {g} film to watch next?",
    "I'd like to watch something from the {g} genre.",
    "Show me a {g} movie I would enjoy.",
    "Next I want to see a really good {g} film.",
)
ITEM_TEMPLATES = (
    "I'm in the mood for something from {g} right now.",
    "Could you find me a good {noun} in {g} to {verb} next?",
    "I'd like to {verb} something from the {g} category.",
    "Show me {nouns} in {g} that I would enjoy.",
    "Next I want a really good {noun} from {g}.",
)
# Phrasings for *training* requests of the category kind (the distilled method's
# `own_requests`): deliberately unlike the templates above, so no evaluation request is trained on.
MOVIE_TRAIN_TEMPLATES = (
    "Recommend a {g} picture for this evening.",
    "What {g} titles should I queue up?",
    "Put some {g} films at the top of my list.",
    "I feel like {g} today; any suggestions?",
    "My friends want {g}. What should we pick?",
    "Give me your best {g} recommendations.",
)
ITEM_TRAIN_TEMPLATES = (
    "Recommend some {g} {nouns} for this week.",
    "What {g} {nouns} should I look at?",
    "Put some {g} {nouns} at the top of my list.",
    "I feel like {g} today; any suggestions?",
    "My friends want {g}. What should we pick?",
    "Give me your best {g} recommendations.",
)


@dataclass(frozen=True)
class Words:
    """How prompts and template requests speak of a dataset's items."""

    noun: str = "item"                 # a singular noun with a regular plural (+s)
    person: str = "user"               # who makes requests
    verb: str = "try"                  # what they do with an item
    category: str = "category"
    categories: str = "categories"
    aspects: str = "category, theme, style, quality or mood"   # what an open request may be about
    summary: str = ITEM_SUMMARY
    focus: tuple[str, ...] = ITEM_FOCUS
    templates: tuple[str, ...] = ITEM_TEMPLATES
    train_templates: tuple[str, ...] = ITEM_TRAIN_TEMPLATES

    def fields(self) -> dict:
        nouns = self.noun + "s"
        article = "an" if self.noun[:1].lower() in "aeiou" else "a"
        return {"noun": self.noun, "nouns": nouns, "Noun": self.noun[:1].upper() + self.noun[1:],
                "Nouns": nouns[:1].upper() + nouns[1:], "a_noun": f"{article} {self.noun}",
                "person": self.person, "verb": self.verb, "category": self.category,
                "categories": self.categories, "aspects": self.aspects}

    def fill(self, template: str, **values) -> str:
        """One `format` call, so braces inside the values (a request, a title) stay as they are."""
        return template.format(**self.fields(), **values)


MOVIE_WORDS = Words(noun="movie", person="viewer", verb="watch", category="genre",
                    categories="genres", aspects="genre, theme, style, look, acting or mood",
                    summary=MOVIE_SUMMARY, focus=MOVIE_FOCUS, templates=MOVIE_TEMPLATES,
                    train_templates=MOVIE_TRAIN_TEMPLATES)


def words_for(noun: str) -> Words:
    """The movie wording for movies, the generic one with this noun for anything else."""
    return MOVIE_WORDS if noun == "movie" else Words(noun=noun)


# ---------------------------------------------------------------- conversations


@dataclass(frozen=True)
class Chat:
    system: str
    user: str


def history_block(lines: list[str], words: Words = MOVIE_WORDS) -> str:
    return words.fill(HISTORY_BLOCK, lines="\n".join(f"- {x}" for x in lines)) if lines else ""


def rating_chat(request: str, history: list[str] = (), words: Words = MOVIE_WORDS) -> Chat:
    """The direct-scoring conversation with ITEM_SLOT where the item goes."""
    return Chat(words.fill(RATE_SYSTEM),
                words.fill(RATE_USER, request=request,
                           history=history_block(list(history), words), item=ITEM_SLOT))


def judge_chat(request: str, items: list[str] | None = None, words: Words = MOVIE_WORDS) -> Chat:
    """Without `items`, ITEM_SLOT stands where the list goes (so the request is a shared prefix)."""
    listing = ITEM_SLOT if items is None else judge_listing(items)
    return Chat(words.fill(JUDGE_SYSTEM), words.fill(JUDGE_USER, request=request, items=listing))


def judge_listing(items: list[str]) -> str:
    return "\n".join(f"{i}. {t}" for i, t in enumerate(items, 1))


def _request_user(history: list[str], earlier: list[str], words: Words,
                  avoid: list[str] = ()) -> str:
    block = words.fill(EARLIER_BLOCK, lines="\n".join(f"- {x}" for x in earlier)) if earlier else ""
    if avoid:  # without it the prompt is exactly as before, so cached answers stay valid
        block += words.fill(AVOID_BLOCK, titles="; ".join(avoid))
    return words.fill(REQUEST_USER, lines="\n".join(f"- {x}" for x in history), earlier=block)


def genre_request_chat(history: list[str], genres: list[str], words: Words = MOVIE_WORDS,
                       avoid: list[str] = ()) -> Chat:
    return Chat(words.fill(GENRE_REQUEST_SYSTEM, genres=", ".join(genres)),
                _request_user(history, [], words, avoid))


def open_request_chat(history: list[str], style: str, earlier: list[str],
                      words: Words = MOVIE_WORDS, avoid: list[str] = ()) -> Chat:
    return Chat(words.fill(OPEN_REQUEST_SYSTEM, style=style),
                _request_user(history, earlier, words, avoid))


def summary_chat(basic_text: str, words: Words = MOVIE_WORDS) -> Chat:
    return Chat(words.fill(words.summary), words.fill("{Noun}: ") + basic_text)


def train_requests_chat(earlier: list[str], n: int = 20, batch: int = 0,
                        words: Words = MOVIE_WORDS) -> Chat:
    """Batch b leans on one focus (so parallel batches differ and are cached separately)."""
    shown = "\n".join(f"- {x}" for x in earlier) if earlier else "(none yet)"
    focus = words.fill(words.focus[batch % len(words.focus)])
    return Chat(words.fill(TRAIN_REQUESTS_SYSTEM, n=n),
                f"Requests written so far (do not repeat them):\n{shown}\n"
                f"Write the next {n}; let most of them be about {focus}.")
