"""Scale-out benchmark: the same training run in 1 process and under torchrun in N processes (same flags, so
the same total envs, batch and minibatches), alternating, several repeats; reports the training steps/s (the
last charts/SPS point: without start-up) and the wall time from launch to exit, with medians and the ratio.

    python benchmarks/scaling.py --script ppo_atari.py --nproc 2 --repeats 3 \
        --out benchmarks/results/scaling_breakout.csv -- --total-timesteps 20480
    python benchmarks/scaling.py --summarize benchmarks/results/scaling_breakout.csv

Learning under torchrun is compared with benchmarks/learning.py --nproc N.
"""

import argparse
import csv
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from learning import ROOT, launcher, read_the_run  # noqa: E402

FIELDS = ["script", "processes", "repeat", "steps_per_s", "wall_s"]


def run_once(script: str, nproc: int, extra: list[str]) -> tuple[float, float]:
    """(training steps/s, wall seconds) of one run in a fresh working directory."""
    with tempfile.TemporaryDirectory() as workdir:
        start = time.time()
        subprocess.run([*launcher(nproc), os.path.join(ROOT, script), *extra], cwd=workdir, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wall = time.time() - start
        _, events = read_the_run(workdir)
        return events.Scalars("charts/SPS")[-1].value, wall


def summarize(csv_path: str):
    rows = list(csv.DictReader(open(csv_path)))
    print("| script | processes | steps/s, per repeat | median steps/s | median wall (s) | vs 1 process |")
    print("|---|---|---|---|---|---|")
    medians = {}
    for processes in sorted({int(r["processes"]) for r in rows}):
        mine = [r for r in rows if int(r["processes"]) == processes]
        sps = [float(r["steps_per_s"]) for r in mine]
        medians[processes] = np.median(sps)
        print(
            f"| {mine[0]['script']} | {processes} | {', '.join(f'{v:,.0f}' for v in sps)} | "
            f"{np.median(sps):,.0f} | "
            f"{np.median([float(r['wall_s']) for r in mine]):.1f} | {medians[processes] / medians[1]:.2f}x |"
        )


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--script", default="ppo_discrete.py", help="the training script, relative to the repository root"
    )
    parser.add_argument("--nproc", type=int, default=2, help="the processes of the torchrun runs")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default="benchmarks/results/scaling.csv", help="the CSV to write")
    parser.add_argument("--summarize", metavar="CSV", help="only print the table of an existing CSV")
    parser.add_argument("extra", nargs=argparse.REMAINDER, help="after --: flags passed to the script")
    args = parser.parse_args()
    if args.summarize:
        summarize(args.summarize)
        return
    extra = args.extra[1:] if args.extra[:1] == ["--"] else args.extra
    with open(args.out, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS)
        writer.writeheader()
        for repeat in range(args.repeats):
            for processes in (1, args.nproc):  # alternating, so a drift of the machine hits both alike
                steps_per_s, wall = run_once(args.script, processes, extra)
                print(
                    f"{args.script} x{processes}, repeat {repeat}: {steps_per_s:,.0f} steps/s, {wall:.1f} s",
                    flush=True,
                )
                writer.writerow(
                    dict(
                        script=args.script,
                        processes=processes,
                        repeat=repeat,
                        steps_per_s=steps_per_s,
                        wall_s=round(wall, 2),
                    )
                )
                f.flush()
    summarize(args.out)


if __name__ == "__main__":
    main()
