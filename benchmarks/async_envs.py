"""Atari envs in one process (--async-envs off) against worker processes (on): env steps/s of the vector env
alone (random actions) and steps/s of whole training runs, for 8 and 16 envs; the modes alternate, repeat
after repeat, and medians are reported. Writes benchmarks/results/async_envs.csv.

    python benchmarks/async_envs.py --repeats 3
"""

import argparse
import os
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import ppo_atari  # noqa: E402
from gpu_check import steps_per_second  # noqa: E402  (the script's last printed steps/s)
from speed import write_rows  # noqa: E402


def env_steps_per_second(num_envs: int, mode: str, vector_steps: int) -> float:
    envs = ppo_atari.make_envs(ppo_atari.Args(num_envs=num_envs, async_envs=mode))
    envs.reset(seed=0)
    rng = np.random.default_rng(0)
    start = time.perf_counter()
    for _ in range(vector_steps):
        envs.step(rng.integers(0, envs.single_action_space.n, num_envs))
    seconds = time.perf_counter() - start
    envs.close()
    return vector_steps * num_envs / seconds


def run_steps_per_second(num_envs: int, mode: str, iterations: int) -> float:
    steps = str(num_envs * 128 * iterations)
    flags = ["--num-envs", str(num_envs), "--num-steps", "128", "--async-envs", mode,
             "--total-timesteps", steps, "--checkpoint-every", "0", "--no-cuda"]
    out = subprocess.run([sys.executable, os.path.join(ROOT, "ppo_atari.py"), *flags], capture_output=True,
                         text=True, cwd=os.environ.get("TMPDIR", "/tmp"), check=True).stdout
    return steps_per_second(out)


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--vector-steps", type=int, default=500, help="env-only: vector steps a measurement")
    parser.add_argument("--iterations", type=int, default=4, help="whole runs: 128-step iterations")
    args = parser.parse_args()
    rows = []
    for num_envs in [8, 16]:
        for repeat in range(args.repeats):
            for mode in ["off", "on"]:
                env_only = env_steps_per_second(num_envs, mode, args.vector_steps)
                whole = run_steps_per_second(num_envs, mode, args.iterations)
                rows.append(dict(num_envs=num_envs, async_envs=mode, repeat=repeat,
                                 env_steps_per_s=round(env_only), run_steps_per_s=round(whole)))
                print(rows[-1], flush=True)
    path = os.path.join(ROOT, "benchmarks", "results", "async_envs.csv")
    write_rows(path, rows)
    print(f"\n{os.cpu_count()} CPUs; medians over {args.repeats} repeats\n")
    print("| envs | async | env steps/s | whole-run steps/s |\n|---|---|---|---|")
    for num_envs in [8, 16]:
        for mode in ["off", "on"]:
            mine = [row for row in rows if row["num_envs"] == num_envs and row["async_envs"] == mode]
            print(f"| {num_envs} | {mode} | {np.median([r['env_steps_per_s'] for r in mine]):,.0f} | "
                  f"{np.median([r['run_steps_per_s'] for r in mine]):,.0f} |")


if __name__ == "__main__":
    main()
