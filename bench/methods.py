"""The method registry: name -> the stage function that builds its value matrix.

Entries are import paths, so torch and the models load only when a method is chosen."""

from __future__ import annotations

import importlib

METHODS = {
    "untrained": "bench.stages:untrained_values_stage",
    "direct": "bench.stages:direct_values_stage",
    "distilled": "bench.stages:distilled_values_stage",
}
# The parts of a method's config that its values depend on (the cache key uses only these),
# and whether the user-context axis changes them.
METHOD_KEYS = {"untrained": ("name", "model"), "direct": ("name", "llm", "mass_threshold"),
               "distilled": ("name", "model")}
USES_CONTEXT = {"untrained": False, "direct": True, "distilled": False}


def method_stage(name: str):
    module, fn = METHODS[name].split(":")
    return getattr(importlib.import_module(module), fn)
