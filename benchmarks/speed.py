"""Speed benchmark: steps/s of one of our scripts, of Stable-Baselines3's PPO with the same
hyper-parameters (the script's defaults), and of the raw vector env stepping random actions. Each
measurement is its own process (so its peak RSS is its own); the three alternate, repeat after
repeat, and medians are reported.

    pip install -r benchmarks/requirements.txt
    python benchmarks/speed.py --script ppo_discrete.py --steps 500000 --repeats 3
    python benchmarks/speed.py --script ppo_continuous.py --steps 100000 --repeats 3
    python benchmarks/speed.py --script ppo_atari.py --steps 20480 --repeats 3
    python benchmarks/speed.py --plot benchmarks/results/speed_*.csv     # bar chart: results/speed.png
    python benchmarks/speed.py --breakdown --script ppo_discrete.py --steps 500000 --repeats 3  # the parts
    python benchmarks/speed.py --side-by-side --script ppo_discrete.py --repeats 3  # 2 at once vs 1
    python benchmarks/speed.py --script ppo_continuous.py --steps 1000000 --repeats 1 --workers ours \
        --flags --compile

steps/s is total steps / seconds spent in training (network and env set-up included, interpreter
start-up and imports excluded, torch._dynamo too, which the first torch.optim optimizer imports); "process
wall" is the whole command, imports included.
SB3 runs as its users run it (torch's default threads); ours uses its default --torch-threads 1.
"""

import argparse
import csv
import importlib
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def script_args(script: str, env_id: str, steps: int, flags: tuple = ()):
    """The script's Args with its defaults (and flags, a command line's), for this env and budget."""
    import tyro

    module = importlib.import_module(script.removesuffix(".py"))
    args = tyro.cli(module.Args, args=list(flags))
    args.env_id, args.total_timesteps = env_id or module.Args.env_id, steps
    return module, args


def worker_ours(script: str, env_id: str, steps: int, flags: tuple = ()) -> float:
    module, args = script_args(script, env_id, steps, flags)
    start = time.perf_counter()
    module.train(args)
    return time.perf_counter() - start


def worker_sb3(script: str, env_id: str, steps: int) -> float:
    """SB3's PPO with the script's default hyper-parameters (and VecNormalize where the script normalizes),
    on the device the script uses (a GPU when there is one and --cuda is on, as in our scripts)."""
    import torch
    import torch.nn as nn
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_atari_env, make_vec_env
    from stable_baselines3.common.vec_env import VecFrameStack, VecNormalize

    module, args = script_args(script, env_id, steps)
    start = time.perf_counter()
    if script == "ppo_atari.py":  # SB3's Atari stack: the same protocol through its own wrappers
        # registers ALE's ids; below, frame skip and no sticky actions as ours
        module.check_atari_id(args.env_id)
        no_skip = dict(frameskip=1, repeat_action_probability=0.0)
        envs = VecFrameStack(
            make_atari_env(args.env_id, n_envs=args.num_envs, seed=args.seed, env_kwargs=no_skip), 4
        )
        policy, policy_kwargs = "CnnPolicy", {}
    else:
        envs = make_vec_env(args.env_id, n_envs=args.num_envs, seed=args.seed)
        activation = getattr(nn, args.activation)
        hidden = list(args.hidden_sizes)
        policy, policy_kwargs = (
            "MlpPolicy",
            dict(net_arch=dict(pi=hidden, vf=hidden), activation_fn=activation),
        )
    if getattr(args, "norm_obs", False) or getattr(args, "norm_reward", False):
        envs = VecNormalize(
            envs,
            norm_obs=args.norm_obs,
            norm_reward=args.norm_reward,
            clip_obs=args.clip_obs,
            clip_reward=args.clip_reward,
            gamma=args.gamma,
        )
    learning_rate = (
        (lambda remaining: remaining * args.learning_rate) if args.anneal_lr else args.learning_rate
    )
    model = PPO(
        policy,
        envs,
        learning_rate=learning_rate,
        n_steps=args.num_steps,
        batch_size=args.num_envs * args.num_steps // args.num_minibatches,
        n_epochs=args.update_epochs,
        gamma=args.gamma,
        gae_lambda=args.gae_lambda,
        clip_range=args.clip_coef,
        clip_range_vf=args.clip_coef if args.clip_vloss else None,
        normalize_advantage=args.norm_adv,
        ent_coef=args.ent_coef,
        vf_coef=args.vf_coef,
        max_grad_norm=args.max_grad_norm,
        target_kl=args.target_kl,
        policy_kwargs=policy_kwargs,
        device="cuda" if args.cuda and torch.cuda.is_available() else "cpu",
        seed=args.seed,
    )
    model.learn(total_timesteps=steps)
    return time.perf_counter() - start


def worker_raw(script: str, env_id: str, steps: int) -> float:
    """The script's own vector env (its make_envs: same count and settings; ale-py's native vector env for
    Atari) stepping random actions, no network."""
    module, args = script_args(script, env_id, steps)
    start = time.perf_counter()
    envs = module.make_envs(args)
    envs.reset(seed=args.seed)
    envs.action_space.seed(args.seed)
    for _ in range(steps // args.num_envs):
        envs.step(envs.action_space.sample())
    return time.perf_counter() - start


WORKERS = {"ours": worker_ours, "sb3": worker_sb3, "raw env": worker_raw}
# the functions every script's train() calls each iteration
PARTS = ["collect_rollout", "compute_gae", "update"]


def worker_command(name: str, script: str, env_id: str, steps: int, flags: tuple = ()) -> list[str]:
    """This file run as one measurement's worker process (flags: our script's, a command line's)."""
    return [sys.executable, os.path.abspath(__file__), "--worker", name, "--script", script, "--env-id",
            env_id, "--steps", str(steps), *(["--flags", *flags] if flags else [])]


def breakdown_once(script: str, env_id: str, steps: int) -> dict:
    """Seconds of one of our training runs spent in each part (the script's own functions, timed in place),
    the rest ("other": set-up, episode bookkeeping, logging), and the raw env alone for the same steps."""
    module, args = script_args(script, env_id, steps)
    seconds = dict.fromkeys(PARTS, 0.0)

    def timed(name, function):
        def run(*call_args, **call_kwargs):
            start = time.perf_counter()
            result = function(*call_args, **call_kwargs)
            seconds[name] += time.perf_counter() - start
            return result
        return run

    for name in PARTS:
        setattr(module, name, timed(name, getattr(module, name)))
    start = time.perf_counter()
    module.train(args)
    seconds["total"] = time.perf_counter() - start
    seconds["other"] = seconds["total"] - sum(seconds[name] for name in PARTS)
    seconds["raw env"] = worker_raw(script, env_id, steps)
    return seconds


def breakdown(script: str, env_id: str, steps: int, repeats: int, out: str):
    """Prints where the time of a default run goes, medians of repeats, each in its own process; every run to
    out."""
    runs = []
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as workdir:
            output = subprocess.run(worker_command("breakdown", script, env_id, steps), cwd=workdir,
                                    capture_output=True, text=True, check=True).stdout
        runs.append(json.loads(output.strip().splitlines()[-1])["seconds"])
    write_rows(out, [{key: round(value, 3) for key, value in run.items()} for run in runs])
    median = {key: float(np.median([run[key] for run in runs])) for key in runs[0]}
    args = script_args(script, env_id, steps)[1]
    iterations = steps // (args.num_envs * args.num_steps)
    rollout_steps = iterations * args.num_envs * args.num_steps
    gradient_steps = iterations * args.update_epochs * args.num_minibatches
    print(
        f"\n{script} on {env_id}, {steps:,} steps ({iterations} iterations, "
        f"{gradient_steps:,} minibatch steps), "
        f"median of {repeats}: {steps / median['total']:,.0f} steps/s (CSV: {os.path.relpath(out, ROOT)})\n"
    )
    print("| part | seconds | share | per unit |")
    print("|---|---|---|---|")
    rows = [
        (
            "rollout (`collect_rollout`)",
            median["collect_rollout"],
            f"{median['collect_rollout'] / rollout_steps * 1e6:.1f} µs per env step",
        ),
        (
            "  of which the raw env (random actions, separate run)",
            median["raw env"],
            f"{median['raw env'] / steps * 1e6:.1f} µs per env step",
        ),
        (
            "advantages (`compute_gae`)",
            median["compute_gae"],
            f"{median['compute_gae'] / iterations * 1e3:.2f} ms per iteration",
        ),
        (
            "update (`update`)",
            median["update"],
            f"{median['update'] / gradient_steps * 1e3:.2f} ms per minibatch step",
        ),
        ("other (set-up, bookkeeping, logging)", median["other"], ""),
        ("total", median["total"], ""),
    ]
    for name, seconds, unit in rows:
        print(f"| {name} | {seconds:.2f} | {seconds / median['total']:.0%} | {unit} |")


def measure(
    name: str, script: str, env_id: str, steps: int, flags: tuple = (), copies: int = 1
) -> list[dict]:
    """Runs copies of one worker at once, each in its own process; returns each one's steps/s, process wall
    time and peak RSS."""
    with tempfile.TemporaryDirectory() as workdir:
        start, processes = time.perf_counter(), []
        for copy in range(copies):
            os.makedirs(os.path.join(workdir, str(copy)))
            processes.append(
                subprocess.Popen(
                    worker_command(name, script, env_id, steps, flags),
                    cwd=os.path.join(workdir, str(copy)),
                    stdout=subprocess.PIPE,
                    stderr=subprocess.DEVNULL,
                    text=True,
                )
            )
        rows = []
        for process in processes:
            output = process.stdout.read()
            _, status, usage = os.wait4(process.pid, 0)
            if status != 0:
                raise RuntimeError(f"{name} worker failed (status {status})")
            seconds = json.loads(output.strip().splitlines()[-1])["seconds"]
            rows.append(
                dict(
                    worker=name,
                    steps=steps,
                    seconds=round(seconds, 3),
                    sps=round(steps / seconds, 1),
                    process_wall_s=round(time.perf_counter() - start, 2),
                    peak_rss_mb=round(usage.ru_maxrss / 1024, 1),
                )
            )
    return rows


def side_by_side(script: str, env_id: str, steps: int, repeats: int, flags: tuple, out: str):
    """Our default run alone, then two copies at once (as researchers run seeds), alternating: each copy's
    training time over the median of the runs alone."""
    rows = []
    for repeat in range(repeats):
        for copies in (1, 2):
            for row in measure("ours", script, env_id, steps, flags, copies):
                rows.append(dict(row, copies=copies, repeat=repeat))
                print(rows[-1], flush=True)
    write_rows(out, rows)
    alone = float(np.median([r["seconds"] for r in rows if r["copies"] == 1]))  # the training, in the process
    paired = [r["seconds"] for r in rows if r["copies"] == 2]
    print(
        f"\n{script} on {env_id}, {steps:,} steps: alone {alone:.1f} s (median of {repeats}); "
        f"two side by side: "
        f"{', '.join(f'{w:.1f}' for w in paired)} s each, median {np.median(paired) / alone:.2f}x of alone "
        f"(worst {max(paired) / alone:.2f}x). CSV: {os.path.relpath(out, ROOT)}"
    )


def write_rows(out: str, rows: list[dict]):
    with open(out, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def plot(csv_paths: list[str], out: str):
    """Bar chart of the median steps/s of each worker, one group per CSV (env), on a log scale."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(WORKERS)
    fig, ax = plt.subplots(figsize=(8, 4))
    for group, path in enumerate(csv_paths):
        with open(path) as f:
            rows = list(csv.DictReader(f))
        for i, name in enumerate(names):
            sps = float(np.median([float(r["sps"]) for r in rows if r["worker"] == name]))
            bar = ax.bar(group + (i - 1) * 0.27, sps, 0.27, color=f"C{i}", label=name if group == 0 else None)
            ax.bar_label(bar, [f"{sps:,.0f}"], fontsize=7)
    labels = [os.path.basename(p).removeprefix("speed_").removesuffix(".csv") for p in csv_paths]
    ax.set_xticks(range(len(csv_paths)), labels)
    ax.set_yscale("log")
    ax.set_ylabel("training steps/s (median)")
    ax.set_title("ours vs SB3 PPO (same hyper-parameters) vs the raw env, 2-core CPU")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    print(f"plot: {out}")


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--script",
        default="ppo_discrete.py",
        choices=["ppo_discrete.py", "ppo_continuous.py", "ppo_atari.py"],
    )
    parser.add_argument("--env-id", default="", help="default: the script's default env")
    parser.add_argument("--steps", type=int, default=500_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", nargs="+", default=list(WORKERS), choices=list(WORKERS))
    parser.add_argument(
        "--out", default=None, help="CSV of every measurement (default benchmarks/results/speed_{env}.csv)"
    )
    parser.add_argument(
        "--plot", nargs="+", metavar="CSV", help="draw a bar chart of these result CSVs, then stop"
    )
    parser.add_argument("--plot-out", default=os.path.join(ROOT, "benchmarks", "results", "speed.png"))
    parser.add_argument(
        "--breakdown", action="store_true", help="where our script's time goes: rollout, GAE, update, other"
    )
    parser.add_argument(
        "--side-by-side",
        action="store_true",
        help="our run alone, then two copies at once: how much slower each is",
    )
    parser.add_argument(
        "--flags",
        nargs=argparse.REMAINDER,
        default=[],
        help="flags for our script (last on the line), e.g. --flags --compile",
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.plot:
        plot(args.plot, args.plot_out)
        return
    if args.worker:  # the first torch.optim optimizer imports torch._dynamo (2-3 s): an import, not timed
        import torch._dynamo  # noqa: F401
    if args.worker == "breakdown":
        print(json.dumps({"seconds": breakdown_once(args.script, args.env_id, args.steps)}))
        return
    if args.worker:
        extra = (tuple(args.flags),) if args.worker == "ours" else ()
        print(json.dumps({"seconds": WORKERS[args.worker](args.script, args.env_id, args.steps, *extra)}))
        return
    env_id = args.env_id or script_args(args.script, "", 1)[1].env_id
    if args.breakdown:
        out = args.out or os.path.join(
            ROOT, "benchmarks", "results", f"breakdown_{env_id.replace('/', '-')}.csv"
        )
        breakdown(args.script, env_id, args.steps, args.repeats, out)
        return
    if args.side_by_side:
        out = args.out or os.path.join(
            ROOT, "benchmarks", "results", f"side_by_side_{env_id.replace('/', '-')}.csv"
        )
        side_by_side(args.script, env_id, args.steps, args.repeats, tuple(args.flags), out)
        return

    rows = []
    for repeat in range(args.repeats):
        for name in args.workers:
            (row,) = measure(
                name, args.script, env_id, args.steps, tuple(args.flags) if name == "ours" else ()
            )
            rows.append(dict(row, repeat=repeat))
            print(rows[-1], flush=True)
    out = args.out or os.path.join(ROOT, "benchmarks", "results", f"speed_{env_id.replace('/', '-')}.csv")
    write_rows(out, rows)

    median = {
        name: {
            key: float(np.median([r[key] for r in rows if r["worker"] == name]))
            for key in ["sps", "process_wall_s", "peak_rss_mb"]
        }
        for name in args.workers
    }
    ours = median.get("ours", {}).get("sps")
    print(
        f"\n{args.script} on {env_id}, {args.steps:,} steps, median of {args.repeats} alternating runs "
        f"(CSV: {os.path.relpath(out, ROOT)})\n"
    )
    print("| run | steps/s | ours ÷ this | process wall (s) | peak RSS (MB) |")
    print("|---|---|---|---|---|")
    for name, m in median.items():
        ratio = f"{ours / m['sps']:.2f}×" if ours else "—"
        print(f"| {name} | {m['sps']:,.0f} | {ratio} | {m['process_wall_s']:.1f} | {m['peak_rss_mb']:.0f} |")


if __name__ == "__main__":
    main()
