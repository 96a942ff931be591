"""Draws learning curves from benchmark CSVs: one panel per env, mean ± std over seeds of the
return averaged over the last `--window` training episodes, against environment steps.

    python benchmarks/plot.py benchmarks/results/cartpole.csv benchmarks/results/lunarlander.csv \
        --out benchmarks/results/learning_curves.png
"""

import argparse
import csv
from collections import defaultdict

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def load_runs(paths: list[str]) -> dict:
    """{env: {seed: (steps, returns)}} with episodes in step order."""
    runs = defaultdict(lambda: defaultdict(lambda: ([], [])))
    for path in paths:
        with open(path) as f:
            for row in csv.DictReader(f):
                steps, returns = runs[row["env"]][int(row["seed"])]
                steps.append(int(row["step"]))
                returns.append(float(row["episodic_return"]))
    return runs


def smoothed_on_grid(steps, returns, grid, window: int) -> np.ndarray:
    """Mean of the last `window` episodes ended by each step, read at the grid's steps."""
    order = np.argsort(steps, kind="stable")
    steps, returns = np.asarray(steps)[order], np.asarray(returns)[order]
    cumulative = np.concatenate([[0.0], np.cumsum(returns)])
    ends = np.arange(1, len(returns) + 1)
    starts = np.maximum(ends - window, 0)
    running_mean = (cumulative[ends] - cumulative[starts]) / (ends - starts)
    index = np.searchsorted(steps, grid, side="right") - 1  # last episode ended at or before each grid step
    return np.where(index >= 0, running_mean[np.maximum(index, 0)], np.nan)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("csvs", nargs="+")
    parser.add_argument("--out", default="benchmarks/results/learning_curves.png")
    parser.add_argument("--window", type=int, default=20, help="episodes averaged into each point of a seed's curve")
    parser.add_argument("--title", default="")
    args = parser.parse_args()

    runs = load_runs(args.csvs)
    fig, axes = plt.subplots(1, len(runs), figsize=(5 * len(runs), 3.8), squeeze=False)
    for ax, (env, seeds) in zip(axes[0], runs.items()):
        first = max(min(steps) for steps, _ in seeds.values())  # from where every seed has an episode
        grid = np.linspace(first, max(max(steps) for steps, _ in seeds.values()), 200)
        curves = np.stack([smoothed_on_grid(steps, returns, grid, args.window) for steps, returns in seeds.values()])
        mean, std = np.nanmean(curves, axis=0), np.nanstd(curves, axis=0)
        ax.plot(grid, mean, label=f"mean of {len(seeds)} seeds")
        ax.fill_between(grid, mean - std, mean + std, alpha=0.25, label="± std")
        ax.set_title(env)
        ax.set_xlabel("environment steps")
        ax.set_ylabel(f"episodic return (last {args.window} episodes)")
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right")
    if args.title:
        fig.suptitle(args.title)
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
