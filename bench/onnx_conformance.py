"""Run the ONNX backend node tests of the supported operators on the simulator; print passed/skipped per op type.

    .venv/bin/python bench/onnx_conformance.py [OpType ...] [-v]

`-v` lists every skipped test with its reason and every failure.
"""

from __future__ import annotations

import io
import sys
import time
import unittest
from collections import defaultdict

from tasic.frontend.onnx_backend import conformance_test_case, op_type_of

STATUSES = ("passed", "skipped", "failed")


def run(op_types: list[str] | None = None) -> tuple[dict[str, dict[str, list[str]]], dict[str, str]]:
    """Test names by op type and status, and the reason of every skip or failure."""
    case = conformance_test_case(op_types)
    names = unittest.defaultTestLoader.getTestCaseNames(case)
    suite = unittest.TestSuite(case(name) for name in names)
    result = unittest.TextTestRunner(stream=io.StringIO()).run(suite)
    outcome = dict.fromkeys(names, "passed")
    reasons: dict[str, str] = {}
    for test, reason in result.skipped:
        outcome[test.id().rsplit(".", 1)[-1]] = "skipped"
        reasons[test.id().rsplit(".", 1)[-1]] = reason
    for test, trace in [*result.failures, *result.errors]:
        outcome[test.id().rsplit(".", 1)[-1]] = "failed"
        reasons[test.id().rsplit(".", 1)[-1]] = trace.strip().splitlines()[-1]
    by_op: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for name, status in sorted(outcome.items()):
        by_op[op_type_of(name)][status].append(name)
    return by_op, reasons


def main() -> None:
    """Print a per-op table and the totals."""
    start = time.perf_counter()
    verbose = "-v" in sys.argv
    by_op, reasons = run([arg for arg in sys.argv[1:] if not arg.startswith("-")] or None)
    totals = dict.fromkeys(STATUSES, 0)
    print(f"{'op type':<20} {'passed':>6} {'skipped':>7} {'failed':>6}")
    for op in sorted(by_op):
        counts = {status: len(by_op[op].get(status, [])) for status in STATUSES}
        for status, count in counts.items():
            totals[status] += count
        print(f"{op:<20} {counts['passed']:>6} {counts['skipped']:>7} {counts['failed']:>6}")
    print(f"{'total':<20} {totals['passed']:>6} {totals['skipped']:>7} {totals['failed']:>6}")
    print(f"({time.perf_counter() - start:.1f}s)")
    if verbose:
        for name, reason in sorted(reasons.items()):
            print(f"{name}: {reason}")


if __name__ == "__main__":
    main()
