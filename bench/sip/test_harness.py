"""Tests of the harness's pure parts: the step verdict, the ramp and bisection, and reading SIPp's
statistics files. Run with `python3 -m unittest discover -s bench/sip`."""

from __future__ import annotations

import tempfile
import unittest
from pathlib import Path

import sipp
from ramp import Plan, best_sustained, judge, next_rate


def ramp_against(plan: Plan, capacity: int) -> tuple[list[int], int]:
    """Drives the ramp against an engine that sustains every rate up to `capacity`."""
    results: dict[int, bool] = {}
    offered = []
    while (rate := next_rate(plan, results)) is not None:
        offered.append(rate)
        results[rate] = rate <= capacity
        assert len(offered) < 100, "the ramp must end"
    return offered, best_sustained(results)


class VerdictTest(unittest.TestCase):
    def test_sustained_needs_both_completion_and_throughput(self) -> None:
        self.assertTrue(judge(1000, 10000, 9990, 10.0).sustained)
        self.assertFalse(judge(1000, 10000, 9989, 10.0).sustained)  # 99.89% completed
        self.assertTrue(judge(1000, 10000, 10000, 10.5).sustained)  # 952/s: 95.2%
        self.assertFalse(judge(1000, 10000, 10000, 10.6).sustained)  # 943/s: 94.3%

    def test_nothing_answered_is_a_failure(self) -> None:
        verdict = judge(500, 5000, 0, 0.0)
        self.assertFalse(verdict.sustained)
        self.assertEqual(verdict.throughput_share, 0.0)


class RampTest(unittest.TestCase):
    plan = Plan(start=500, step=500, max_rate=12000, resolution=125)

    def test_ramps_up_then_bisects_to_the_resolution(self) -> None:
        offered, best = ramp_against(self.plan, 3700)
        self.assertEqual(offered[:8], [500, 1000, 1500, 2000, 2500, 3000, 3500, 4000])
        self.assertEqual(offered[8:], [3750, 3625])
        self.assertEqual(best, 3625)

    def test_a_failing_first_step_bisects_downwards(self) -> None:
        offered, best = ramp_against(self.plan, 300)
        self.assertEqual(offered[0], 500)
        self.assertLessEqual(500 - best, 500)
        self.assertTrue(all(r < 500 for r in offered[1:]))
        self.assertEqual(best, 250)

    def test_stops_at_the_ceiling_when_nothing_fails(self) -> None:
        offered, best = ramp_against(Plan(100, 200, 300, 100000), 10**6)
        self.assertEqual(offered, [100, 300])
        self.assertEqual(best, 300)

    def test_fixed_rates_are_offered_as_given(self) -> None:
        offered, best = ramp_against(Plan(1, 1, 1, 1, fixed=(200, 8000)), 1000)
        self.assertEqual(offered, [200, 8000])
        self.assertEqual(best, 200)

    def test_a_pass_above_a_failure_does_not_count(self) -> None:
        self.assertEqual(best_sustained({1000: True, 1500: False, 2000: True}), 1000)


STAT_HEADER = "StartTime;ElapsedTime(C);TotalCallCreated;SuccessfulCall(C);FailedCall(C);ResponseTime1(C);"


class SippFilesTest(unittest.TestCase):
    def write(self, text: str) -> Path:
        directory = tempfile.TemporaryDirectory()
        self.addCleanup(directory.cleanup)
        path = Path(directory.name) / "file.csv"
        path.write_text(text)
        return path

    def test_stat_takes_the_last_dump_and_interpolates_creation(self) -> None:
        path = self.write(
            STAT_HEADER + "\n"
            "t;00:00:01;1000;990;0;00:00:00:001000;\n"
            "t;00:00:02;2000;1990;0;00:00:00:001000;\n"
            "t;00:00:03;2500;2497;3;00:00:00:001000;\n"
            "t;00:00:09;2500;2497;3;00:00:00:001000;\n"
        )
        stat = sipp.read_stat(path)
        assert stat is not None
        self.assertEqual((stat.created, stat.successful, stat.failed), (2500, 2497, 3))
        self.assertAlmostEqual(stat.creation_seconds or 0, 3.0)
        self.assertAlmostEqual(sipp._creation_seconds([(1.0, 1000), (2.0, 3000)], 2000), 1.5)

    def test_missing_or_empty_stat_is_none(self) -> None:
        self.assertIsNone(sipp.read_stat(Path("/nonexistent/stat.csv")))
        self.assertIsNone(sipp.read_stat(self.write(STAT_HEADER + "\n")))

    def test_rtt_window_runs_from_first_invite_to_last_answer(self) -> None:
        path = self.write("Date_ms;response_time_ms;rtd_no\n12;4;1\n20;0;1\n1008;8;1\n1010;\n")
        answers = sipp.read_rtt(path)
        self.assertEqual(answers.response_ms, [4.0, 0.0, 8.0])
        self.assertAlmostEqual(answers.window_seconds, (1008 - 8) / 1000)

    def test_percentiles_are_nearest_rank(self) -> None:
        values = [float(v) for v in range(1, 101)]
        self.assertEqual(sipp.percentile(values, 0.50), 50.0)
        self.assertEqual(sipp.percentile(values, 0.99), 99.0)
        self.assertIsNone(sipp.percentile([], 0.5))


if __name__ == "__main__":
    unittest.main()
