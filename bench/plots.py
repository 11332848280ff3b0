"""The whole-stack benchmark's plot: create latency per client count (API beside floor) and the drain curves."""

from __future__ import annotations

from pathlib import Path

from bench.create import LoadResult
from bench.placement import Drain


def plot_stack(
    creates: list[tuple[LoadResult, LoadResult]],
    drains: list[Drain],
    limit_per_s: float | None,
    path: Path,
) -> None:
    """Left: box plots of create latency; right: orders placed against time, with the limit's line."""
    import matplotlib  # noqa: PLC0415 - only the plot needs it, and it is slow to import

    matplotlib.use("Agg")  # no display here
    from matplotlib import pyplot  # noqa: PLC0415

    figure, (latency_axes, drain_axes) = pyplot.subplots(1, 2, figsize=(13, 4.8))
    if creates:
        results = [result for pair in creates for result in pair]
        labels = [
            f"{'API' if result is pair[0] else 'floor'}\nx{result.clients}" for pair in creates for result in pair
        ]
        latency_axes.boxplot(
            [[s * 1000 for s in result.latencies] or [float("nan")] for result in results],
            tick_labels=labels,
            showfliers=True,
        )
        latency_axes.set_yscale("log")
        latency_axes.set_ylabel("create latency (ms, log scale)")
        latency_axes.set_title("POST /orders via the stack vs the same 3 calls direct")
    for drain in drains:
        curve = drain.curve()
        drain_axes.plot(curve, range(1, len(curve) + 1), label=f"{drain.label} ({drain.rate:.1f}/s)")
    if limit_per_s and drains:
        end = max((max(d.curve(), default=0.0) for d in drains), default=0.0)
        drain_axes.plot([0, end], [0, limit_per_s * end], linestyle="--", label=f"limit ({limit_per_s:.0f}/s)")
        drain_axes.set_ylim(0, max(d.orders for d in drains) * 1.05)
    drain_axes.set_xlabel("seconds since the drain started")
    drain_axes.set_ylabel("orders placed")
    drain_axes.set_title("Draining a backlog (moto server)")
    drain_axes.legend(loc="lower right", fontsize="small")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    pyplot.close(figure)
