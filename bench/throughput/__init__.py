"""`bench throughput`: what one batch of feeds costs, for direct LLM scoring and for the distilled
two-tower path, over a grid of item counts × concurrent requests (the paper's Figure 5, extended).

Cells that fit each path's time budget are measured as the product runs them (the hf backend's
batched, prefix-reusing `rate`; the sentence-transformers encoder plus a chunked matrix product and
top-k over the item matrix). A cost model fitted to the measured cells fills in the rest; every
number says whether it was measured or extrapolated, and each fit reports its error.

Measuring needs only torch, transformers, sentence-transformers, numpy and yaml, so it also runs on
a bare GPU machine (`python -m bench.throughput SUITE --measure-only`); the tables, fits and plot
are made from the written measurements.json (`bench throughput --from FILE`).

    config.py   the suite file: defaults, reading, one-line errors (schema.py: the pydantic model)
    models.py   the measured models: the hf backend, the encoder, random-weight shapes
    inputs.py   request and item texts
    hardware.py the device, its floors (bandwidth, peak FLOP/s), timing
    measure.py  the measured cells of each path -> measurements.json
    fit.py      cost models fitted to the measured cells
    table.py    every cell measured or extrapolated -> cells.csv, cost_models.json, table.md
    plot.py     throughput.png
    cli.py      `bench throughput` and `python -m bench.throughput`

Only the names below are imported with the package; none of them needs pydantic, pandas or
matplotlib, which are imported where they are used."""

from .cli import add_arguments, main, run
from .config import ThroughputError, load_config, path_label, validate
from .fit import fit_models, fit_part, predict
from .inputs import item_texts, request_texts
from .models import ENCODER_ARCHS, LLM_ARCHS, build_encoder, build_llm

__all__ = ["ENCODER_ARCHS", "LLM_ARCHS", "ThroughputError", "add_arguments", "build_encoder",
           "build_llm", "fit_models", "fit_part", "item_texts", "load_config", "main",
           "path_label", "predict", "request_texts", "run", "validate"]
