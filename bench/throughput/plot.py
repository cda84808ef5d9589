"""throughput.png: seconds per batch against items, log-log, one panel per request count."""

from __future__ import annotations

from pathlib import Path

from .hardware import card_name


def plot(grid, meas: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    reqs = meas["config"]["requests"]
    cols = min(2, len(reqs))
    rws = (len(reqs) + cols - 1) // cols
    fig, axes = plt.subplots(rws, cols, figsize=(6 * cols, 4.2 * rws), squeeze=False)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, r in zip(axes.flat, reqs):
        for ci, (label, g) in enumerate(grid[grid.requests == r].groupby("path", sort=False)):
            g = g.sort_values("items")
            c = colours[ci % len(colours)]
            ax.plot(g["items"], g.seconds, "--", color=c, lw=1, alpha=0.7)
            m = g[g.source == "measured"]
            ax.plot(m["items"], m.seconds, "o-", color=c, label=label)
            floor = "bandwidth floor" if g.method.iloc[0] == "distilled" else "FLOP floor"
            ax.plot(g["items"], g.floor_seconds, ":", color=c, lw=1,
                    label=f"{floor} ({label.split(':')[0]})")
        ax.set(xscale="log", yscale="log", xlabel="candidate items per request",
               ylabel="seconds per batch", title=f"{r:,} concurrent request(s)")
        ax.grid(True, which="major", alpha=0.3)
    for ax in list(axes.flat)[len(reqs):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7, loc="upper left")
    fig.suptitle(f"Cost of one batch of feeds on {card_name(meas['hardware'])}: solid = measured, "
                 "dashed = extrapolated, dotted = floor", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
