"""Reading environment files: the bounded loader against plain `yaml.safe_load`, in one run.

The bounded loader walks the parser's events first (no anchors, aliases or tags; depth and size
bounds) and then builds the document, so a typical file costs a second walk; an alias bomb is
refused in linear time where the old path (`safe_load`, then converting the data to plain JSON
values, which copies every alias) grows exponentially (measured on a small one; the issue's
larger one does not finish).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import yaml

from controller.environments import _plain, load_all


def typical(index: int) -> str:
    return (
        f"# preview of pull request {index}\nkind: preview\npull_request: {index}\nstate: open\n"
        f'commit: "{index:040x}"\nttl: 72h\nparameters:\n  kubernetes_version: "1.35"\n'
        "  namespaces: [payment, fraud-detection, reporting]\n  tags: {Team: payments, CostCenter: '4711'}\n"
    )


def bomb(levels: int) -> str:
    lines = ["a: &a [x, x, x, x, x, x, x, x, x]"]
    for i in range(levels):
        name, previous = chr(98 + i), chr(97 + i)
        lines.append(f"{name}: &{name} [{', '.join([f'*{previous}'] * 9)}]")
    return "\n".join(lines) + "\n"


def timed(function, repeat: int) -> float:
    runs = []
    for _ in range(repeat):
        started = time.perf_counter()
        function()
        runs.append(time.perf_counter() - started)
    return statistics.median(runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    files = {f"environments/pr{i}.yaml": typical(i) for i in range(1, args.files + 1)}
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

    def old_path(text: str) -> object:
        """What reading a file did before: load (a safe loader), then convert to plain values."""
        return _plain(yaml.load(text, Loader=loader))  # noqa: S506 - a SafeLoader

    small = bomb(6)
    result = {
        "files": args.files,
        "bounded_load_all_seconds": round(timed(lambda: load_all(files, "us-east-1"), args.repeat), 4),
        "old_path_seconds": round(
            timed(lambda: [old_path(text) for text in files.values()], args.repeat),
            4,
        ),
        "small_bomb_bytes": len(small.encode()),
        "small_bomb_bounded_seconds": round(
            timed(lambda: load_all({"environments/x.yaml": "kind: preview\n" + small}, "us-east-1"), 3), 5
        ),
        "small_bomb_old_path_seconds": round(timed(lambda: old_path(small), 1), 4),
        "issue_bomb_bytes": len(bomb(8).encode()),
        "issue_bomb_bounded_seconds": round(
            timed(lambda: load_all({"environments/x.yaml": "kind: preview\n" + bomb(8)}, "us-east-1"), 3), 5
        ),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
