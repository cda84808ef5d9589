"""The method registry: name -> the stage function that builds its value matrix.

Entries are import paths, so torch and the models load only when a method is chosen."""

from __future__ import annotations

import importlib

METHODS = {
    "untrained": "bench.stages:untrained_values_stage",
}


def method_stage(name: str):
    module, fn = METHODS[name].split(":")
    return getattr(importlib.import_module(module), fn)
