"""Private network namespaces: one per engine run, loopback up, ephemeral ports kept out of the
engines' RTP range, deleted (with anything still running inside) on exit."""

from __future__ import annotations

import os
import signal
import subprocess
import time

EPHEMERAL_PORTS = "50000 65000"


def _ip(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=20)


class Namespaces:
    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self._created: list[str] = []

    def create(self, suffix: str) -> str:
        name = f"{self.prefix}-{suffix}"
        if _ip("netns", "add", name).returncode != 0:
            # Left over by an earlier run of this very process id: start clean.
            self.delete(name)
            _check(_ip("netns", "add", name), f"ip netns add {name}")
        self._created.append(name)
        _check(_ip("netns", "exec", name, "ip", "link", "set", "lo", "up"), "lo up")
        _check(
            _ip("netns", "exec", name, "sysctl", "-q", f"net.ipv4.ip_local_port_range={EPHEMERAL_PORTS}"),
            "ephemeral port range",
        )
        return name

    def delete(self, name: str) -> None:
        """Kills what still runs in the namespace (only processes this harness started live
        there) and removes it."""
        pids = _ip("netns", "pids", name).stdout.split()
        for pid in pids:
            try:
                os.kill(int(pid), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass
        if pids:
            time.sleep(0.2)
        _ip("netns", "del", name)
        if name in self._created:
            self._created.remove(name)

    def delete_all(self) -> None:
        while self._created:
            self.delete(self._created[-1])


def _check(result: subprocess.CompletedProcess, what: str) -> None:
    if result.returncode != 0:
        raise RuntimeError(f"{what} failed: {result.stderr.strip()}")


def udp_listening(netns: str, port: int) -> bool:
    result = subprocess.run(
        ["ip", "netns", "exec", netns, "ss", "-Hlun", f"sport = :{port}"],
        capture_output=True,
        text=True,
        timeout=10,
    )
    return bool(result.stdout.strip())


def http_ok(netns: str, url: str) -> bool:
    result = subprocess.run(
        ["ip", "netns", "exec", netns, "curl", "-fsS", "-m", "1", "-o", "/dev/null", url],
        capture_output=True,
        timeout=10,
    )
    return result.returncode == 0
