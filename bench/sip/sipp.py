"""SIPp as carrier (built-in `uas`) and caller (built-in `uac`), and what its `-trace_stat` and
`-trace_rtt` files say about a rate step."""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

# From docs: a 4 MiB socket buffer, no abort when an element reorders 180 and 200, a 5 s wait
# per message, and enough receive and scheduling work per loop for thousands of calls/s.
COMMON_FLAGS = ["-buff_size", "4194304", "-nostdin"]
UAC_FLAGS = [
    "-default_behaviors", "all,-abortunexp",
    "-recv_timeout", "5000",
    "-max_recv_loops", "10000",
    "-max_sched_loops", "10000",
    "-trace_stat", "-fd", "1",
    "-trace_rtt", "-rtt_freq", "1",
]  # fmt: skip

STAT_FILE = "stat.csv"


def uas_command(address: str, port: int, media_port: int) -> list[str]:
    return ["sipp", "-sn", "uas", "-i", address, "-p", str(port), "-mp", str(media_port), *COMMON_FLAGS]


def uac_command(
    target: str,
    address: str,
    port: int,
    media_port: int,
    rate: int,
    calls: int,
    hold_ms: int = 0,
) -> list[str]:
    """`calls` calls at `rate` per second, each held `hold_ms` before its BYE."""
    return [
        "sipp", "-sn", "uac", target,
        "-i", address, "-p", str(port), "-mp", str(media_port),
        "-r", str(rate), "-m", str(calls), "-l", str(calls), "-d", str(hold_ms),
        "-stf", STAT_FILE,
        *COMMON_FLAGS, *UAC_FLAGS,
    ]  # fmt: skip


@dataclass
class Stat:
    """The caller's counters at its last statistics dump."""

    created: int
    successful: int
    failed: int
    # Seconds SIPp took to create every call (interpolated between the 1 s dumps); None when it
    # never created them all.
    creation_seconds: float | None


def read_stat(path: Path) -> Stat | None:
    try:
        with open(path, newline="") as f:
            rows = list(csv.reader(f, delimiter=";"))
    except OSError:
        return None
    if len(rows) < 2:
        return None
    head = rows[0]
    body = [r for r in rows[1:] if len(r) >= len(head) - 1]
    if not body:
        return None
    col = {name: i for i, name in enumerate(head)}

    def value(row: list[str], name: str) -> int:
        return int(row[col[name]] or 0)

    last = body[-1]
    created = value(last, "TotalCallCreated")
    return Stat(
        created=created,
        successful=value(last, "SuccessfulCall(C)"),
        failed=value(last, "FailedCall(C)"),
        creation_seconds=_creation_seconds(
            [(_elapsed(r[col["ElapsedTime(C)"]]), value(r, "TotalCallCreated")) for r in body],
            created,
        ),
    )


def _elapsed(text: str) -> float:
    """SIPp's `HH:MM:SS` (or `HH:MM:SS:uuuuuu`) elapsed time, in seconds."""
    parts = [float(p) for p in text.split(":")]
    seconds = parts[0] * 3600 + parts[1] * 60 + parts[2]
    return seconds + (parts[3] / 1e6 if len(parts) > 3 else 0.0)


def _creation_seconds(samples: list[tuple[float, int]], total: int) -> float | None:
    """When the created-call count reached `total`, interpolated linearly between dumps."""
    previous = (0.0, 0)
    for elapsed, created in samples:
        if created >= total > 0:
            (t0, c0), (t1, c1) = previous, (elapsed, created)
            return t0 + (t1 - t0) * (total - c0) / (c1 - c0) if c1 > c0 else t1
        previous = (elapsed, created)
    return None


@dataclass
class Answers:
    """INVITE→200 of every answered call, from `-trace_rtt`."""

    response_ms: list[float]
    # From the first INVITE sent to the last 200 received, in seconds.
    window_seconds: float


def read_rtt(path: Path) -> Answers:
    """Reads `Date_ms;response_time_ms;rtd_no` lines: when the 200 arrived (ms since SIPp
    started) and how long after its INVITE."""
    times, first_invite, last_answer = [], math.inf, 0.0
    try:
        with open(path, newline="") as f:
            for row in csv.reader(f, delimiter=";"):
                try:
                    answered, response = float(row[0]), float(row[1])
                except (ValueError, IndexError):
                    continue  # the header, or a line cut short when SIPp was stopped
                times.append(response)
                first_invite = min(first_invite, answered - response)
                last_answer = max(last_answer, answered)
    except OSError:
        pass
    window = (last_answer - first_invite) / 1000 if times else 0.0
    return Answers(times, window)


def rtt_file(directory: Path) -> Path | None:
    """SIPp names it `uac_<pid>_rtt.csv` in its working directory."""
    found = sorted(directory.glob("*_rtt.csv"))
    return found[-1] if found else None


def percentile(values: list[float], share: float) -> float | None:
    """Nearest-rank percentile (`share` in 0..1)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(share * len(ordered)))
    return ordered[rank - 1]
