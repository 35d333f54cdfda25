"""What `make bench-sip` prints: a line per step as it goes, then per run a table of the
engines and the ratios Tandem/Kamailio and Tandem/(Kamailio + rtpengine), and with several runs
the spread across them."""

from __future__ import annotations

import statistics
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bench_sip import EngineRun, Memory, Step

TANDEM = "tandem"
BASELINES = (("Kamailio", "kamailio"), ("(Kamailio + rtpengine)", "kamailio+rtpengine"))


def _num(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def step_line(step: Step) -> str:
    verdict = "sustained" if step.sustained else "FAILED"
    if not step.engine_survived:
        verdict += " (engine exited)"
    return (
        f"  {step.engine:<19} {step.rate:>6}/s {step.calls:>7} calls: {step.successful:>7} ok "
        f"({step.completed_share:6.1%}), {step.completed_per_second:8.0f}/s completed "
        f"({step.throughput_share:6.1%}), INVITE→200 p50 {_num(step.p50_ms, '.0f')} ms "
        f"p99 {_num(step.p99_ms, '.0f')} ms, CPU {_num(step.cpu_ms_per_call, '.3f')} ms/call, "
        f"SIPp uac {step.uac_cpu_share:.0%} uas {step.uas_cpu_share:.0%} of a core"
        f"{', SIPp-limited' if step.sipp_limited else ''} → {verdict}"
    )


def memory_line(engine: str, memory: Memory) -> str:
    parts = [
        f"{name} {(after - before) / memory.calls_held:.2f}"
        for name, (before, after) in sorted(memory.per_process_kib.items())
        if memory.calls_held
    ]
    shm = memory.shm_bytes_per_call
    return (
        f"  {engine:<19} {memory.calls_held} calls held: "
        f"{_num(_kib(memory.bytes_per_call), '.2f')} KiB/call (PSS of every process"
        f"{': ' + ', '.join(parts) if parts else ''})"
        f"{f'; Kamailio shm {shm / 1024:.2f} KiB/call' if shm is not None else ''}"
    )


def _kib(value: float | None) -> float | None:
    return None if value is None else value / 1024


def _limit(run: EngineRun) -> str:
    """Whether SIPp, not the engine, limited the lowest failed step."""
    failed = sorted((s for s in run.steps if not s.sustained), key=lambda s: s.rate)
    if not failed:
        return "not reached"
    return "SIPp" if failed[0].sipp_limited else "engine"


def _at_max(run: EngineRun) -> Step | None:
    return next((s for s in run.steps if s.rate == run.max_rate and s.sustained), None)


def table(runs: list[EngineRun]) -> str:
    header = (
        f"{'engine':<19} {'max CPS':>8} {'p50 ms':>7} {'p99 ms':>7} {'CPU ms/call':>12} "
        f"{'KiB/call':>9} {'limit':>12} {'2x overload':>12}"
    )
    lines = [header, "-" * len(header)]
    for run in runs:
        best = _at_max(run)
        overload = (
            f"{run.overload.completed_per_second / run.max_rate:.0%}" if run.overload and run.max_rate else "-"
        )
        memory = _kib(run.memory.bytes_per_call) if run.memory else None
        lines.append(
            f"{run.engine:<19} {run.max_rate:>8} {_num(best and best.p50_ms, '.0f'):>7} "
            f"{_num(best and best.p99_ms, '.0f'):>7} {_num(best and best.cpu_ms_per_call, '.3f'):>12} "
            f"{_num(memory, '.2f'):>9} {_limit(run):>12} {overload:>12}"
        )
    return "\n".join(lines)


def ratios(runs: list[EngineRun]) -> list[str]:
    by_name = {r.engine: r for r in runs}
    tandem = by_name.get(TANDEM)
    lines = []
    for label, name in BASELINES:
        base = by_name.get(name)
        if not tandem or not base:
            continue
        rate = tandem.max_rate / base.max_rate if base.max_rate else None
        t, b = _at_max(tandem), _at_max(base)
        cpu = t.cpu_ms_per_call / b.cpu_ms_per_call if t and b and t.cpu_ms_per_call and b.cpu_ms_per_call else None
        lines.append(f"Tandem / {label}: max CPS {_num(rate, '.2f')}x, CPU per call {_num(cpu, '.2f')}x")
    return lines


def summary(runs: list[EngineRun], engines: tuple[str, ...]) -> str:
    numbers = sorted({r.run for r in runs})
    out = []
    for number in numbers:
        these = [r for r in runs if r.run == number]
        out += [f"run {number}", table(these), *ratios(these), ""]
    if len(numbers) > 1:
        out.append(f"over {len(numbers)} runs (median, min-max):")
        for name in engines:
            rates = [r.max_rate for r in runs if r.engine == name]
            if rates:
                out.append(f"  {name:<19} max CPS {statistics.median(rates):.0f} ({min(rates)}-{max(rates)})")
        for label, name in BASELINES:
            values = []
            for number in numbers:
                by_name = {r.engine: r for r in runs if r.run == number}
                if TANDEM in by_name and name in by_name and by_name[name].max_rate:
                    values.append(by_name[TANDEM].max_rate / by_name[name].max_rate)
            if values:
                out.append(
                    f"  Tandem / {label}: max CPS {statistics.median(values):.2f}x "
                    f"({min(values):.2f}-{max(values):.2f}x over {len(values)} runs)"
                )
    return "\n".join(out).rstrip()
