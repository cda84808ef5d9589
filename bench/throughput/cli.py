"""`bench throughput SUITE` and `python -m bench.throughput SUITE`: measure, then report; or
measure only (bare GPU machines), or report only (`--from measurements.json`)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .config import ThroughputError, load_config
from .measure import measure
from .table import report


def default_out(meas: dict) -> Path:
    hw = meas["hardware"]
    slug = (hw.get("gpu") or f"cpu{hw.get('cpu_count')}").split()[-1].lower()
    return Path("results") / "throughput" / f"{meas['config']['name']}-{slug}"


def run(args) -> int:
    if args.from_file:
        try:
            meas = json.loads(Path(args.from_file).read_text())
        except (OSError, ValueError) as exc:
            raise ThroughputError(f"{args.from_file}: not a readable measurements file "
                                  f"({type(exc).__name__})") from None
    else:
        cfg = load_config(args.suite)
        out = Path(args.out) if args.out else None

        def save(result):  # after each path, so a run cut off keeps the finished paths
            folder = out or default_out(result)
            folder.mkdir(parents=True, exist_ok=True)
            tmp = folder / "measurements.json.tmp"
            tmp.write_text(json.dumps(result, indent=1, default=str))
            tmp.replace(folder / "measurements.json")
        meas = measure(cfg, log=lambda s: print(s, flush=True), source=str(args.suite),
                       checkpoint=save)
    out = Path(args.out) if args.out else default_out(meas)
    out.mkdir(parents=True, exist_ok=True)
    if args.measure_only:
        print(f"measurements: {out / 'measurements.json'}")
        return 0
    print(report(meas, out))
    print(f"\nwritten: {out}/ (measurements.json, cells.csv, cost_models.json, table.md, "
          "throughput.png)")
    return 0


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("suite", nargs="?", default="suites/throughput.yaml")
    p.add_argument("--out", help="output folder (default: results/throughput/<name>-<device>/)")
    p.add_argument("--from", dest="from_file", metavar="MEASUREMENTS_JSON",
                   help="only fit, tabulate and plot an earlier measurements.json")
    p.add_argument("--measure-only", action="store_true",
                   help="write measurements.json only (bare GPU machines: no pandas/matplotlib)")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.throughput")
    add_arguments(ap)
    args = ap.parse_args(argv)
    try:
        return run(args)
    except ThroughputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
