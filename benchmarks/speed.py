"""Speed benchmark: steps/s of our script, of Stable-Baselines3's PPO with the same hyper-parameters,
and of the raw vector env stepping random actions, on one env. Each measurement is its own process
(so its peak RSS is its own); the three alternate, repeat after repeat, and medians are reported.

    pip install -r benchmarks/requirements.txt
    python benchmarks/speed.py --env-id CartPole-v1 --steps 500000 --repeats 3

steps/s is total steps / seconds spent in training (network and env set-up included, interpreter
start-up and imports excluded); "process wall" is the whole command, imports included.
SB3 runs as its users run it (torch's default threads); ours uses its default --torch-threads 1.
"""

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# CleanRL ppo.py defaults (our defaults), in both libraries' words
NUM_ENVS, NUM_STEPS, NUM_MINIBATCHES, EPOCHS = 4, 128, 4, 4
LEARNING_RATE, GAMMA, GAE_LAMBDA, CLIP, ENT_COEF, VF_COEF, MAX_GRAD_NORM = 2.5e-4, 0.99, 0.95, 0.2, 0.01, 0.5, 0.5


def worker_ours(env_id: str, steps: int) -> float:
    sys.path.insert(0, ROOT)
    import ppo_discrete

    args = ppo_discrete.Args(env_id=env_id, total_timesteps=steps)
    start = time.perf_counter()
    ppo_discrete.train(args)
    return time.perf_counter() - start


def worker_sb3(env_id: str, steps: int) -> float:
    import torch.nn as nn
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env

    start = time.perf_counter()
    envs = make_vec_env(env_id, n_envs=NUM_ENVS, seed=1)
    model = PPO(
        "MlpPolicy", envs, learning_rate=lambda remaining: remaining * LEARNING_RATE, n_steps=NUM_STEPS,
        batch_size=NUM_ENVS * NUM_STEPS // NUM_MINIBATCHES, n_epochs=EPOCHS, gamma=GAMMA, gae_lambda=GAE_LAMBDA,
        clip_range=CLIP, clip_range_vf=CLIP, ent_coef=ENT_COEF, vf_coef=VF_COEF, max_grad_norm=MAX_GRAD_NORM,
        policy_kwargs=dict(net_arch=dict(pi=[64, 64], vf=[64, 64]), activation_fn=nn.Tanh), device="cpu", seed=1,
    )
    model.learn(total_timesteps=steps)
    return time.perf_counter() - start


def worker_raw(env_id: str, steps: int) -> float:
    import gymnasium as gym

    start = time.perf_counter()
    envs = gym.vector.SyncVectorEnv([lambda: gym.make(env_id)] * NUM_ENVS, autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    envs.reset(seed=1)
    envs.action_space.seed(1)
    for _ in range(steps // NUM_ENVS):
        envs.step(envs.action_space.sample())
    return time.perf_counter() - start


WORKERS = {"ours": worker_ours, "sb3": worker_sb3, "raw env": worker_raw}


def measure(name: str, env_id: str, steps: int) -> dict:
    """Runs one worker in its own process; returns its steps/s, process wall time and peak RSS."""
    with tempfile.TemporaryDirectory() as workdir:
        command = [sys.executable, os.path.abspath(__file__), "--worker", name, "--env-id", env_id, "--steps", str(steps)]
        start = time.perf_counter()
        process = subprocess.Popen(command, cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        output = process.stdout.read()
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - start
    if status != 0:
        raise RuntimeError(f"{name} worker failed (status {status})")
    seconds = json.loads(output.strip().splitlines()[-1])["seconds"]
    return dict(worker=name, steps=steps, seconds=round(seconds, 3), sps=round(steps / seconds, 1),
                process_wall_s=round(wall, 2), peak_rss_mb=round(usage.ru_maxrss / 1024, 1))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env-id", default="CartPole-v1")
    parser.add_argument("--steps", type=int, default=500_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", nargs="+", default=list(WORKERS), choices=list(WORKERS))
    parser.add_argument("--out", default=None, help="CSV of every measurement (default benchmarks/results/speed_{env}.csv)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps({"seconds": WORKERS[args.worker](args.env_id, args.steps)}))
        return

    rows = []
    for repeat in range(args.repeats):
        for name in args.workers:
            row = dict(measure(name, args.env_id, args.steps), repeat=repeat)
            print(row, flush=True)
            rows.append(row)
    out = args.out or os.path.join(ROOT, "benchmarks", "results", f"speed_{args.env_id}.csv")
    with open(out, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)

    median = {name: {key: float(np.median([r[key] for r in rows if r["worker"] == name]))
                     for key in ["sps", "process_wall_s", "peak_rss_mb"]} for name in args.workers}
    ours = median.get("ours", {}).get("sps")
    print(f"\n{args.env_id}, {args.steps:,} steps, median of {args.repeats} alternating runs (CSV: {os.path.relpath(out, ROOT)})\n")
    print("| run | steps/s | ours ÷ this | process wall (s) | peak RSS (MB) |")
    print("|---|---|---|---|---|")
    for name, m in median.items():
        ratio = f"{ours / m['sps']:.2f}×" if ours else "—"
        print(f"| {name} | {m['sps']:,.0f} | {ratio} | {m['process_wall_s']:.1f} | {m['peak_rss_mb']:.0f} |")


if __name__ == "__main__":
    main()
