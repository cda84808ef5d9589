"""The llamacpp backend alone on engine_agreement.py's rating prompts, once per option set, in
one process: which settings rate fastest on this machine, and how much they move the ratings.

    python scripts/llamacpp_options.py '{"repack": true}' '{"repack": false}'
    python scripts/llamacpp_options.py '{"batch_size": 16}' '{"batch_size": 32}'

Each argument is a JSON object of LlamaCppBackend options; prints prompts/s and the mean
expected rating for each (alternate the sets and repeat them: two runs of one set on a shared
machine differ by several percent)."""

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

    from ctrlrec.llm.llamacpp_backend import LlamaCppBackend

    model = "qwen2.5-coder-1.5b-instruct"
    pairs = prompts_for(8, 32, 0)
    for arg in sys.argv[1:] or ["{}"]:
        options = json.loads(arg)
        be = LlamaCppBackend(model, **options)
        try:
            prompts = rating_prompts(be, pairs)
            t0 = time.perf_counter()
            ratings = be.rate(prompts)
            dt = time.perf_counter() - t0
        finally:
            be.close()
        mean = sum(r.expected for r in ratings) / len(ratings)
        print(json.dumps({"options": options, "prompts": len(prompts),
                          "prompts_per_s": round(len(prompts) / dt, 2),
                          "mean_expected": round(mean, 5), "settings": be.settings}), flush=True)


if __name__ == "__main__":
    main()
