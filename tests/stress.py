"""Run the tests that start processes or threads many times in a row, with every core kept busy.

A test that fails one run in thirty passes a plain ``make test`` most days; a row of runs under load
finds it. ``make test-stress [RUNS=50]`` runs this; it prints one line per failed run (its log kept
under --logs), then ``passed K of N``, writes the same as JSON to --out, and exits non-zero on any failure.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Every test that starts processes (gloo ranks, a DDP trainer) or threads (the thread all-reduce).
CONCURRENT_TESTS = [
    "tests/test_distributed.py",
    "tests/test_optim.py::test_two_workers_equal_one_worker_on_the_concatenated_batch",
    "tests/test_optim.py::test_a_non_finite_loss_on_one_worker_skips_the_step_on_all",
]
BUSY_LOOP = "while True: pass"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("tests", nargs="*", default=CONCURRENT_TESTS, help="pytest node ids (default: %(default)s)")
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--load", type=int, default=os.cpu_count() or 1, help="busy processes beside the tests")
    parser.add_argument("--logs", type=Path, default=ROOT / "outputs" / "stress")
    parser.add_argument("--out", type=Path, default=None, help="JSON summary (default: LOGS/summary.json)")
    args = parser.parse_args()
    if args.runs < 1 or args.load < 0:
        parser.error(f"--runs must be >= 1 and --load >= 0, got {args.runs} and {args.load}")
    args.logs.mkdir(parents=True, exist_ok=True)

    load = [subprocess.Popen([sys.executable, "-c", BUSY_LOOP]) for _ in range(args.load)]
    failed, started = [], time.monotonic()
    try:
        for run in range(1, args.runs + 1):
            proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args.tests],
                                  cwd=ROOT, capture_output=True, text=True)
            if proc.returncode != 0:
                log = args.logs / f"run_{run:03d}.log"
                log.write_text(proc.stdout + proc.stderr)
                failed.append(run)
                print(f"run {run}: FAILED (exit {proc.returncode}), log in {log}", flush=True)
    finally:
        for process in load:
            process.kill()
            process.wait()
    summary = {"tests": args.tests, "runs": args.runs, "passed": args.runs - len(failed), "failed_runs": failed,
               "load_processes": args.load, "cpus": os.cpu_count(), "seconds": round(time.monotonic() - started)}
    (args.out or args.logs / "summary.json").write_text(json.dumps(summary, indent=2))
    print(f"passed {summary['passed']} of {args.runs} ({summary['seconds']} s, {args.load} busy processes beside)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
