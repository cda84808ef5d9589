"""The method registry: everything the harness needs to know about a value predictor, in one entry.

Adding a method is one module with its function and one line here; nothing else in the harness
branches on a method's name. The function has the `ctrlrec.values.ValuePredictor` shape: it takes
the step's config and the artefacts of its named inputs, in order, and returns at least
`{"values": users × items float32 array}` (NaN for an item it did not score), optionally `stats`.

Inputs a method can name (the plan provides each as a cached step):
    dataset          train/test split and item texts (`ds["items"].text`)
    requests         one request per evaluated user (`req["requests"]`: user_id, text, genre)
    pool             the frozen candidate items per user (`pool["pool"]`, users × items bool)
    item_embeddings  the method's embedding `model` over every item text (`emb["emb"]`)
    student          the distilled two-tower student (teacher labels and training come with it)

Entries are import paths, so torch and the models load only when a method runs."""

from __future__ import annotations

import importlib
from dataclasses import dataclass

INPUTS = ("dataset", "requests", "pool", "item_embeddings", "student")
MODELS = ("embedding", "llm", "teacher")  # `model`, `llm`, `distill.teacher` of the method config


@dataclass(frozen=True)
class Method:
    fn: str                        # "module:function" computing the value matrix
    inputs: tuple[str, ...]        # named inputs, in the order the function takes them
    key_fields: tuple[str, ...]    # method-config fields its values depend on (cache key)
    uses_context: bool = False     # the user-context axis (history:N) changes its values
    models: tuple[str, ...] = ()   # which models of its config it loads (checked before a run)
    version: int = 1               # a key salt: bump when its output changes in a way the code
                                   # hash cannot see (bench/codehash.py), e.g. a library upgrade
    cpus: int = 1                  # Ray CPUs (and torch threads) of its step
    # its values cover every item at no extra cost, so a shortlist run also ranks it over all
    # items (cells with pool = "all"), showing what the shortlist hides from it
    full_set: bool = False

    def __post_init__(self):
        unknown = [x for x in self.inputs if x not in INPUTS] + \
            [x for x in self.models if x not in MODELS]
        if unknown:
            raise ValueError(f"method entry {self.fn}: unknown input or model {unknown[0]!r}; "
                             f"inputs: {', '.join(INPUTS)}; models: {', '.join(MODELS)}")
        if self.full_set and "pool" in self.inputs:
            raise ValueError(f"method entry {self.fn}: full_set values cannot depend on the pool")

    def function(self):
        module, name = self.fn.split(":")
        return getattr(importlib.import_module(module), name)


METHODS: dict[str, Method] = {
    "untrained": Method("bench.stages.values:untrained_values_stage",
                        ("item_embeddings", "requests"), ("name", "model", "dtype"),
                        models=("embedding",), full_set=True),
    "direct": Method("bench.stages.values:direct_values_stage", ("dataset", "requests", "pool"),
                     ("name", "llm", "mass_threshold"), uses_context=True, models=("llm",)),
    "distilled": Method("bench.stages.values:distilled_values_stage", ("student", "requests"),
                        ("name", "model"), models=("embedding", "teacher"), cpus=2,
                        full_set=True),
    "tfidf": Method("ctrlrec.lexical:tfidf_values", ("dataset", "requests"), ("name",),
                    full_set=True),
}


def llm_free_methods() -> list[str]:
    """Methods that answer a new request without an LLM call (`bench show` runs these)."""
    return [name for name, m in METHODS.items() if "llm" not in m.models]
