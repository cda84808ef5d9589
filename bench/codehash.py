"""The code behind a stage, as a hash that goes into its cache key.

A step names its function ("module:function"). Starting there, the project code it can reach is
collected statically (ast over the source files; nothing is imported): the function itself, the
functions and classes of its own module it refers to, and whatever project names those refer to,
followed into other modules (`from ctrlrec.data import Split` follows `Split`; a module used as
a whole, `from ctrlrec import metrics`, brings all of it). Module-level statements other than
imports (constants, registries) always count, and a string naming a project module
("ctrlrec.ml100k", "ctrlrec.llm.remote:OpenAIBackend") counts as an import, since registries
load their plug-ins by such names. Third-party code is left out (package versions are in the
manifest), and so are the few project modules in RUNTIME_MODULES. The hash is over source text
with normalised line endings, so it is the same on any machine and Python version; an edit to a
function changes the keys of exactly the stages that can reach it, and leaves the others' cached
outputs valid."""

from __future__ import annotations

import ast
import functools
import hashlib
import re
from collections.abc import Mapping
from pathlib import Path

PACKAGES = ("ctrlrec", "bench")
ROOT = Path(__file__).resolve().parents[1]
# Project code that cannot change what a stage computes, left out so its edits keep caches valid:
# how LLM shards are spread over workers (each answer is keyed by its prompt), progress bars.
RUNTIME_MODULES = ("bench.llmpool", "ctrlrec.progress")
_NAMED = re.compile(r"^((?:ctrlrec|bench)(?:\.\w+)+)(?::(\w+))?$")


class _Module:
    """One parsed module: its top-level defs (name -> source lines), the text of its other
    top-level statements, and what each imported name is bound to."""

    def __init__(self, name: str, text: str, is_pkg: bool):
        self.name = name
        lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
        tree = ast.parse("\n".join(lines))
        self.package = name if is_pkg else name.rpartition(".")[0]
        self.defs: dict[str, tuple[str, ast.AST]] = {}
        rest, rest_nodes = [], []
        for i, node in enumerate(tree.body):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                first = min([node.lineno] + [d.lineno for d in node.decorator_list])
                self.defs[node.name] = ("\n".join(lines[first - 1:node.end_lineno]), node)
            elif isinstance(node, (ast.Import, ast.ImportFrom)) or (
                    i == 0 and isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)):
                continue  # imports count through what they bind; the docstring not at all
            else:
                rest.append("\n".join(lines[node.lineno - 1:node.end_lineno]))
                rest_nodes.append(node)
        self.rest = ("\n".join(rest), ast.Module(body=rest_nodes, type_ignores=[]))
        # every import anywhere in the module (a function's own imports included): name -> targets
        self.bindings: dict[str, list[tuple]] = {}
        self._refs: dict[str, set[str]] = {}
        self.star: list[str] = []
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for a in node.names:
                    self._bind(a.asname or a.name.split(".")[0], ("module", a.name))
            elif isinstance(node, ast.ImportFrom):
                base = self._absolute(node.module, node.level)
                for a in node.names:
                    if a.name == "*":
                        self.star.append(base)
                    else:
                        self._bind(a.asname or a.name, ("from", base, a.name))

    def references(self, sym: str) -> set[str]:
        if sym not in self._refs:
            self._refs[sym] = _references(self.rest[1] if sym == "" else self.defs[sym][1])
        return self._refs[sym]

    def _absolute(self, module: str | None, level: int) -> str:
        if not level:
            return module or ""
        parts = self.package.split(".")
        base = parts[:len(parts) - level + 1]
        return ".".join(base + ([module] if module else []))

    def _bind(self, name: str, target: tuple) -> None:
        self.bindings.setdefault(name, []).append(target)


class SourceIndex:
    """Project sources by module name: read from the files under `root`, or taken from
    `sources` (module name -> text; a name ending in ".__init__" marks a package), which tests
    use to try a change without touching the tree. Parses and closures are memoised."""

    def __init__(self, sources: Mapping[str, str] | None = None, root: Path = ROOT):
        if sources is None:
            sources = {}
            for pkg in PACKAGES:
                for f in sorted((root / pkg).rglob("*.py")):
                    sources[".".join(f.relative_to(root).with_suffix("").parts)] = \
                        f.read_text(encoding="utf-8")
        self._text = {m.removesuffix(".__init__"): t for m, t in sources.items()}
        self._pkgs = {m.removesuffix(".__init__") for m in sources if m.endswith(".__init__")}
        self._parsed: dict[str, _Module] = {}
        self._hashes: dict[str, str] = {}
        self._links: dict[tuple[str, str], list[tuple[str, str]]] = {}

    def module(self, name: str) -> _Module | None:
        if name not in self._text:
            return None
        if name not in self._parsed:
            self._parsed[name] = _parse(name, self._text[name], name in self._pkgs)
        return self._parsed[name]

    def units(self, fn: str) -> dict[tuple[str, str], str]:
        """(module, def name or "" for the module-level statements) -> source text, for all the
        project code `fn` ("module:function") can reach."""
        module, _, name = fn.partition(":")
        if self.module(module) is None and not self._add_plugin(module):
            raise ValueError(f"{fn}: no module {module!r} (neither under "
                             f"{', '.join(PACKAGES)} nor importable)")
        seen: dict[tuple[str, str], str] = {}
        todo = self._symbol(module, name) if name else self._whole(module)
        while todo:
            mod, sym = todo.pop()
            if (mod, sym) in seen or (mod in RUNTIME_MODULES and mod != module):
                continue
            m = self.module(mod)
            seen[(mod, sym)] = m.rest[0] if sym == "" else m.defs[sym][0]
            todo.extend(self._edges(m, sym))
        return seen

    def _add_plugin(self, module: str) -> bool:
        """A step function from outside the project (a plug-in's own module): its source file,
        found without importing it, joins the index; its project imports are followed as usual."""
        import importlib.util

        try:
            spec = importlib.util.find_spec(module)
        except (ImportError, ValueError):
            return False
        if spec is None or not (spec.origin or "").endswith(".py"):
            return False
        self._text[module] = Path(spec.origin).read_text(encoding="utf-8")
        if spec.submodule_search_locations is not None:
            self._pkgs.add(module)
        return True

    def _edges(self, m: _Module, sym: str) -> list[tuple[str, str]]:
        """The units one unit refers to (memoised: stages share most of their code)."""
        if (m.name, sym) not in self._links:
            out = [(m.name, "")]  # a def runs against its module's constants
            for base in m.star:
                out.extend(self._whole(base) if self.module(base) else [])
            for ref in m.references(sym):
                out.extend(self._resolve(m, ref))
            self._links[(m.name, sym)] = out
        return self._links[(m.name, sym)]

    def code_hash(self, fn: str) -> str:
        if fn not in self._hashes:
            h = hashlib.sha256()
            for (mod, sym), text in sorted(self.units(fn).items()):
                h.update(f"{mod}:{sym}\n{text}\n\0".encode())
            self._hashes[fn] = h.hexdigest()[:16]
        return self._hashes[fn]

    def _whole(self, module: str) -> list[tuple[str, str]]:
        return [(module, "")] + [(module, d) for d in self.module(module).defs]

    def _symbol(self, module: str, name: str, depth: int = 0) -> list[tuple[str, str]]:
        """Units behind `name` as module `module` defines or re-exports it."""
        m = self.module(module)
        if name in m.defs:
            return [(module, name)]
        if name in m.bindings and depth < 20:
            return [u for t in m.bindings[name] for u in self._target(t, depth + 1)]
        return [(module, "")] if _assigns(m, name) else self._whole(module)

    def _target(self, target: tuple, depth: int = 0) -> list[tuple[str, str]]:
        if target[0] == "module":
            return self._whole(target[1]) if self.module(target[1]) else []
        _, base, name = target
        if self.module(f"{base}.{name}"):  # `from pkg import submodule`
            return self._whole(f"{base}.{name}")
        return self._symbol(base, name, depth) if self.module(base) else []

    def _resolve(self, m: _Module, ref: str) -> list[tuple[str, str]]:
        if ref in m.defs:
            return [(m.name, ref)]
        if ref in m.bindings:
            return [u for t in m.bindings[ref] for u in self._target(t)]
        named = _NAMED.match(ref)  # a string naming project code
        if named and self.module(named.group(1)):
            return (self._symbol(named.group(1), named.group(2)) if named.group(2)
                    else self._whole(named.group(1)))
        return []  # a local, a builtin or a third-party name


def _references(node: ast.AST) -> set[str]:
    """Names a piece of code reads, and the strings in it that may name project code. A
    function's parameter and return annotations are skipped: they never run (postponed
    annotations); a class's field annotations are kept, since dataclasses and pydantic read them."""
    out, todo = set(), [node]
    while todo:
        n = todo.pop()
        if isinstance(n, ast.Name):
            out.add(n.id)
        elif isinstance(n, ast.Constant) and isinstance(n.value, str) and _NAMED.match(n.value):
            out.add(n.value)
        for field, child in ast.iter_fields(n):
            if field in ("annotation", "returns") and not isinstance(n, ast.AnnAssign):
                continue
            todo.extend(c for c in (child if isinstance(child, list) else [child])
                        if isinstance(c, ast.AST))
    return out


def _assigns(m: _Module, name: str) -> bool:
    return any(isinstance(n, ast.Name) and n.id == name and isinstance(n.ctx, ast.Store)
               for n in ast.walk(m.rest[1]))


@functools.lru_cache(maxsize=256)
def _parse(name: str, text: str, is_pkg: bool) -> _Module:
    return _Module(name, text, is_pkg)  # by content: indexes that share a file share its parse


@functools.lru_cache(maxsize=1)
def _project() -> SourceIndex:
    return SourceIndex()  # the checkout's sources, read once per process


def code_hash(fn: str, index: SourceIndex | None = None) -> str:
    """16 hex digits over the source of the project code that step function `fn` can reach."""
    return (index or _project()).code_hash(fn)


def stale_entries(plan: list, cache) -> dict[str, str]:
    """For each step of `plan` with no cache entry at its key but an older one for the same label
    and config, why that one no longer matches: "code changed" (its own), "inputs changed" (an
    upstream key, by code or config), "version bumped" (the hand-set salt), or "predates code
    hashes" (written before keys held one). What a code change cost, entry by entry."""
    import json

    def plain(cfg: dict) -> str:
        return json.dumps({k: v for k, v in cfg.items() if k != "_runtime"}, sort_keys=True,
                          default=str)

    keys = {s.label: s.key for s in plan}
    out: dict[str, str] = {}
    by_stage: dict[str, list[dict]] = {}
    for s in plan:
        if cache.has(s.stage, s.key):
            continue
        if s.stage not in by_stage:  # every entry's meta of the stage, newest first
            metas = []
            for f in (cache.root / s.stage).glob("*/_meta.json"):
                try:
                    metas.append((f.stat().st_mtime, json.loads(f.read_text())))
                except (OSError, ValueError):
                    continue
            by_stage[s.stage] = [m for _, m in sorted(metas, key=lambda x: -x[0])]
        old = next((m for m in by_stage[s.stage] if m.get("label") == s.label
                    and plain(m.get("config") or {}) == plain(s.config)), None)
        if old is None:
            continue
        if "code" not in old:
            out[s.label] = "predates code hashes"
        elif old["code"] != s.code:
            out[s.label] = "code changed"
        elif old.get("inputs") != [keys[d] for d in s.deps]:
            out[s.label] = "inputs changed"
        else:
            out[s.label] = "version bumped"
    return out
