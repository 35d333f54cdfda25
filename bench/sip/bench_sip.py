#!/usr/bin/env python3
"""`make bench-sip`: calls per second through Kamailio, Kamailio + rtpengine and Tandem, side by
side in one invocation (method: docs/performance.md).

For each run and each engine: a private network namespace with SIPp's built-in uas as the
carrier for the whole ramp; per rate step a freshly started engine and a fresh SIPp uac placing
rate × STEP_SECONDS calls; ramp up until a step fails, then bisect. Then one step at twice the
best sustained rate (overload) and one holding HOLD_CALLS calls up (memory per call, read 33 s
after the last call was answered).

Settings come from the environment (empty means the default):
  RUNS=1            runs of the whole comparison
  QUICK=1           smoke check: 2 short steps, no bisection, 200 calls held
  ENGINES=...       a subset of: kamailio kamailio+rtpengine tandem
  RATES="a b c"     offer exactly these rates (no ramp, no bisection)
  START=500 STEP=500 MAX_RATE=12000 RESOLUTION=125 STEP_SECONDS=10 HOLD_CALLS=2000
  MEMORY_ONLY=1     only the memory step (no rate steps): memory per call held, on its own
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import report  # noqa: E402
import sipp  # noqa: E402
from engines import ADDRESS, CARRIER_PORT, SIP_PORT, Engine, Running, all_engines  # noqa: E402
from netns import Namespaces  # noqa: E402
from procs import CpuMeter, Process, Processes, command_name, pss_kib  # noqa: E402
from ramp import SIPP_BUSY_CPU, Plan, best_sustained, judge, next_rate  # noqa: E402

UAS_MEDIA_PORT = 6000
UAC_FIRST_PORT = 5100
UAC_FIRST_MEDIA_PORT = 7000
HOLD_RATE = 200


@dataclass(frozen=True)
class Settings:
    runs: int
    plan: Plan
    step_seconds: int
    hold_calls: int
    hold_settle_seconds: int
    engines: tuple[str, ...]
    memory_only: bool = False

    @staticmethod
    def from_env(env: dict[str, str]) -> Settings:
        def number(name: str, default: int) -> int:
            text = env.get(name, "").strip()
            if not text:
                return default
            try:
                value = int(text)
            except ValueError:
                raise SystemExit(f"bench-sip: {name}={text!r} is not a whole number") from None
            if value < 1:
                raise SystemExit(f"bench-sip: {name} must be at least 1 (got {value})")
            return value

        quick = env.get("QUICK", "").strip() not in ("", "0")
        rates = tuple(sorted({int(r) for r in env.get("RATES", "").split() if r.isdigit() and int(r) > 0}))
        if env.get("RATES", "").strip() and not rates:
            raise SystemExit("bench-sip: RATES must list whole numbers of calls per second")
        plan = Plan(
            start=number("START", 100 if quick else 500),
            step=number("STEP", 200 if quick else 500),
            max_rate=number("MAX_RATE", 300 if quick else 12000),
            resolution=number("RESOLUTION", 100000 if quick else 125),
            fixed=rates,
        )
        names = tuple(env.get("ENGINES", "").split()) or ("kamailio", "kamailio+rtpengine", "tandem")
        known = ("kamailio", "kamailio+rtpengine", "tandem")
        unknown = [n for n in names if n not in known]
        if unknown:
            raise SystemExit(f"bench-sip: unknown engine {' '.join(unknown)} (known: {' '.join(known)})")
        return Settings(
            runs=number("RUNS", 1),
            plan=plan,
            step_seconds=number("STEP_SECONDS", 3 if quick else 10),
            hold_calls=number("HOLD_CALLS", 200 if quick else 2000),
            hold_settle_seconds=2 if quick else 33,
            engines=names,
            memory_only=env.get("MEMORY_ONLY", "").strip() not in ("", "0"),
        )


@dataclass
class Step:
    """One rate step of one engine: what SIPp saw and what the engine and SIPp cost."""

    engine: str
    rate: int
    calls: int
    created: int
    successful: int
    failed: int
    window_seconds: float
    completed_share: float
    throughput_share: float
    sustained: bool
    p50_ms: float | None
    p99_ms: float | None
    engine_cpu_seconds: float
    uac_cpu_share: float
    uas_cpu_share: float
    creation_share: float
    sipp_limited: bool
    engine_survived: bool

    @property
    def cpu_ms_per_call(self) -> float | None:
        return self.engine_cpu_seconds * 1000 / self.successful if self.successful else None

    @property
    def completed_per_second(self) -> float:
        return self.successful / self.window_seconds if self.window_seconds > 0 else 0.0


@dataclass
class Memory:
    calls_held: int
    # Summed PSS of every engine process, KiB, before and with the calls up.
    before_kib: int
    with_calls_kib: int
    per_process_kib: dict[str, tuple[int, int]]
    shm_before: int | None
    shm_with_calls: int | None

    @property
    def bytes_per_call(self) -> float | None:
        if not self.calls_held:
            return None
        return (self.with_calls_kib - self.before_kib) * 1024 / self.calls_held

    @property
    def shm_bytes_per_call(self) -> float | None:
        if not self.calls_held or self.shm_before is None or self.shm_with_calls is None:
            return None
        return (self.shm_with_calls - self.shm_before) / self.calls_held


@dataclass
class EngineRun:
    engine: str
    run: int
    steps: list[Step]
    max_rate: int
    overload: Step | None
    memory: Memory | None


class Bench:
    def __init__(self, settings: Settings, bin_dir: Path, out: Path) -> None:
        self.settings = settings
        self.out = out
        self.processes = Processes()
        self.namespaces = Namespaces(f"tbench{os.getpid()}")
        self.engines = {e.name: e for e in all_engines(bin_dir)}
        self.uac_index = 0

    def close(self) -> None:
        self.processes.stop_all()
        self.namespaces.delete_all()

    def run_engine(self, engine: Engine, run: int) -> EngineRun:
        workdir = self.out / f"run{run}" / engine.name
        workdir.mkdir(parents=True, exist_ok=True)
        netns = self.namespaces.create(engine.name.replace("+", "-"))
        uas = self.processes.start(
            "uas",
            netns,
            sipp.uas_command(ADDRESS, CARRIER_PORT, UAS_MEDIA_PORT),
            3600,
            workdir / "uas.log",
            cwd=workdir,
        )
        try:
            time.sleep(0.5)
            if not uas.running():
                raise RuntimeError(f"SIPp uas did not start (log: {workdir / 'uas.log'})")
            results: dict[int, bool] = {}
            steps = []
            while not self.settings.memory_only and (rate := next_rate(self.settings.plan, results)) is not None:
                step = self.rate_step(engine, netns, uas, rate, workdir)
                steps.append(step)
                results[rate] = step.sustained
            max_rate = best_sustained(results)
            overload = self.rate_step(engine, netns, uas, 2 * max_rate, workdir) if max_rate else None
            memory = self.memory_step(engine, netns, workdir)
            return EngineRun(engine.name, run, steps, max_rate, overload, memory)
        finally:
            self.processes.stop(uas)
            self.namespaces.delete(netns)

    def _uac(self, netns: str, workdir: Path, rate: int, calls: int, hold_ms: int, limit: float) -> Process:
        self.uac_index += 1
        # A fresh local port per step keeps the previous step's late responses away.
        port = UAC_FIRST_PORT + self.uac_index
        media_port = UAC_FIRST_MEDIA_PORT + 4 * self.uac_index
        command = sipp.uac_command(f"{ADDRESS}:{SIP_PORT}", ADDRESS, port, media_port, rate, calls, hold_ms)
        return self.processes.start("uac", netns, command, limit, workdir / "uac.log", cwd=workdir)

    def _stop_engine(self, running: Running) -> None:
        for process in running.processes:
            self.processes.stop(process)

    def rate_step(self, engine: Engine, netns: str, uas: Process, rate: int, enginedir: Path) -> Step:
        calls = rate * self.settings.step_seconds
        workdir = enginedir / f"rate-{rate}-{self.uac_index + 1}"
        workdir.mkdir()
        running = engine.launch(self.processes, netns, workdir)
        try:
            engine_meter = CpuMeter(running.pids())
            uas_meter = CpuMeter(uas.tree())
            # Calls that find the engine gone end 5 s after their INVITE; twice the nominal
            # duration leaves room for a generator that falls behind.
            limit = 2 * self.settings.step_seconds + 20
            started = time.monotonic()
            uac = self._uac(netns, workdir, rate, calls, 0, limit)
            status, uac_cpu = uac.wait_with_cpu(limit + 10)
            uac_wall = time.monotonic() - started
            if status is None:
                self.processes.stop(uac)
            engine_cpu, wall = engine_meter.stop()
            uas_cpu, _ = uas_meter.stop()
            survived = running.alive()
        finally:
            self._stop_engine(running)
        stat = sipp.read_stat(workdir / sipp.STAT_FILE)
        rtt = sipp.rtt_file(workdir)
        answers = sipp.read_rtt(rtt) if rtt else sipp.Answers([], 0.0)
        successful = stat.successful if stat else 0
        verdict = judge(rate, calls, successful, answers.window_seconds)
        creation_share = (
            calls / stat.creation_seconds / rate
            if stat and stat.creation_seconds
            else (stat.created / calls if stat else 0.0)
        )
        uac_share = uac_cpu / uac_wall if uac_wall > 0 else 0.0
        uas_share = uas_cpu / wall if wall > 0 else 0.0
        step = Step(
            engine=engine.name,
            rate=rate,
            calls=calls,
            created=stat.created if stat else 0,
            successful=successful,
            failed=stat.failed if stat else 0,
            window_seconds=answers.window_seconds,
            completed_share=verdict.completed_share,
            throughput_share=verdict.throughput_share,
            sustained=verdict.sustained and survived,
            p50_ms=sipp.percentile(answers.response_ms, 0.50),
            p99_ms=sipp.percentile(answers.response_ms, 0.99),
            engine_cpu_seconds=engine_cpu,
            uac_cpu_share=uac_share,
            uas_cpu_share=uas_share,
            creation_share=min(creation_share, 1.0),
            sipp_limited=max(uac_share, uas_share) >= SIPP_BUSY_CPU or creation_share < 0.95,
            engine_survived=survived,
        )
        print(report.step_line(step), flush=True)
        return step

    def memory_step(self, engine: Engine, netns: str, enginedir: Path) -> Memory | None:
        calls = self.settings.hold_calls
        workdir = enginedir / f"hold-{calls}"
        workdir.mkdir()
        running = engine.launch(self.processes, netns, workdir)
        try:
            time.sleep(1.0)
            pids = running.pids()
            names = {pid: command_name(pid) for pid in pids}
            before = {pid: pss_kib(pid) for pid in pids}
            shm_before = running.shm_used_bytes()
            ramp_seconds = calls / HOLD_RATE
            uac = self._uac(netns, workdir, HOLD_RATE, calls, 90_000, ramp_seconds + 150)
            deadline = time.monotonic() + ramp_seconds + 20
            held = 0
            while time.monotonic() < deadline and uac.running():
                time.sleep(0.5)
                rtt = sipp.rtt_file(workdir)
                held = len(sipp.read_rtt(rtt).response_ms) if rtt else 0
                if held >= calls:
                    break
            # Past the set-up transactions' lifetimes (Kamailio's 5 s wait timer, a UAS INVITE
            # transaction's 32 s Timer L), so that what is left is the calls' own state.
            time.sleep(self.settings.hold_settle_seconds)
            after = {pid: pss_kib(pid) for pid in pids}
            shm_after = running.shm_used_bytes()
            self.processes.stop(uac)
        finally:
            self._stop_engine(running)
        per_process: dict[str, tuple[int, int]] = {}
        for pid in pids:
            b, a = per_process.get(names[pid], (0, 0))
            per_process[names[pid]] = (b + before[pid], a + after[pid])
        memory = Memory(held, sum(before.values()), sum(after.values()), per_process, shm_before, shm_after)
        print(report.memory_line(engine.name, memory), flush=True)
        return memory


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bin-dir", type=Path, default=Path("target/release"), help="signaling-pod and media-pod")
    parser.add_argument("--out", type=Path, help="where logs and results.json go (default: a new /tmp dir)")
    args = parser.parse_args()
    settings = Settings.from_env(dict(os.environ))
    if os.geteuid() != 0:
        print("bench-sip: needs root (it creates network namespaces)", file=sys.stderr)
        return 2
    for binary in ("signaling-pod", "media-pod"):
        if "tandem" in settings.engines and not (args.bin_dir / binary).is_file():
            print(f"bench-sip: {args.bin_dir / binary} not found; build the release binaries first", file=sys.stderr)
            return 2
    out = args.out or Path(tempfile.mkdtemp(prefix="tandem-bench-sip."))
    out.mkdir(parents=True, exist_ok=True)
    print(f"bench-sip: logs and results in {out}", flush=True)

    # SIGTERM and SIGHUP unwind like Ctrl-C so that the cleanup below runs.
    def interrupt(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    signal.signal(signal.SIGTERM, interrupt)
    signal.signal(signal.SIGHUP, interrupt)
    bench = Bench(settings, args.bin_dir.resolve(), out.resolve())
    runs: list[EngineRun] = []
    failures = 0
    try:
        for run in range(1, settings.runs + 1):
            for name in settings.engines:
                print(f"== run {run}/{settings.runs}: {name}", flush=True)
                try:
                    runs.append(bench.run_engine(bench.engines[name], run))
                except RuntimeError as e:
                    failures += 1
                    print(f"bench-sip: {name} left out of run {run}: {e}", file=sys.stderr)
    except KeyboardInterrupt:
        print("bench-sip: interrupted; stopping everything it started", file=sys.stderr)
        return 130
    finally:
        bench.close()
        (out / "results.json").write_text(json.dumps([_as_json(r) for r in runs], indent=2))
    print()
    print(report.summary(runs, settings.engines))
    return 1 if failures else 0


def _as_json(run: EngineRun) -> dict:
    data = asdict(run)
    for step in [*data["steps"], data["overload"]]:
        if step:
            step["cpu_ms_per_call"] = Step(**step).cpu_ms_per_call
    if run.memory:
        data["memory"]["bytes_per_call"] = run.memory.bytes_per_call
        data["memory"]["shm_bytes_per_call"] = run.memory.shm_bytes_per_call
    return data


if __name__ == "__main__":
    sys.exit(main())
