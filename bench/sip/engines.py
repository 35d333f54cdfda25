"""The three systems under test, each started fresh in the engine's namespace from the
configuration files in `config/`: Kamailio alone, Kamailio with rtpengine, and Tandem's two pods.
All of them listen for SIP on 127.0.0.1:5060 and send calls to SIPp's uas on 127.0.0.1:5090."""

from __future__ import annotations

import re
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from netns import http_ok, udp_listening
from procs import Process, Processes

CONFIG_DIR = Path(__file__).resolve().parent / "config"
ADDRESS = "127.0.0.1"
SIP_PORT = 5060
CARRIER_PORT = 5090
NG_PORT = 2223
SIGNALING_ADMIN = 9101
MEDIA_ADMIN = 9102
RTP_PORT_MIN = 10000
RTP_PORT_MAX = 49999
# Every engine process runs at most this long; a step restarts the engine well before.
ENGINE_LIMIT_SECONDS = 900

PARAMETERS = {
    "SIP_ADDRESS": ADDRESS,
    "SIP_PORT": SIP_PORT,
    "CARRIER_ADDRESS": ADDRESS,
    "CARRIER_PORT": CARRIER_PORT,
    "NG_ADDRESS": ADDRESS,
    "NG_PORT": NG_PORT,
    "RTP_ADDRESS": ADDRESS,
    "RTP_PORT_MIN": RTP_PORT_MIN,
    "RTP_PORT_MAX": RTP_PORT_MAX,
}


def render(template: str, destination: Path, extra: dict[str, object] | None = None) -> Path:
    """Copies `config/<template>` to `destination`, replacing each `@NAME@`."""
    values = {**PARAMETERS, **(extra or {})}
    text = (CONFIG_DIR / template).read_text()
    text = re.sub(r"@([A-Z_]+)@", lambda m: str(values[m.group(1)]), text)
    destination.write_text(text)
    return destination


@dataclass
class Running:
    """An engine's processes for one step, and where its control socket is (Kamailio)."""

    processes: list[Process]
    ctl_socket: Path | None = None

    def pids(self) -> list[int]:
        return sorted({pid for p in self.processes for pid in p.tree()})

    def alive(self) -> bool:
        return all(p.running() for p in self.processes)

    def shm_used_bytes(self) -> int | None:
        """Kamailio's shared memory in use (`kamcmd core.shmmem`, real_used)."""
        if self.ctl_socket is None:
            return None
        result = subprocess.run(
            ["timeout", "10", "kamcmd", "-s", f"unix:{self.ctl_socket}", "core.shmmem"],
            capture_output=True,
            text=True,
        )
        found = re.search(r"real_used:\s*(\d+)", result.stdout)
        return int(found.group(1)) if found else None


class Engine:
    name = ""

    def start(self, processes: Processes, netns: str, workdir: Path) -> Running:
        raise NotImplementedError

    def ready(self, netns: str, running: Running) -> bool:
        raise NotImplementedError

    def launch(self, processes: Processes, netns: str, workdir: Path, wait: float = 20.0) -> Running:
        """Starts the engine and waits until it serves; raises when it does not."""
        workdir.mkdir(parents=True, exist_ok=True)
        running = self.start(processes, netns, workdir)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if not running.alive():
                break
            if self.ready(netns, running):
                time.sleep(0.5)  # let every worker reach its receive loop
                return running
            time.sleep(0.1)
        for process in running.processes:
            processes.stop(process)
        logs = ", ".join(str(p.log) for p in running.processes)
        raise RuntimeError(f"{self.name} did not start serving within {wait:.0f} s (logs: {logs})")


class Kamailio(Engine):
    """Stateful proxy: tm, sl, rr and dialog, 2 UDP workers, 2 GB of shared memory."""

    name = "kamailio"
    with_rtpengine = False

    def start(self, processes: Processes, netns: str, workdir: Path) -> Running:
        started = []
        if self.with_rtpengine:
            conf = render("rtpengine.conf", workdir / "rtpengine.conf")
            started.append(
                processes.start(
                    "rtpengine",
                    netns,
                    ["rtpengine", f"--config-file={conf}", f"--pidfile={workdir / 'rtpengine.pid'}"],
                    ENGINE_LIMIT_SECONDS,
                    workdir / "rtpengine.log",
                )
            )
        ctl = workdir / "kamailio.ctl"
        cfg = render("kamailio.cfg", workdir / "kamailio.cfg", {"CTL_SOCKET": ctl})
        runtime = workdir / "run"
        runtime.mkdir(exist_ok=True)
        command = ["kamailio", "-f", str(cfg), "-DD", "-E", "-m", "2048", "-M", "32"]
        command += ["-P", str(workdir / "kamailio.pid"), "-Y", str(runtime)]
        if self.with_rtpengine:
            command += ["-A", "WITH_RTPENGINE"]
        started.append(processes.start("kamailio", netns, command, ENGINE_LIMIT_SECONDS, workdir / "kamailio.log"))
        return Running(started, ctl_socket=ctl)

    def ready(self, netns: str, running: Running) -> bool:
        media_ready = not self.with_rtpengine or udp_listening(netns, NG_PORT)
        return media_ready and udp_listening(netns, SIP_PORT) and bool(running.ctl_socket and running.ctl_socket.exists())


class KamailioRtpengine(Kamailio):
    """The same proxy anchoring every call's media on rtpengine (userspace, 2 threads)."""

    name = "kamailio+rtpengine"
    with_rtpengine = True


class Tandem(Engine):
    """signaling-pod and media-pod from the release build, configured like the local platform."""

    name = "tandem"

    def __init__(self, bin_dir: Path) -> None:
        self.bin_dir = bin_dir

    def start(self, processes: Processes, netns: str, workdir: Path) -> Running:
        config = workdir / "config"
        config.mkdir(exist_ok=True)
        for name in ("gateway.yaml", "trunks.yaml", "routeplan.yaml"):
            render(name, config / name)
        # Warnings and errors only, like Kamailio's `debug=0`.
        env = {"RUST_LOG": "warn"}
        common = ["--config-dir", str(config), "--gateway", "bench"]
        media = processes.start(
            "media-pod",
            netns,
            [
                str(self.bin_dir / "media-pod"), *common,
                "--ng-listen", f"{ADDRESS}:{NG_PORT}", "--rtp-address", ADDRESS,
                "--admin-listen", f"{ADDRESS}:{MEDIA_ADMIN}",
            ],
            ENGINE_LIMIT_SECONDS,
            workdir / "media-pod.log",
            env=env,
        )  # fmt: skip
        signaling = processes.start(
            "signaling-pod",
            netns,
            [
                str(self.bin_dir / "signaling-pod"), *common,
                "--bind-address", ADDRESS, "--media-ng", f"{ADDRESS}:{NG_PORT}",
                "--admin-listen", f"{ADDRESS}:{SIGNALING_ADMIN}",
            ],
            ENGINE_LIMIT_SECONDS,
            workdir / "signaling-pod.log",
            env=env,
        )  # fmt: skip
        return Running([media, signaling])

    def ready(self, netns: str, running: Running) -> bool:
        return all(http_ok(netns, f"http://{ADDRESS}:{port}/readyz") for port in (MEDIA_ADMIN, SIGNALING_ADMIN))


def all_engines(bin_dir: Path) -> list[Engine]:
    return [Kamailio(), KamailioRtpengine(), Tandem(bin_dir)]
