"""The processes the harness starts and what it reads about them from /proc.

Every process runs under `timeout`, inside a network namespace, as the leader of a process group
of its own; `Processes` keeps each one so that all are stopped on exit, even on failure.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass
class Process:
    """One started command: `timeout` (the group leader) and, below it, the program."""

    name: str
    popen: subprocess.Popen
    log: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def running(self) -> bool:
        return self.popen.poll() is None

    def tree(self) -> list[int]:
        """PIDs of the program and its descendants (not the `timeout` wrapper)."""
        return descendants(self.pid)

    def wait(self, seconds: float) -> int | None:
        try:
            return self.popen.wait(timeout=seconds)
        except subprocess.TimeoutExpired:
            return None

    def wait_with_cpu(self, seconds: float) -> tuple[int | None, float]:
        """Waits up to `seconds` for the exit; returns the exit status (None if still running)
        and the CPU seconds the whole tree used, which the kernel reports at the exit."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            pid, status, usage = os.wait4(self.pid, os.WNOHANG)
            if pid:
                self.popen.returncode = os.waitstatus_to_exitcode(status)
                return self.popen.returncode, usage.ru_utime + usage.ru_stime
            time.sleep(0.05)
        return None, 0.0

    def stop(self, grace: float = 3.0) -> None:
        """SIGTERM to the group, SIGKILL to whatever is left after `grace` seconds."""
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 2.0)):
            try:
                os.killpg(self.pid, sig)
            except ProcessLookupError:
                pass
            if self.wait(wait) is not None and not _group_alive(self.pid):
                return


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False


class Processes:
    """Starts commands in a namespace and stops every one of them on `stop_all`."""

    def __init__(self) -> None:
        self._started: list[Process] = []

    def start(
        self,
        name: str,
        netns: str,
        command: list[str],
        limit_seconds: float,
        log: Path,
        cwd: Path | None = None,
        env: dict[str, str] | None = None,
    ) -> Process:
        argv = [
            "ip", "netns", "exec", netns,
            "timeout", "--kill-after=5", f"{max(1, int(limit_seconds))}s",
            *command,
        ]  # fmt: skip
        with open(log, "ab") as out:
            popen = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=cwd,
                env={**os.environ, **(env or {})},
                start_new_session=True,
            )
        process = Process(name, popen, log)
        self._started.append(process)
        return process

    def stop(self, process: Process) -> None:
        process.stop()
        if process in self._started:
            self._started.remove(process)

    def stop_all(self) -> None:
        while self._started:
            self._started.pop().stop(grace=1.0)


def _stat_fields(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name: [0] is the state, [1] the parent."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw[raw.rfind(")") + 2 :].split()


def descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat_fields(int(entry))
            if fields:
                children.setdefault(int(fields[1]), []).append(int(entry))
    found, todo = [], list(children.get(root, []))
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return sorted(found)


def cpu_seconds(pids: list[int]) -> float:
    """User plus system CPU time of every thread of these processes, in seconds."""
    ticks = 0
    for pid in pids:
        fields = _stat_fields(pid)
        if fields:
            ticks += int(fields[11]) + int(fields[12])
    return ticks / CLOCK_TICKS


def pss_kib(pid: int) -> int:
    """Proportional set size: resident memory with shared pages split among their users, so
    that Kamailio's forked workers do not count its shared memory once each."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def command_name(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return "?"


class CpuMeter:
    """CPU used by a set of processes between `start` and `stop`, with the wall time."""

    def __init__(self, pids: list[int]) -> None:
        self.pids = pids
        self._cpu = cpu_seconds(pids)
        self._wall = time.monotonic()

    def stop(self) -> tuple[float, float]:
        return cpu_seconds(self.pids) - self._cpu, time.monotonic() - self._wall
