"""Do the two ways of loading a model's tokenizer give the same token ids?

    HF_HUB_OFFLINE=1 .venv/bin/python scripts/tokenizer_agreement.py [--model ALIAS_OR_FOLDER]

AutoTokenizer builds the model's own tokenizer class (and imports torch); `template_tokenizer`
reads the folder's tokenizer.json into transformers' plain tokenizers-backed class, as the stages
and the llama.cpp backend do. This compares them where the harness uses them: the chat template
of every rating prompt, the ids of each prompt's request prefix and of its suffix for every
MovieLens item (two text forms each), judge prompts, the digit ids, and the decoding of random id
runs. The requests are those of the committed runs under results/ (`requests.parquet`). Prints
the count compared and the count that differ; exits 1 if any differ."""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="qwen2.5-coder-1.5b-instruct",
                    help="packaged LLM alias or a local model folder with tokenizer.json")
    ap.add_argument("--random-decodes", type=int, default=2000)
    args = ap.parse_args(argv)

    import pandas as pd
    from transformers import AutoTokenizer

    from ctrlrec.data import item_texts
    from ctrlrec.llm import prompts as P
    from ctrlrec.llm.backends import digit_token_ids, fill, render, template_tokenizer
    from ctrlrec.llm.models import resolve_llm
    from ctrlrec.ml100k import load

    folder = resolve_llm(args.model)
    auto, plain = AutoTokenizer.from_pretrained(folder), template_tokenizer(folder)
    requests = sorted({str(t) for f in sorted(ROOT.glob("results/**/requests.parquet"))
                       for t in pd.read_parquet(f, columns=["text"]).text})
    ml = load()
    items = item_texts(ml.items) + [str(t) for t in ml.items.title]

    def ids(tok, text):
        return tok.encode(text, add_special_tokens=False)

    compared = differ = 0

    def check(same: bool) -> None:
        nonlocal compared, differ
        compared += 1
        differ += not same

    check(digit_token_ids(auto) == digit_token_ids(plain))
    for request in requests:
        a, b = render(auto, P.rating_chat(request)), render(plain, P.rating_chat(request))
        check(a == b)
        check(ids(auto, a.prefix) == ids(plain, a.prefix))
        for item in items:
            suffix = fill(a, item).suffix
            check(ids(auto, suffix) == ids(plain, suffix))
        judge_a, judge_b = (render(t, P.judge_chat(request, items[:10])) for t in (auto, plain))
        check(judge_a == judge_b and ids(auto, str(judge_a)) == ids(plain, str(judge_b)))
    rng = random.Random(0)
    for _ in range(args.random_decodes):
        run = [rng.randrange(auto.vocab_size + 20) for _ in range(rng.randrange(1, 40))]
        check(auto.decode(run, skip_special_tokens=True) == plain.decode(run,
                                                                         skip_special_tokens=True))
    print(f"{folder}: {type(auto).__name__} vs {type(plain).__name__}; {len(requests)} requests "
          f"x {len(items)} item texts; {compared} compared, {differ} differ")
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
