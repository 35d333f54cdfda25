"""What makes a rate step sustained, and which rate to offer next: ramp up by a fixed step until
the first failure, then bisect between the best sustained rate and the lowest failed one."""

from __future__ import annotations

from dataclasses import dataclass

# A step is sustained when this share of its calls completed...
MIN_COMPLETED = 0.999
# ...and completed calls per second reached this share of the offered rate.
MIN_THROUGHPUT = 0.95
# The load generator is called the limit when it used this share of a core, or could not
# create the calls at this share of the offered rate.
SIPP_BUSY_CPU = 0.90


@dataclass
class Verdict:
    completed_share: float
    throughput_share: float

    @property
    def sustained(self) -> bool:
        return self.completed_share >= MIN_COMPLETED and self.throughput_share >= MIN_THROUGHPUT


def judge(offered_rate: int, calls: int, successful: int, window_seconds: float) -> Verdict:
    """`window_seconds` runs from the first INVITE to the last successful 200, so that a few
    calls timing out after 5 s do not stretch it."""
    completed = successful / calls if calls else 0.0
    per_second = successful / window_seconds if window_seconds > 0 else 0.0
    return Verdict(completed, per_second / offered_rate if offered_rate else 0.0)


@dataclass(frozen=True)
class Plan:
    start: int
    step: int
    max_rate: int
    # Bisection stops when the best sustained and lowest failed rates are this close.
    resolution: int
    # Explicit rates replace the ramp (no bisection).
    fixed: tuple[int, ...] = ()


def next_rate(plan: Plan, results: dict[int, bool]) -> int | None:
    """The next rate to offer given the verdicts so far (rate → sustained), or None when done."""
    if plan.fixed:
        return next((r for r in plan.fixed if r not in results), None)
    if not results:
        return plan.start
    failed = [r for r, ok in results.items() if not ok]
    if not failed:
        following = max(results) + plan.step
        return following if following <= plan.max_rate else None
    high = min(failed)
    low = max((r for r, ok in results.items() if ok and r < high), default=0)
    if high - low <= plan.resolution:
        return None
    middle = (low + high) // 2
    # Round to a multiple of 25 calls/s (finer below that resolution) to keep rates readable.
    grain = max(1, min(25, plan.resolution))
    middle = max(grain, round(middle / grain) * grain)
    return middle if middle not in results and low < middle < high else None


def best_sustained(results: dict[int, bool]) -> int:
    """The highest sustained rate below every failed one (0 when none was sustained)."""
    failed = [r for r, ok in results.items() if not ok]
    ceiling = min(failed) if failed else float("inf")
    return max((r for r, ok in results.items() if ok and r < ceiling), default=0)
