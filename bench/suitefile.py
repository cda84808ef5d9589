"""Suite files: defaults < YAML < command-line overrides, validated against the schema in
bench/suite.py. Every problem is reported as one line naming the file, the key, the value and
what is allowed."""

from __future__ import annotations

import difflib
from pathlib import Path

import yaml
from pydantic import BaseModel, ValidationError

from .suite import Suite


class SuiteError(ValueError):
    """A suite file or override is invalid; the message is one line (whitespace, newlines
    included, is folded into single spaces whatever the source of the text)."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


def _loc(loc: tuple) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in ("int", "float", "str", "Range") or "[" in str(part):
            continue  # pydantic's union-branch labels add nothing for a reader
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


def _one_line(source: str, err: ValidationError, raw: dict) -> str:
    # A union (e.g. w_control: range or list) reports one error per branch; the deepest location
    # is the one that names the offending value.
    e = max(err.errors(), key=lambda x: len(x["loc"]))
    key = _loc(e["loc"])
    msg = e["msg"].removeprefix("Value error, ")
    if e["type"] == "extra_forbidden":
        msg = "unknown key"
        parent = e["loc"][:-1]
        allowed = _allowed_keys(parent)
        if allowed:
            close = difflib.get_close_matches(str(e["loc"][-1]), allowed, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            msg = f"unknown key{hint}; allowed: {', '.join(allowed)}"
    value = e.get("input")
    shown = "" if e["type"] in ("missing", "extra_forbidden") or isinstance(value, dict) \
        else f" (got {_short(repr(value))})"
    return f"{source}: {key}: {msg}{shown}"


def _short(text: str, n: int = 80) -> str:
    return text if len(text) <= n else text[:n - 1] + "…"


def _allowed_keys(loc: tuple) -> list[str]:
    model = Suite
    for part in loc:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(str(part))
        if field is None:
            return []
        ann = field.annotation
        inner = getattr(ann, "__args__", None)
        candidates = [ann] + list(inner or [])
        nxt = next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)
        if nxt is None:
            nxt = next((a for c in candidates for a in getattr(c, "__args__", ()) or ()
                        if isinstance(a, type) and issubclass(a, BaseModel)), None)
        if nxt is None:
            return []
        model = nxt
    return [f.alias or name for name, f in model.model_fields.items()]  # as files spell them


def parse_override(text: str) -> tuple[list[str], object]:
    """'engagement.epochs=5' -> (['engagement', 'epochs'], 5); the value is read as YAML."""
    if "=" not in text:
        raise SuiteError(f"--set {text!r}: expected KEY=VALUE, e.g. engagement.epochs=5")
    key, value = text.split("=", 1)
    try:
        return key.strip().split("."), yaml.safe_load(value)
    except (yaml.YAMLError, RecursionError) as exc:
        problem = getattr(exc, "problem", None) or type(exc).__name__
        raise SuiteError(f"--set {_short(repr(text))}: the value is not valid YAML ({problem})") \
            from None


def is_throughput_suite(raw) -> bool:
    """`bench throughput` files list the `paths` to measure; benchmark suites list `methods`."""
    return isinstance(raw, dict) and "paths" in raw and "methods" not in raw


def read_suite_file(path: str | Path) -> dict:
    """The top-level mapping of a suite file, or a one-line SuiteError saying why not."""
    source = str(path)
    try:
        raw = yaml.safe_load(Path(path).read_bytes().decode("utf-8"))
    except FileNotFoundError:
        raise SuiteError(f"{source}: no such file") from None
    except IsADirectoryError:
        raise SuiteError(f"{source}: a folder, not a suite file") from None
    except OSError as exc:
        raise SuiteError(f"{source}: cannot read it ({exc.strerror or exc})") from None
    except UnicodeDecodeError as exc:
        raise SuiteError(f"{source}: not UTF-8 text (byte {exc.start})") from None
    except RecursionError:
        raise SuiteError(f"{source}: nested too deeply") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise SuiteError(f"{source}:{where}: not valid YAML ({_short(problem)})") from None
    if not isinstance(raw, dict):
        raise SuiteError(f"{source}: expected a mapping of keys at the top level")
    return raw


def load_suite(path: str | Path, overrides: list[str] = ()) -> Suite:
    path = Path(path)
    source = str(path)
    raw = read_suite_file(path)
    if is_throughput_suite(raw):
        raise SuiteError(f"{source}: a throughput suite (it has `paths`, no `methods`); "
                         f"`bench throughput {source}` measures it")
    for text in overrides:
        keys, value = parse_override(text)
        node = raw
        for k in keys[:-1]:  # a number indexes a list: methods.1.llm.batch_size=8
            if isinstance(node, list):
                if not k.isdigit() or int(k) >= len(node):
                    raise SuiteError(f"--set {text}: {k} is not an index below {len(node)}")
                node = node[int(k)]
            elif isinstance(node, dict):
                node = node.setdefault(k, {})
            else:
                raise SuiteError(f"--set {text}: {k} is not a section")
        last = keys[-1]
        if isinstance(node, list):
            if not last.isdigit() or int(last) >= len(node):
                raise SuiteError(f"--set {text}: {last} is not an index below {len(node)}")
            node[int(last)] = value
        elif isinstance(node, dict):
            node[last] = value
        else:
            raise SuiteError(f"--set {text}: {keys[-2]} is not a section")
        source = f"{path} (with --set)"
    try:
        suite = Suite.model_validate(raw)
    except ValidationError as err:
        raise SuiteError(_one_line(source, err, raw)) from None
    _check_pool_holds_k(suite, source)
    return suite


def _check_pool_holds_k(suite: Suite, source: str) -> None:
    """A shortlist that can give a user fewer items than the largest k would leave that user's
    top-k short (the sweep refuses to fill it with train items). Checked here, not in the schema,
    so that manifests of runs made before the check still read back."""
    least = suite.pool.guaranteed_items()
    k = max([*suite.k, *(suite.judge.k if suite.judge else [])])
    if least is not None and least < k:
        raise SuiteError(f"{source}: pool: {suite.pool.describe()} guarantees a user only {least} "
                         f"items (nominators may overlap, so only the largest counts), fewer than "
                         f"the largest k, {k}; allowed: engagement, random or untrained of at "
                         f"least {k}, or k up to {least}")
