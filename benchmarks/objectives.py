"""The PPO paper's Table 1 on a CPU budget: the surrogate objectives compared on MuJoCo envs, 3 seeds each.

    python benchmarks/objectives.py --out benchmarks/results/objectives.csv            # runs (two at a time)
    python benchmarks/objectives.py --summarize benchmarks/results/objectives.csv      # table + plot

Settings as in the paper (section 6.1): no clipping or penalty; clipping eps 0.1 / 0.2 / 0.3; adaptive KL
d_targ 0.003 / 0.01 / 0.03; fixed KL beta 0.3 / 1 / 3 / 10. Everything else is ppo_continuous.py's defaults
(the paper's Table 3 hyper-parameters), with --no-clip-vloss so that only the policy objective changes.
Score of a run: the mean return of the episodes that end in the last 10% of its steps (the paper: the last
100 episodes of 1M steps). Normalized as the paper does: per env, the random policy scores 0 and the best
setting (mean over seeds) scores 1; the table averages the normalized scores over envs and seeds.
"""

import argparse
import csv
import os
import sys
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor

import gymnasium as gym
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from learning import run_one  # noqa: E402

SETTINGS = {
    "no clipping or penalty": ["--objective", "none"],
    "clipping, eps = 0.1": ["--objective", "clip", "--clip-coef", "0.1"],
    "clipping, eps = 0.2": ["--objective", "clip", "--clip-coef", "0.2"],
    "clipping, eps = 0.3": ["--objective", "clip", "--clip-coef", "0.3"],
    "adaptive KL, d_targ = 0.003": ["--objective", "kl-adaptive", "--kl-target", "0.003"],
    "adaptive KL, d_targ = 0.01": ["--objective", "kl-adaptive", "--kl-target", "0.01"],
    "adaptive KL, d_targ = 0.03": ["--objective", "kl-adaptive", "--kl-target", "0.03"],
    "fixed KL, beta = 0.3": ["--objective", "kl-fixed", "--kl-beta", "0.3"],
    "fixed KL, beta = 1": ["--objective", "kl-fixed", "--kl-beta", "1"],
    "fixed KL, beta = 3": ["--objective", "kl-fixed", "--kl-beta", "3"],
    "fixed KL, beta = 10": ["--objective", "kl-fixed", "--kl-beta", "10"],
}
PAPER = {  # Table 1 of Schulman et al. 2017: average normalized score over 7 MuJoCo envs x 3 seeds, 1M steps
    "no clipping or penalty": -0.39, "clipping, eps = 0.1": 0.76, "clipping, eps = 0.2": 0.82,
    "clipping, eps = 0.3": 0.70, "adaptive KL, d_targ = 0.003": 0.68, "adaptive KL, d_targ = 0.01": 0.74,
    "adaptive KL, d_targ = 0.03": 0.71, "fixed KL, beta = 0.3": 0.62, "fixed KL, beta = 1": 0.71,
    "fixed KL, beta = 3": 0.72, "fixed KL, beta = 10": 0.69,
}
FIELDS = ["setting", "env", "seed", "step", "episodic_return"]


def random_policy_score(env_id: str, episodes: int = 20) -> float:
    """Mean return of uniformly random actions."""
    env = gym.make(env_id)
    env.action_space.seed(0)
    returns = []
    for episode in range(episodes):
        env.reset(seed=episode)
        total, done = 0.0, False
        while not done:
            _, reward, terminated, truncated, _ = env.step(env.action_space.sample())
            total += float(reward)
            done = terminated or truncated
        returns.append(total)
    env.close()
    return float(np.mean(returns))


def run_score(rows: list[dict], total_steps: int) -> float:
    """Mean return of the episodes that end in the last 10% of the run's steps."""
    late = [float(r["episodic_return"]) for r in rows if int(r["step"]) > 0.9 * total_steps]
    return float(np.mean(late or [float(rows[-1]["episodic_return"])]))


def run_all(envs: list[str], seeds: list[int], steps: int, out: str, parallel: int):
    jobs = [(setting, env, seed) for env in envs for seed in seeds for setting in SETTINGS]

    def job(setting, env, seed):
        flags = ["--total-timesteps", str(steps), "--no-clip-vloss", *SETTINGS[setting]]
        return [dict(setting=setting, **row) for row in run_one("ppo_continuous.py", env, seed, flags)]

    with open(out, "w", newline="") as f, ThreadPoolExecutor(parallel) as pool:
        writer = csv.DictWriter(f, fieldnames=FIELDS, extrasaction="ignore")
        writer.writeheader()
        for rows in pool.map(lambda args: job(*args), jobs):
            writer.writerows(rows)
            f.flush()


def summarize(csv_path: str, plot_path: str):
    runs = defaultdict(list)  # (setting, env, seed) -> rows
    with open(csv_path) as f:
        for row in csv.DictReader(f):
            runs[(row["setting"], row["env"], int(row["seed"]))].append(row)
    total_steps = max(int(r["step"]) for rows in runs.values() for r in rows)
    scores = {key: run_score(rows, total_steps) for key, rows in runs.items()}
    envs = sorted({env for _, env, _ in scores})
    settings = [s for s in SETTINGS if any(key[0] == s for key in scores)]
    random_scores = {env: random_policy_score(env) for env in envs}
    normalized = defaultdict(list)  # setting -> normalized score of every (env, seed)
    for env in envs:
        setting_means = {
            s: np.mean([v for (s2, e, _), v in scores.items() if s2 == s and e == env]) for s in settings
        }
        best = max(setting_means.values())
        if best <= random_scores[env]:
            print(f"warning: on {env} no setting beat the random policy; its normalized scores mean nothing")
        for (setting, e, _), value in scores.items():
            if e == env:
                normalized[setting].append((value - random_scores[env]) / (best - random_scores[env]))
    print(
        f"{len(envs)} envs ({', '.join(envs)}), {total_steps:,} steps, seeds per setting: "
        f"{len(normalized[settings[0]]) // len(envs)}; random-policy scores: "
        + ", ".join(f"{env} {score:.1f}" for env, score in random_scores.items())
    )
    print("\n| setting | normalized score (ours) | rank (ours) | PPO paper, Table 1 | rank (paper) |")
    print("|---|---|---|---|---|")
    ours = {s: float(np.mean(normalized[s])) for s in settings}
    our_rank = {s: i + 1 for i, s in enumerate(sorted(settings, key=lambda s: -ours[s]))}
    paper_rank = {s: i + 1 for i, s in enumerate(sorted(settings, key=lambda s: -PAPER[s]))}
    for s in settings:
        print(f"| {s} | {ours[s]:.2f} | {our_rank[s]} | {PAPER[s]:.2f} | {paper_rank[s]} |")
    print("\nper env, mean of seeds (raw returns):")
    print("| setting | " + " | ".join(envs) + " |")
    print("|---|" + "---|" * len(envs))
    for s in settings:
        cells = [
            f"{np.mean([v for (s2, e, _), v in scores.items() if s2 == s and e == env]):.1f}" for env in envs
        ]
        print(f"| {s} | " + " | ".join(cells) + " |")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4.5))
    x = np.arange(len(settings))
    ax.bar(
        x - 0.2,
        [ours[s] for s in settings],
        0.4,
        label=f"ours ({len(envs)} envs, {total_steps // 1000}k steps)",
    )
    ax.bar(x + 0.2, [PAPER[s] for s in settings], 0.4, label="PPO paper, Table 1 (7 envs, 1M steps)")
    labels = [
        s.replace("no clipping or penalty", "no clipping,\nno penalty")
        .replace(", ", "\n")
        .replace(" = ", "=")
        for s in settings
    ]
    ax.set_xticks(x, labels, fontsize=7)
    ax.set_ylabel("normalized score (random 0, best 1)")
    ax.axhline(0, color="black", linewidth=0.5)
    ax.legend()
    fig.tight_layout()
    fig.savefig(plot_path, dpi=120)
    print(f"\nplot: {plot_path}")


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--envs",
        nargs="+",
        default=["Hopper-v5", "HalfCheetah-v5", "InvertedDoublePendulum-v5", "Reacher-v5"],
    )
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    parser.add_argument("--steps", type=int, default=150_000, help="training steps of each run")
    parser.add_argument("--parallel", type=int, default=2, help="runs at a time (one per CPU core)")
    parser.add_argument("--out", default="benchmarks/results/objectives.csv")
    parser.add_argument("--summarize", metavar="CSV", help="print the table of a finished CSV and plot it")
    parser.add_argument("--plot", default="benchmarks/results/objectives.png")
    args = parser.parse_args()
    if args.summarize:
        summarize(args.summarize, args.plot)
    else:
        run_all(args.envs, args.seeds, args.steps, args.out, args.parallel)


if __name__ == "__main__":
    main()
