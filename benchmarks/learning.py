"""Learning-curve benchmark: trains a script over several envs and seeds, one run at a time, and writes
every training episode to a CSV (env, seed, step, episodic_return, wall_clock_s).

    python benchmarks/learning.py --envs CartPole-v1 --seeds 1 2 3 --out benchmarks/results/cartpole.csv
    python benchmarks/learning.py --envs LunarLander-v3 --seeds 1 2 3 \
        --out benchmarks/results/lunarlander.csv -- --total-timesteps 1000000 --num-envs 16 ...
    python benchmarks/learning.py --summarize benchmarks/results/cartpole.csv [--at-steps 250000 500000 ...]
    python benchmarks/learning.py --nproc 2 --out benchmarks/results/cartpole_2proc.csv ...   # under torchrun

Flags after -- go to the script. wall_clock_s counts from the moment the script's process is started, so it
includes start-up.
"""

import argparse
import csv
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict

import numpy as np
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIELDS = ["env", "seed", "step", "episodic_return", "wall_clock_s", "phase"]  # phase: train, or eval (greedy)


def launcher(nproc: int) -> list[str]:
    """The command that starts a script: python, or with nproc > 1 torchrun with nproc processes on this
    machine."""
    if nproc == 1:
        return [sys.executable]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc)]


def read_the_run(workdir: str) -> tuple[str, EventAccumulator]:
    """The one run directory under workdir/runs, and its TensorBoard scalars."""
    (run_dir,) = os.listdir(os.path.join(workdir, "runs"))
    events = EventAccumulator(os.path.join(workdir, "runs", run_dir), size_guidance={"scalars": 0})
    events.Reload()
    return os.path.join(workdir, "runs", run_dir), events


def run_one(
    script: str, env_id: str, seed: int, extra: list[str], keep_runs: str = None, nproc: int = 1
) -> list[dict]:
    """Trains once in a fresh working directory (with nproc > 1: under torchrun, nproc processes) and reads
    its episodes back from TensorBoard; with keep_runs, the run directory (events, saved model) is moved there
    afterwards."""
    with tempfile.TemporaryDirectory() as workdir:
        script_path = os.path.join(ROOT, script)
        command = [*launcher(nproc), script_path, "--env-id", env_id, "--seed", str(seed), *extra]
        print(" ".join(command), flush=True)
        start = time.time()
        subprocess.run(command, cwd=workdir, check=True)
        run_dir, events = read_the_run(workdir)
        if keep_runs:
            os.makedirs(keep_runs, exist_ok=True)
            shutil.move(run_dir, os.path.join(keep_runs, os.path.basename(run_dir)))
        tags = {"train": "charts/episodic_return", "eval": "eval/episodic_return"}
        return [
            dict(
                env=env_id,
                seed=seed,
                step=e.step,
                episodic_return=e.value,
                wall_clock_s=round(e.wall_time - start, 3),
                phase=phase,
            )
            for phase, tag in tags.items()
            if tag in events.Tags()["scalars"]
            for e in events.Scalars(tag)
        ]


def time_to_solve(rows: list[dict], threshold: float, window: int) -> float:
    """Wall-clock seconds from the process start to the first episode at which the mean of the last `window`
    episodes reaches threshold; nan if it never does."""
    returns = [float(r["episodic_return"]) for r in rows]
    for i in range(window - 1, len(returns)):
        if np.mean(returns[i - window + 1 : i + 1]) >= threshold:
            return float(rows[i]["wall_clock_s"])
    return float("nan")


def read_runs(csv_path: str) -> dict:
    """{(env, seed): its rows, in file order}."""
    by_run = defaultdict(list)
    with open(csv_path) as f:
        for row in csv.DictReader(f):
            if row.get("phase", "train") != "train":
                continue
            by_run[(row["env"], int(row["seed"]))].append(row)
    return by_run


def summarize(csv_path: str, last: int = 100, solve_at: float = None, solve_window: int = 20):
    """Prints a markdown table: per env, the mean of the last `last` episodes of each seed; with solve_at,
    also the wall-clock time at which each seed's mean of `solve_window` episodes first reached it."""
    by_env = defaultdict(dict)
    for (env, seed), rows in sorted(read_runs(csv_path).items()):
        by_env[env][seed] = rows
    print(
        f"| env | seeds | mean of last {last} episodes, per seed | mean ± std | steps | wall (s), per seed |"
    )
    print("|---|---|---|---|---|---|")
    for env, runs in by_env.items():
        finals = [np.mean([float(r["episodic_return"]) for r in rows[-last:]]) for rows in runs.values()]
        steps = max(int(rows[-1]["step"]) for rows in runs.values())
        walls = [float(rows[-1]["wall_clock_s"]) for rows in runs.values()]
        print(
            f"| {env} | {', '.join(map(str, runs))} | {', '.join(f'{x:.1f}' for x in finals)} | "
            f"{np.mean(finals):.1f} ± {np.std(finals):.1f} | {steps:,} | "
            f"{', '.join(f'{w:.0f}' for w in walls)} |"
        )
        if solve_at is not None:
            solved = [time_to_solve(rows, solve_at, solve_window) for rows in runs.values()]
            print(
                f"  {env}: mean of {solve_window} episodes >= {solve_at} at "
                + ", ".join(f"{t:.1f} s" for t in solved)
                + " (wall clock from the process start), per seed"
            )


def at_steps(csv_path: str, steps: list[int], last: int = 100):
    """Prints, per env and seed, the mean of the last `last` episodes ended by each of the given steps."""
    print("| env | seed | " + " | ".join(f"{step:,}" for step in steps) + " |")
    print("|---|---|" + "---|" * len(steps))
    for (env, seed), rows in sorted(read_runs(csv_path).items()):
        episodes = sorted((int(row["step"]), float(row["episodic_return"])) for row in rows)
        means = [np.mean([r for s, r in episodes if s <= step][-last:]) for step in steps]
        print(f"| {env} | {seed} | " + " | ".join(f"{m:.1f}" for m in means) + " |")


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--script", default="ppo_discrete.py", help="the training script, relative to the repository root"
    )
    parser.add_argument("--envs", nargs="+", default=["CartPole-v1"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    parser.add_argument("--out", default="benchmarks/results/learning.csv", help="the CSV to write")
    parser.add_argument("--summarize", metavar="CSV", help="only print the summary table of an existing CSV")
    parser.add_argument(
        "--keep-runs", metavar="DIR", help="move each run directory (TensorBoard events, saved model) here"
    )
    parser.add_argument(
        "--solve-at",
        type=float,
        help="also report when the mean of --solve-window episodes first reaches this",
    )
    parser.add_argument("--solve-window", type=int, default=20)
    parser.add_argument(
        "--nproc", type=int, default=1, help="with N > 1, runs the script under torchrun in N processes"
    )
    parser.add_argument(
        "--at-steps",
        nargs="+",
        type=int,
        help="with --summarize: the mean of the last 100 episodes ended by each of these steps, per seed",
    )
    parser.add_argument("extra", nargs=argparse.REMAINDER, help="after --: flags passed to the script")
    args = parser.parse_args()
    if args.summarize:
        summarize(args.summarize, solve_at=args.solve_at, solve_window=args.solve_window)
        if args.at_steps:
            at_steps(args.summarize, args.at_steps)
        return
    extra = args.extra[1:] if args.extra[:1] == ["--"] else args.extra
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS)
        writer.writeheader()
        for env_id in args.envs:
            for seed in args.seeds:
                writer.writerows(run_one(args.script, env_id, seed, extra, args.keep_runs, args.nproc))
                f.flush()
    summarize(args.out, solve_at=args.solve_at, solve_window=args.solve_window)


if __name__ == "__main__":
    main()
