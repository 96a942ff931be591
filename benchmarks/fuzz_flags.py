"""Runs the scripts as a careless user would: tiny runs with random flag combinations (edge values included),
each in a fresh folder; with --then, each run is followed by two --resume or --load-model of what it left,
with random flags. A run passes if it ends cleanly (exit 0, no traceback), or stops with one line `error: ...`
on stderr and exit 2 (exit 3 for a loss that went non-finite), or with tyro's own parse error; every other
ending is printed as FAULT with its stderr's tail. Warnings of the libraries (MuJoCo, ALE, gymnasium) are
counted apart, as noise.

    python benchmarks/fuzz_flags.py --seed 1 --minutes 40
    python benchmarks/fuzz_flags.py --seed 2 --minutes 45 --then
"""

import argparse
import glob
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# a run's limit: --load-model's 10 recorded MuJoCo episodes render 10,000 frames, about 6 minutes on 2 cores
TIMEOUT = 600
ANY = {  # flag: values (None: a switch)
    "--num-envs": ["1", "2", "3"], "--num-steps": ["1", "2", "16", "33"],
    "--num-minibatches": ["1", "2", "3", "4", "64"], "--update-epochs": ["1", "3"],
    "--objective": ["clip", "kl-adaptive", "kl-fixed", "none", "ppog"], "--target-kl": ["0.0001", "0.05"],
    "--anneal-clip": [None], "--no-norm-adv": [None], "--no-clip-vloss": [None], "--no-anneal-lr": [None],
    "--ent-coef-decay": ["0.5", "1.0"], "--ent-coef-min": ["0.0", "0.001"],
    "--eval-episodes": ["0", "1", "2"], "--no-eval-greedy": [None], "--save-model": [None],
    "--export-onnx": ["out.onnx"], "--checkpoint-every": ["0", "1", "64", "1000"],
    "--gamma": ["0", "1", "0.9"], "--gae-lambda": ["0", "1"], "--no-bootstrap-truncation": [None],
    "--max-grad-norm": ["1e-9", "100"], "--learning-rate": ["10", "1e-9"],
    "--clip-coef": ["1e-6", "5"], "--vf-coef": ["0"], "--kl-beta": ["0", "100"], "--ent-coef": ["0", "1"],
    "--seed": ["0", "4294967295"], "--torch-threads": ["0", "2"], "--capture-video": [None],
}
MLP = {"--hidden-sizes": ["8", "16 16 16", "3"],
       "--activation": ["ReLU", "ELU", "GELU", "Identity", "Softmax", "PReLU", "Dropout", "Mish", "SELU",
                        "Hardtanh", "LogSigmoid", "Sigmoid", "Softsign", "SiLU"]}
OWN = {
    "ppo_discrete.py": {**MLP, "--shared-body": [None], "--preset": ["acrobot", "lunarlander"],
                        "--env-id": ["CartPole-v1", "Acrobot-v1", "FrozenLake-v1", "Blackjack-v1", "Taxi-v3",
                                     "CliffWalking-v1", "MountainCar-v0", "LunarLander-v3",
                                     "tests.toy_envs:Switches-v0", "tests.toy_envs:ComboLock-v0"],
                        "--env-kwargs": ["map_name 8x8", "is_slippery False", "sutton_barto_reward True",
                                         "foo 1", "max_episode_steps 5", "render_mode rgb_array",
                                         "continuous True"]},
    "ppo_continuous.py": {**MLP, "--no-norm-obs": [None], "--no-norm-reward": [None], "--clip-reward": ["1"],
                          "--clip-obs": ["0.1", "1e6"], "--log-std-init": ["-5", "2"],
                          "--preset": ["halfcheetah", "walker2d", "swimmer", "pendulum"],
                          "--env-id": ["Pendulum-v1", "MountainCarContinuous-v0", "HalfCheetah-v5",
                                       "LunarLanderContinuous-v3", "InvertedPendulum-v5", "Reacher-v5",
                                       "tests.toy_envs:MatrixActions-v0", "tests.toy_envs:ScalarAction-v0"],
                          "--env-kwargs": ["ctrl_cost_weight 0.5", "g 2.0", "continuous False", "width 64",
                                           "max_episode_steps 5",
                                           "exclude_current_positions_from_observation False"]},
    "ppo_atari.py": {"--env-id": ["ALE/Breakout-v5", "ALE/Pong-v5", "PongNoFrameskip-v4"],
                     "--noop-max": ["0", "1"], "--no-episodic-life": [None], "--no-clip-rewards": [None],
                     "--sticky-actions": [None], "--async-envs": ["on", "off"],
                     "--precision": ["fp32", "bf16"],
                     "--env-kwargs": ["mode 4", "difficulty 1", "frameskip 4", "full_action_space True",
                                      "x 1"]},
}
TINY = {"ppo_discrete.py": ["--total-timesteps", "2048"],
        "ppo_continuous.py": ["--total-timesteps", "2048"],
        "ppo_atari.py": ["--total-timesteps", "512", "--num-envs", "2", "--num-steps", "64"]}
THEN = {"--eval-episodes": ["0", "1", "2"], "--no-eval-greedy": [None], "--capture-video": [None],
        "--no-capture-video": [None], "--save-model": [None], "--no-save-model": [None], "--seed": ["3"],
        "--export-onnx": ["out.onnx", "sub/out.onnx", "."], "--torch-threads": ["1", "3"],
        "--checkpoint-every": ["0", "256"], "--learning-rate": ["0.001"],
        "--total-timesteps": ["4096", "1024"],
        "--exp-name": ["other"], "--gamma": ["0.9"], "--num-envs": ["2"],
        "--env-kwargs": ["max_episode_steps 7", "foo 1", "is_slippery True", "g 3.0"]}
NOISE = ("warning:", "note:", "WARNING:", "A.L.E:", "[Powered by Stella]")


def pick(rng: random.Random, table: dict, fewest: int, most: int) -> list[str]:
    flags = []
    for name in rng.sample(sorted(table), rng.randint(fewest, most)):
        value = rng.choice(table[name])
        flags += [name] if value is None else [name, *value.split()]
    return flags


def check(script: str, flags: list[str], folder: str, verdicts: Counter, shown: str):
    """Runs the script with flags in folder; counts and prints its verdict: ok, noise (a clean run with
    library warnings on stderr) or FAULT (with its stderr's tail)."""
    try:
        out = subprocess.run([sys.executable, os.path.join(ROOT, script), *flags], cwd=folder,
                             env={**os.environ, "PYTHONPATH": ROOT},  # the toy envs of tests/toy_envs.py
                             capture_output=True, text=True, timeout=TIMEOUT)
        stderr = out.stderr
        lines = [line for line in stderr.strip().splitlines()
                 if line.strip() and not line.startswith(NOISE)]
        one_line = len(lines) == 1 and lines[0].startswith("error:")
        verdict = "FAULT"
        if out.returncode == 0 and "Traceback" not in stderr:
            verdict = "noise" if stderr.strip() else "ok"
        elif out.returncode in (2, 3) and (one_line or stderr.lstrip().startswith("╭")):
            verdict = "ok"  # one line, or tyro's box for a flag it cannot parse
    except subprocess.TimeoutExpired:
        verdict, stderr = "FAULT", f"timeout after {TIMEOUT} s"
    verdicts[verdict] += 1
    print(f"{verdict} {shown}", flush=True)
    if verdict == "FAULT":
        print("    " + stderr.strip()[-1500:].replace("\n", "\n    "), flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--minutes", type=float, default=40)
    parser.add_argument("--then", action="store_true", help="follow each run with --resume or --load-model")
    options = parser.parse_args()
    rng = random.Random(options.seed)
    deadline = time.time() + 60 * options.minutes
    verdicts = Counter()
    while time.time() < deadline:
        script = rng.choices(list(OWN), [5, 4, 1])[0]
        folder = tempfile.mkdtemp(prefix="fuzz_flags_")
        flags = ["--no-cuda", *pick(rng, {**ANY, **OWN[script]}, 2, 8), *TINY[script]]
        check(script, flags, folder, verdicts, f"{script} {' '.join(flags)}")
        for _ in range(2 * options.then):
            left = glob.glob(f"{folder}/runs/*/checkpoint.pt") + glob.glob(f"{folder}/runs/*/*.model")
            if not left:
                break
            path = rng.choice(left)
            kind = "--resume" if path.endswith(".pt") and rng.random() < 0.6 else "--load-model"
            then = [kind, path, *pick(rng, THEN, 0, 3)]
            check(script, then, folder, verdicts, "  " + " ".join(then).replace(folder, ""))
        shutil.rmtree(folder, ignore_errors=True)
    print(dict(verdicts))


if __name__ == "__main__":
    main()
