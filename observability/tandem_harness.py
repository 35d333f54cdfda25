"""Runs the local platform, a real Prometheus and SIPp for the observability end-to-end test.

Everything listens on loopback. The platform and SIPp use the contract ports (SIP 5060, carrier
5090, ng 2223, admin 9101/9102) and Prometheus uses 9090, so one run at a time: the test holds
/tmp/tandem-contract-ports.lock (the lock every end-to-end run of the repository takes) and
checks the ports are free before it starts anything. Every process is started in its own
process group and stopped by that group, so nothing outlives the test.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

REPO = Path(__file__).resolve().parent.parent
CONTRACT_LOCK = Path("/tmp/tandem-contract-ports.lock")
# Set by a caller that already holds CONTRACT_LOCK (e.g. `flock ... make test`), so the test
# does not wait for a lock its own parent holds.
LOCK_HELD_ENV = "TANDEM_CONTRACT_PORTS_LOCKED"

PROMETHEUS_ADDRESS = ("127.0.0.1", 9090)
TCP_PORTS = (5060, 9090, 9101, 9102)
UDP_PORTS = (5060, 5090, 2223)


class HarnessError(RuntimeError):
    """The environment is not fit for the test, or a process did not come up."""


@contextlib.contextmanager
def contract_ports_lock(timeout_s: float = 900.0) -> Iterator[None]:
    """Holds the repository-wide lock of the contract ports for the duration of the block."""
    if os.environ.get(LOCK_HELD_ENV) == "1":
        yield
        return
    fd = os.open(CONTRACT_LOCK, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise HarnessError(
                        f"{CONTRACT_LOCK} stayed locked for {timeout_s:.0f} s: another end-to-end "
                        f"run is using the contract ports. If this run was started under "
                        f"`flock {CONTRACT_LOCK} ...`, set {LOCK_HELD_ENV}=1."
                    ) from None
                time.sleep(1.0)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def busy_ports(host: str = "127.0.0.1") -> list[str]:
    """The contract ports something already listens on (empty when all are free)."""
    busy = []
    for kind, ports in ((socket.SOCK_STREAM, TCP_PORTS), (socket.SOCK_DGRAM, UDP_PORTS)):
        for port in ports:
            with socket.socket(socket.AF_INET, kind) as probe:
                if kind == socket.SOCK_STREAM:
                    # TIME_WAIT leftovers of an earlier run must not count as busy.
                    probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    probe.bind((host, port))
                except OSError as error:
                    if error.errno != errno.EADDRINUSE:
                        raise
                    busy.append(f"{'tcp' if kind == socket.SOCK_STREAM else 'udp'}/{port}")
    return busy


def free_udp_port(host: str) -> int:
    """A UDP port nothing listens on at `host` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


class Process:
    """A child process in its own process group, with its output in a log file."""

    def __init__(self, name: str, argv: list[str], log_dir: Path, env: dict[str, str] | None = None):
        self.name = name
        self.argv = argv
        self.log_path = log_dir / f"{name}.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.popen = subprocess.Popen(
            argv,
            cwd=REPO,
            env={**os.environ, **(env or {})},
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.pgid = self.popen.pid

    def running(self) -> bool:
        return self.popen.poll() is None

    def wait(self, timeout_s: float) -> int:
        return self.popen.wait(timeout=timeout_s)

    def stop(self, grace_s: float = 20.0) -> None:
        """SIGTERM to the whole group, SIGKILL to whatever is left after the grace period."""
        self._signal(signal.SIGTERM)
        try:
            self.popen.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            pass
        # Children (SIPp's background carrier, the two pods) may outlive the group leader.
        self._signal(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=5)
        self._log.close()

    def _signal(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pgid, signum)

    def output(self, tail: int = 4000) -> str:
        self._log.flush()
        text = self.log_path.read_text(errors="replace")
        return text[-tail:]


def wait_http_ok(url: str, timeout_s: float, process: Process | None = None) -> None:
    """Polls `url` until it answers 200; fails early when `process` exits."""
    deadline = time.monotonic() + timeout_s
    last = ""
    while time.monotonic() < deadline:
        if process is not None and not process.running():
            raise HarnessError(f"{process.name} exited ({process.popen.returncode}) before {url} "
                               f"was ready:\n{process.output()}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
                last = f"HTTP {response.status}"
        except (urllib.error.URLError, OSError) as error:
            last = str(error)
        time.sleep(0.2)
    raise HarnessError(f"{url} not ready after {timeout_s:.0f} s ({last})")


class PrometheusError(RuntimeError):
    """Prometheus answered a query with an error."""


@dataclass
class PrometheusApi:
    """A small client of Prometheus's HTTP API."""

    base: str = f"http://{PROMETHEUS_ADDRESS[0]}:{PROMETHEUS_ADDRESS[1]}"

    def get(self, path: str, params: list[tuple[str, str]] | None = None) -> Any:
        url = f"{self.base}{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                body = json.load(response)
        except urllib.error.HTTPError as error:
            try:
                body = json.load(error)
            except ValueError:
                raise PrometheusError(f"{path}: HTTP {error.code}") from None
        if body.get("status") != "success":
            raise PrometheusError(f"{body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def query(self, expr: str) -> list[Any]:
        """Evaluates an instant query now; a scalar result comes back as a one-element list."""
        data = self.get("/api/v1/query", [("query", expr)])
        if data["resultType"] in ("scalar", "string"):
            return [data["result"]]
        return list(data["result"])

    def query_range(self, expr: str, seconds: int, step: str = "1s") -> list[Any]:
        now = time.time()
        data = self.get("/api/v1/query_range",
                        [("query", expr), ("start", f"{now - seconds:.3f}"), ("end", f"{now:.3f}"),
                         ("step", step)])
        return list(data["result"])

    def label_values(self, label: str, match: str | None = None) -> list[str]:
        params = [("match[]", match)] if match else []
        return list(self.get(f"/api/v1/label/{label}/values", params))

    def targets(self) -> list[dict[str, Any]]:
        return list(self.get("/api/v1/targets")["activeTargets"])

    def rule_groups(self) -> list[dict[str, Any]]:
        return list(self.get("/api/v1/rules")["groups"])

    def alerts(self) -> list[dict[str, Any]]:
        return list(self.get("/api/v1/alerts")["alerts"])


def prometheus_config(base: Path, rule_file: Path, interval: str = "1s") -> dict[str, Any]:
    """The local scrape configuration (observability/prometheus-local.yml) for a fast test."""
    import yaml

    config = yaml.safe_load(base.read_text())
    config["global"]["scrape_interval"] = interval
    config["global"]["evaluation_interval"] = interval
    config["rule_files"] = [str(rule_file)]
    return config


def standby_trunk(host: str, port: int) -> str:
    """A health-checked Trunk whose only peer never answers: its peer goes down within seconds."""
    return f"""\
# Added by the observability test: a peer nothing answers on, probed every second.
apiVersion: voice.tandem.dev/v1alpha1
kind: Trunk
metadata:
  name: standby
spec:
  gatewayRef:
    name: local
  peers:
    - host: {host}
      port: {port}
      transport: UDP
  healthCheck:
    enabled: true
    intervalSeconds: 1
    failureThreshold: 1
"""


def send_udp(host: str, port: int, payload: bytes) -> None:
    """Sends one datagram (malformed input the platform must count and survive)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
        sender.sendto(payload, (host, port))
