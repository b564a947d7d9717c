"""Where the test suite's time goes: per folder and per test, from pytest's JUnit XML (`--junitxml`), one run or
two side by side (before / after). Each test's time is its setup, call and teardown (pytest's default
`junit_duration_report = total`); a session fixture's start-up falls on the first test that asks for it.

    pytest -n 4 --dist loadgroup --junitxml=/tmp/after.xml
    python benchmarks/suite_times.py /tmp/before.xml /tmp/after.xml --slowest 40

Prints Markdown tables (docs/development.md holds the last ones measured). The folder table adds up the tests'
own times: with workers side by side, the suite's wall time is far below that sum; pass --wall-s to print it."""

from __future__ import annotations

import argparse
import json
import xml.etree.ElementTree as ET
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class TestTime:
    test_id: str  # tests/folder/test_x.py::test_name[param], as `pytest --collect-only -q` prints it
    seconds: float
    outcome: str  # passed, failed, error, skipped

    @property
    def folder(self) -> str:
        return "/".join(self.test_id.split("/")[:2]) if self.test_id.count("/") >= 2 else self.test_id.split("::")[0]


def read_junit(path: Path) -> dict[str, TestTime]:
    times = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        module = case.get("classname", "")
        name = case.get("name", "")
        parts = module.split(".")
        # classname is dotted: tests.e2e.test_up or tests.integration.test_x.TestClass; find the module part.
        index = max(i for i, part in enumerate(parts) if part.startswith("test_") or i == 0)
        file = "/".join(parts[: index + 1]) + ".py"
        test_id = "::".join([file, *parts[index + 1:], name.split("@")[0]])
        outcome = ("failed" if case.find("failure") is not None else "error" if case.find("error") is not None
                   else "skipped" if case.find("skipped") is not None else "passed")
        times[test_id] = TestTime(test_id, float(case.get("time", 0)), outcome)
    return times


def folder_table(runs: list[dict[str, TestTime]], labels: list[str]) -> list[str]:
    totals: list[dict[str, float]] = []
    for run in runs:
        folder_total: dict[str, float] = defaultdict(float)
        for test in run.values():
            folder_total[test.folder] += test.seconds
        totals.append(folder_total)
    folders = sorted({f for total in totals for f in total}, key=lambda f: -totals[0].get(f, 0))
    lines = ["| folder | tests | " + " | ".join(f"{label} (s, summed)" for label in labels) + " |",
             "|---|---:|" + "---:|" * len(labels)]
    for folder in folders:
        count = sum(1 for t in runs[0].values() if t.folder == folder)
        lines.append(f"| {folder} | {count} | " + " | ".join(f"{total.get(folder, 0):.0f}" for total in totals) + " |")
    lines.append(f"| **all** | {len(runs[0])} | " + " | ".join(f"{sum(total.values()):.0f}" for total in totals)
                 + " |")
    return lines


def slowest_table(runs: list[dict[str, TestTime]], labels: list[str], count: int) -> list[str]:
    lines = []
    for run, label in zip(runs, labels):
        lines += [f"Slowest {count}, {label}:", "", "| s | test |", "|---:|---|"]
        for test in sorted(run.values(), key=lambda t: -t.seconds)[:count]:
            outcome = "" if test.outcome == "passed" else f" {test.outcome}"
            lines.append(f"| {test.seconds:.1f} | `{test.test_id}`{outcome} |")
        lines.append("")
    return lines


def timeline_table(path: Path) -> list[str]:
    """Per xdist worker: its tests, busy time and last finish, from CHANGEFLOW_TEST_TIMELINE's JSON lines."""
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    if not rows:
        return []
    origin = min(r["start"] for r in rows)
    lines = ["| worker | tests | busy (s) | last test ends at (s) | its longest test |", "|---|---:|---:|---:|---|"]
    for worker in sorted({r["worker"] for r in rows}):
        mine = [r for r in rows if r["worker"] == worker]
        longest = max(mine, key=lambda r: r["end"] - r["start"])
        lines.append(f"| {worker} | {len(mine)} | {sum(r['end'] - r['start'] for r in mine):.0f} | "
                     f"{max(r['end'] for r in mine) - origin:.0f} | `{longest['test']}` "
                     f"({longest['end'] - longest['start']:.0f} s) |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("junit", nargs="+", type=Path, help="one or two JUnit XML files (before, after)")
    parser.add_argument("--slowest", type=int, default=40)
    parser.add_argument("--wall-s", type=float, nargs="*", default=[], help="the runs' wall times, in order")
    parser.add_argument("--timeline", type=Path, help="CHANGEFLOW_TEST_TIMELINE's file of the last run")
    args = parser.parse_args()
    runs = [read_junit(path) for path in args.junit]
    labels = ["before", "after"][: len(runs)] if len(runs) <= 2 else [p.stem for p in args.junit]
    print("\n".join(folder_table(runs, labels)))
    for label, wall in zip(labels, args.wall_s):
        print(f"\n{label}: wall time {wall:.0f} s ({wall / 60:.1f} min)")
    print()
    print("\n".join(slowest_table(runs, labels, args.slowest)))
    if args.timeline:
        print("\n".join(timeline_table(args.timeline)) + "\n")
    if len(runs) == 2:
        missing = sorted(set(runs[0]) - set(runs[1]))
        added = sorted(set(runs[1]) - set(runs[0]))
        print(f"tests only before: {len(missing)}; only after: {len(added)}")
        for test_id in missing[:20]:
            print(f"  - {test_id}")
        for test_id in added[:20]:
            print(f"  + {test_id}")


if __name__ == "__main__":
    main()
