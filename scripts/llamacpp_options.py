"""The llamacpp backend alone on engine_agreement.py's rating prompts, once per option set, in
one process: which settings rate fastest on this machine, and how much they move the ratings.

    python scripts/llamacpp_options.py '{"repack": true}' '{"repack": false}'
    python scripts/llamacpp_options.py '{"batch_size": 16}' '{"batch_size": 32}'
    python scripts/llamacpp_options.py '{}' '{"model": "/tmp/q/Q8_0.gguf"}'

Each argument is a JSON object of LlamaCppBackend options, `model` among them (a packaged alias
or a .gguf file, e.g. one written by scripts/requantize_gguf.py; default: the packaged model);
prints prompts/s, the mean expected rating, and how far the ratings lie from the first set's
(alternate the sets and repeat them: two runs of one set on a shared machine differ by several
percent)."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))


def main() -> None:
    from engine_agreement import prompts_for, rating_prompts

    import numpy as np

    from ctrlrec.llm.llamacpp_backend import LlamaCppBackend

    pairs = prompts_for(8, 32, 0)
    first = None
    for arg in sys.argv[1:] or ["{}"]:
        options = json.loads(arg)
        model = options.pop("model", "qwen2.5-coder-1.5b-instruct")
        be = LlamaCppBackend(model, **options)
        try:
            prompts = rating_prompts(be, pairs)
            t0 = time.perf_counter()
            ratings = be.rate(prompts)
            dt = time.perf_counter() - t0
        finally:
            be.close()
        e = np.array([r.expected for r in ratings])
        first = e if first is None else first
        print(json.dumps({"model": model, "options": options, "prompts": len(prompts),
                          "prompts_per_s": round(len(prompts) / dt, 2),
                          "mean_expected": round(float(e.mean()), 5),
                          "pearson_vs_first": round(float(np.corrcoef(first, e)[0, 1]), 5),
                          "max_abs_diff_vs_first": round(float(np.abs(first - e).max()), 4),
                          "settings": be.settings}), flush=True)


if __name__ == "__main__":
    main()
