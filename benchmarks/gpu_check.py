"""GPU check: the CUDA paths of the three scripts, on the GPUs of this machine, in a few minutes. For a person
with a GPU (CI has none): each check is a short run of a script as a user would start it, in a scratch
directory; it prints PASS or FAIL with the reason, and at the end a markdown table of the figures (device,
steps/s) to paste into benchmarks/README.md.

    python benchmarks/gpu_check.py                  # every check, on CUDA
    python benchmarks/gpu_check.py --no-cuda        # the same runs on the CPU (checks this script itself)
    python benchmarks/gpu_check.py --only atari-bf16 resume-across-devices

Checks: a run of each script on CUDA (device named, saved model); ppo_atari --precision bf16 and fp32;
--compile; a checkpoint written on the GPU resumed on the CPU and one written on the CPU resumed on the GPU,
and the model of the latter evaluated on the CPU; two runs with one seed end with the same weights
(--torch-deterministic); torchrun with one process a GPU; Atari steps/s with 8 and 16 envs, sync and async.
"""

import argparse
import glob
import os
import re
import subprocess
import sys
import tempfile
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHORT = {
    "ppo_discrete.py": ["--total-timesteps", "8192"],
    "ppo_continuous.py": ["--env-id", "Pendulum-v1", "--total-timesteps", "8192", "--num-steps", "1024"],
    "ppo_atari.py": ["--total-timesteps", "4096", "--num-envs", "8", "--num-steps", "128"],
}


class Failed(Exception):
    pass


def run(script: str, *flags: str, cuda: bool, cwd: str, torchrun: int = 0) -> str:
    """One run of a script in cwd; its output, or Failed with the last line of its errors."""
    launcher = [sys.executable]
    if torchrun:
        launcher += ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={torchrun}"]
    device_flag = "--cuda" if cuda else "--no-cuda"
    command = [*launcher, os.path.join(ROOT, script), *flags, device_flag]
    print("   ", " ".join(command[len(launcher):]), flush=True)
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    if result.returncode != 0:
        lines = (result.stderr or result.stdout).strip().splitlines() or ["no output"]
        raise Failed(f"exit {result.returncode}: {lines[-1]}")
    return result.stdout


def expect_device(output: str, cuda: bool):
    devices = re.findall(r"^device: (\S+)", output, re.M)
    wanted = "cuda" if cuda else "cpu"
    if not devices or not all(device.startswith(wanted) for device in devices):
        raise Failed(f"expected the run on {wanted}, it said: {devices or 'no device line'}")


def steps_per_second(output: str) -> int:
    found = re.findall(r"([\d,]+) steps/s", output)
    return int(found[-1].replace(",", "")) if found else 0


def only_file(pattern: str, cwd: str) -> str:
    paths = glob.glob(os.path.join(cwd, pattern))
    if len(paths) != 1:
        raise Failed(f"expected one {pattern}, found {len(paths)}")
    return paths[0]


def weights(path: str) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)["agent"]


def check_script(script, cuda, cwd):
    output = run(script, *SHORT[script], "--save-model", cuda=cuda, cwd=cwd)
    expect_device(output, cuda)
    only_file(f"runs/*/{script[:-3]}.model", cwd)
    return f"{steps_per_second(output):,} steps/s"


def check_precision(precision, cuda, cwd):
    output = run("ppo_atari.py", *SHORT["ppo_atari.py"], "--precision", precision, cuda=cuda, cwd=cwd)
    expect_device(output, cuda)
    return f"{steps_per_second(output):,} steps/s"


def check_compile(cuda, cwd):
    output = run("ppo_continuous.py", *SHORT["ppo_continuous.py"], "--compile", cuda=cuda, cwd=cwd)
    expect_device(output, cuda)
    return f"{steps_per_second(output):,} steps/s"


def check_resume_across_devices(cuda, cwd):
    """Written on one device, resumed on the other, both ways; a model loaded on the other device."""
    flags = [*SHORT["ppo_continuous.py"], "--checkpoint-every", "4096", "--save-model"]
    said = []
    for first, second in [(cuda, False), (False, cuda)]:
        directory = tempfile.mkdtemp(dir=cwd)
        run("ppo_continuous.py", *flags, cuda=first, cwd=directory)
        checkpoint = only_file("runs/*/checkpoint.pt", directory)  # of step 4,096: the last 4,096 again
        output = run("ppo_continuous.py", "--resume", checkpoint, cuda=second, cwd=directory)
        expect_device(output, second)
        if "resuming" not in output:
            raise Failed("the resumed run did not say it resumed")
        said.append(f"{'cuda' if first else 'cpu'}->{'cuda' if second else 'cpu'}")
    model = only_file("runs/*/ppo_continuous.model", directory)  # written by the run resumed on CUDA
    output = run("ppo_continuous.py", "--load-model", model, "--eval-episodes", "2", cuda=False, cwd=cwd)
    expect_device(output, False)
    return ", ".join(said) + ", its model evaluated on the CPU"


def check_determinism(cuda, cwd):
    ends = []
    for repeat in range(2):
        directory = tempfile.mkdtemp(dir=cwd)
        run("ppo_atari.py", *SHORT["ppo_atari.py"], "--save-model", "--seed", "3", cuda=cuda, cwd=directory)
        ends.append(weights(only_file("runs/*/ppo_atari.model", directory)))
    differing = [name for name in ends[0] if not torch.equal(ends[0][name], ends[1][name])]
    if differing:
        raise Failed(f"two runs with one seed differ in {differing[:3]}")
    return "same weights, bit for bit"


def check_torchrun(cuda, cwd):
    processes = max(torch.cuda.device_count(), 1) if cuda else 2
    output = run("ppo_atari.py", *SHORT["ppo_atari.py"], cuda=cuda, cwd=cwd, torchrun=processes)
    expect_device(output, cuda)
    return f"{processes} process(es), {steps_per_second(output):,} steps/s"


def check_atari_speed(cuda, cwd):
    """Steps/s of 8 iterations, the envs in one process (sync) and in worker processes (async)."""
    figures = []
    for envs in [8, 16]:
        for mode in ["off", "on"]:
            flags = ["--num-envs", str(envs), "--num-steps", "128", "--total-timesteps", str(envs * 128 * 8),
                     "--async-envs", mode, "--checkpoint-every", "0"]
            output = run("ppo_atari.py", *flags, cuda=cuda, cwd=cwd)
            figures.append(f"{envs} envs {'async' if mode == 'on' else 'sync'} {steps_per_second(output):,}")
    return "steps/s: " + ", ".join(figures)


CHECKS = {
    "discrete": lambda cuda, cwd: check_script("ppo_discrete.py", cuda, cwd),
    "continuous": lambda cuda, cwd: check_script("ppo_continuous.py", cuda, cwd),
    "atari": lambda cuda, cwd: check_script("ppo_atari.py", cuda, cwd),
    "atari-bf16": lambda cuda, cwd: check_precision("bf16", cuda, cwd),
    "atari-fp32": lambda cuda, cwd: check_precision("fp32", cuda, cwd),
    "compile": check_compile,
    "resume-across-devices": check_resume_across_devices,
    "determinism": check_determinism,
    "torchrun": check_torchrun,
    "atari-speed": check_atari_speed,
}


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--no-cuda", dest="cuda", action="store_false", help="run every check on the CPU")
    parser.add_argument("--only", nargs="+", choices=list(CHECKS), default=list(CHECKS))
    args = parser.parse_args()
    if args.cuda and not torch.cuda.is_available():
        sys.exit("error: no usable CUDA here; --no-cuda runs the checks on the CPU")
    device = torch.cuda.get_device_name(0) if args.cuda else "CPU"
    print(f"{device}, torch {torch.__version__}, {os.cpu_count()} CPUs")
    rows, failed = [], 0
    with tempfile.TemporaryDirectory() as scratch:
        for name in args.only:
            print(f"{name}:", flush=True)
            start = time.time()
            try:
                result = "PASS: " + CHECKS[name](args.cuda, tempfile.mkdtemp(dir=scratch))
            except Failed as error:
                result, failed = f"FAIL: {error}", failed + 1
            print(f"  {result} ({time.time() - start:.0f} s)", flush=True)
            rows.append(f"| {name} | {result} | {time.time() - start:.0f} s |")
    print(f"\n{device}, torch {torch.__version__}\n\n| check | result | time |\n|---|---|---|")
    print("\n".join(rows))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
