"""Preset benchmark: each --preset of a script against the script's default flags, on the same env, budget
and seeds, one run at a time, each followed by a greedy evaluation of the final model (--eval-episodes 10).
Appends to benchmarks/results/presets/{script}_{preset}.csv (learning.py's columns and `flags`: preset or
default).

    python benchmarks/presets.py --script ppo_continuous.py --presets pendulum swimmer --seeds 1 2 3
    python benchmarks/presets.py --summarize benchmarks/results/presets/*.csv
"""

import argparse
import csv
import os
import sys
from collections import defaultdict

import numpy as np

from learning import FIELDS, ROOT, run_one

OUT_DIR = os.path.join(ROOT, "benchmarks", "results", "presets")


def preset_flags(script: str, preset: str) -> dict:
    """The flags a script's preset sets, read from the script itself."""
    sys.path.insert(0, ROOT)
    module = __import__(script[: -len(".py")])
    return module.PRESETS[preset][1]


def run_preset(script: str, preset: str, seeds: list[int], which: list[str]) -> str:
    """Per seed, the preset then the default flags at the preset's env and budget (those of `which`); returns
    the CSV's path."""
    flags = preset_flags(script, preset)
    budget = ["--total-timesteps", str(flags["total_timesteps"])] if "total_timesteps" in flags else []
    path = os.path.join(OUT_DIR, f"{script[: -len('.py')]}_{preset}.csv")
    os.makedirs(OUT_DIR, exist_ok=True)
    new = not os.path.exists(path)
    with open(path, "a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=[*FIELDS, "flags"])
        if new:
            writer.writeheader()
        for seed in seeds:
            for name, extra in [("preset", ["--preset", preset]), ("default", budget)]:
                if name not in which:
                    continue
                rows = run_one(
                    script,
                    flags["env_id"],
                    seed,
                    [*extra, "--eval-episodes", "10", "--checkpoint-every", "0"],
                )
                writer.writerows({**row, "flags": name} for row in rows)
                f.flush()
    return path


def summarize(paths: list[str], last: int = 100):
    """A markdown table: per preset CSV, per flags, the mean of the last `last` training episodes and the mean
    greedy evaluation return of each seed."""
    print(f"| env | flags | seeds | last {last} training episodes, per seed (mean) "
          "| greedy eval, 10 episodes, per seed (mean) |")
    print("|---|---|---|---|---|")
    for path in paths:
        runs = defaultdict(lambda: defaultdict(list))
        with open(path) as f:
            for row in csv.DictReader(f):
                runs[(row["env"], row["flags"], row["phase"])][int(row["seed"])].append(
                    float(row["episodic_return"])
                )
        for env, flags in sorted(
            {(env, flags) for env, flags, _ in runs}, key=lambda k: (k[0], k[1] != "preset")
        ):
            train = {seed: np.mean(r[-last:]) for seed, r in runs[(env, flags, "train")].items()}
            evals = {seed: np.mean(r) for seed, r in runs[(env, flags, "eval")].items()}
            print(
                f"| {env} | {flags} | {', '.join(map(str, train))} | "
                f"{' / '.join(f'{x:.1f}' for x in train.values())} ({np.mean(list(train.values())):.1f}) | "
                f"{' / '.join(f'{x:.1f}' for x in evals.values())} "
                f"({np.mean(list(evals.values()) or [np.nan]):.1f}) |"
            )


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--script", default="ppo_continuous.py")
    parser.add_argument("--presets", nargs="+", default=[])
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    parser.add_argument(
        "--flags",
        nargs="+",
        choices=["preset", "default"],
        default=["preset", "default"],
        help="which of the two to run",
    )
    parser.add_argument("--summarize", nargs="+", metavar="CSV", help="only print the table of existing CSVs")
    args = parser.parse_args()
    paths = args.summarize or [
        run_preset(args.script, preset, args.seeds, args.flags) for preset in args.presets
    ]
    summarize(paths)


if __name__ == "__main__":
    main()
