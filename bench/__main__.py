"""`make bench`: every benchmark of BENCHMARKS.md, one after another, with the documented sizes.

Each prints its JSON result; run one alone with `python -m bench.<name> --help` for its options.
"""

from __future__ import annotations

import subprocess
import sys

BENCHMARKS = (
    ("bench.synth_bench", "--environments", "20", "--fresh", "5"),
    ("bench.pass_bench", "--environments", "200"),
    ("bench.drift_bench", "--environments", "50", "--concurrency", "4"),
    ("bench.queue_bench", "--sleep", "60"),
    ("bench.files_bench", "--files", "1000"),
)


def main() -> int:
    failed = 0
    for module, *args in BENCHMARKS:
        print(f"== {module} {' '.join(args)}", file=sys.stderr, flush=True)
        failed += subprocess.run([sys.executable, "-m", module, *args], check=False).returncode != 0
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
