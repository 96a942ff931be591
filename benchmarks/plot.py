"""Draws learning curves from benchmark CSVs: one panel per env, mean ± std over seeds of the return averaged
over the last `--window` training episodes, against environment steps. With --aggregate, reports instead each
run's final score (the mean of its last 100 training episodes) per env and flags, and the interquartile mean
(IQM) with its 95% stratified bootstrap confidence interval (rliable), per env and, on scores normalized
between a random policy and rl-zoo3's PPO (NORMALIZE), across envs; and draws the performance profiles of the
normalized scores.

    python benchmarks/plot.py benchmarks/results/cartpole.csv benchmarks/results/lunarlander.csv \
        --out benchmarks/results/learning_curves.png
    python benchmarks/plot.py --aggregate benchmarks/results/presets/*.csv \
        --out benchmarks/results/profiles.png
"""

import argparse
import csv
import os
from collections import defaultdict
from typing import Optional

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def load_runs(paths: list[str], label: Optional[str] = "") -> dict:
    """{env: {flags: {seed: (steps, returns)}}} of the training episodes, in file order; flags: the CSV's
    `flags` column (benchmarks/presets.py), else `label`, else (label None) the CSV's file name."""
    runs = defaultdict(lambda: defaultdict(lambda: defaultdict(lambda: ([], []))))
    for path in paths:
        name = os.path.basename(path)[: -len(".csv")] if label is None else label
        with open(path) as f:
            for row in csv.DictReader(f):
                if row.get("phase", "train") == "train":
                    steps, returns = runs[row["env"]][row.get("flags") or name][int(row["seed"])]
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


# env: (mean return of a uniformly random policy, benchmarks/random_returns.py; rl-zoo3's published PPO
# figure, CartPole's maximum, the human score for Breakout (the DQN paper's, with its random 1.7)): a
# normalized score's 0 and 1
NORMALIZE = {
    "CartPole-v1": (22.9, 500.0),
    "Acrobot-v1": (-486.5, -75.0),
    "MountainCar-v0": (-200.0, -110.0),
    "LunarLander-v3": (-226.9, 242.0),
    "Pendulum-v1": (-1245.9, -172.0),
    "LunarLanderContinuous-v3": (-244.8, 271.0),
    "HalfCheetah-v5": (-260.8, 5819.0),
    "Hopper-v5": (24.8, 2410.0),
    "Walker2d-v5": (2.2, 3479.0),
    "Swimmer-v5": (-3.1, 282.0),
    "ALE/Breakout-v5": (1.7, 30.5),
}


def final_scores(paths: list[str], last: int = 100, label: str = None) -> dict:
    """{flags: {env: [each seed's mean of its last `last` training episodes]}}, flags as load_runs names them
    (label None: the CSV's file name)."""
    finals = []
    for env, by_flags in load_runs(paths, label).items():
        for flags, seeds in by_flags.items():
            for seed, (steps, returns) in seeds.items():
                in_step_order = [value for _, value in sorted(zip(steps, returns))]
                finals.append((flags, env, seed, np.mean(in_step_order[-last:])))
    scores = defaultdict(lambda: defaultdict(list))
    for flags, env, _, score in sorted(finals):
        scores[flags][env].append(score)
    return scores


def iqm_with_interval(scores: dict) -> dict:
    """{key: (runs, tasks) array} -> {key: (IQM, low, high)}, the 95% interval from 50,000 stratified
    bootstraps."""
    from rliable import library as rly
    from rliable import metrics

    point, interval = rly.get_interval_estimates(
        scores, lambda x: np.array([metrics.aggregate_iqm(x)]), reps=50_000
    )
    return {key: (point[key][0], interval[key][0, 0], interval[key][1, 0]) for key in scores}


def normalized(env: str, values) -> np.ndarray:
    low, high = NORMALIZE[env]
    return (np.asarray(values) - low) / (high - low)


def aggregate(paths: list[str], out: str, label: str = None):
    """Prints the per-env and across-env tables and writes the performance profiles to out."""
    np.random.seed(0)  # rliable's bootstraps draw from numpy's global generator: same CSVs, same intervals
    scores = final_scores(paths, label=label)
    print("| env | flags | seeds | final score, per seed | IQM [95% CI] |")
    print("|---|---|---|---|---|")
    for label, by_env in scores.items():
        estimates = iqm_with_interval({env: np.array(values)[:, None] for env, values in by_env.items()})
        for env, values in by_env.items():
            iqm, low, high = estimates[env]
            print(f"| {env} | {label} | {len(values)} | {' / '.join(f'{v:.1f}' for v in values)} | "
                  f"{iqm:.1f} [{low:.1f}, {high:.1f}] |")
    matrices = {}
    for label, by_env in scores.items():
        envs = sorted(env for env in by_env if env in NORMALIZE)
        runs = min(len(by_env[env]) for env in envs)
        # (runs, envs)
        matrices[label] = np.stack([normalized(env, by_env[env][:runs]) for env in envs], axis=1)
        print(f"{label}: normalized over {', '.join(envs)}, {runs} seeds each")
    for label, (iqm, low, high) in iqm_with_interval(matrices).items():
        print(f"across envs, {label}: normalized IQM {iqm:.2f} [{low:.2f}, {high:.2f}]")
    from rliable import library as rly
    from rliable import plot_utils

    thresholds = np.linspace(-0.25, 1.5, 71)
    profiles, intervals = rly.create_performance_profile(matrices, thresholds)
    fig, ax = plt.subplots(figsize=(6, 4))
    plot_utils.plot_performance_profiles(profiles, thresholds, performance_profile_cis=intervals, ax=ax,
                                         xlabel=r"normalized score $\tau$ (0: random, 1: rl-zoo3's PPO)")
    ax.legend(ax.get_lines()[: len(matrices)], list(matrices), loc="upper right")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    print(f"wrote {out}")


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("csvs", nargs="+")
    parser.add_argument("--out", default="benchmarks/results/learning_curves.png")
    parser.add_argument(
        "--window", type=int, default=20, help="episodes averaged into each point of a seed's curve"
    )
    parser.add_argument("--title", default="")
    parser.add_argument(
        "--aggregate", action="store_true", help="IQM and intervals, and performance profiles to --out"
    )
    parser.add_argument(
        "--label",
        help="with --aggregate: the name of the runs of CSVs without a flags column "
        "(default: each CSV's file name)",
    )
    args = parser.parse_args()
    if args.aggregate:
        return aggregate(args.csvs, args.out, args.label)

    runs = load_runs(args.csvs)
    fig, axes = plt.subplots(1, len(runs), figsize=(5 * len(runs), 3.8), squeeze=False)
    for ax, (env, by_flags) in zip(axes[0], runs.items()):
        for flags, seeds in by_flags.items():
            first = max(min(steps) for steps, _ in seeds.values())  # from where every seed has an episode
            grid = np.linspace(first, max(max(steps) for steps, _ in seeds.values()), 200)
            curves = np.stack(
                [smoothed_on_grid(steps, returns, grid, args.window) for steps, returns in seeds.values()]
            )
            mean, std = np.nanmean(curves, axis=0), np.nanstd(curves, axis=0)
            ax.plot(grid, mean, label=f"{flags + ', ' if flags else ''}mean of {len(seeds)} seeds")
            ax.fill_between(grid, mean - std, mean + std, alpha=0.25)
        ax.set_title(env)
        ax.set_xlabel("environment steps")
        ax.set_ylabel(f"episodic return (last {args.window} episodes)")
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right", title="shaded: ± std")
    if args.title:
        fig.suptitle(args.title)
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
