"""Memory over a long run of many episodes: ppo_discrete.py on a toy env whose episodes last one step, with
the resident set size sampled after every iteration. It must stay flat however many episodes end.

    python benchmarks/memory.py --steps 600000     # prints RSS at 11 points of the run
"""

import argparse
import os
import sys

import gymnasium as gym

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import ppo_discrete  # noqa: E402
from tests.toy_envs import CountingEnv  # noqa: E402


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=600_000)
    steps = parser.parse_args().steps
    gym.register("OneStep-v0", entry_point=CountingEnv, kwargs={"episode_length": 1})
    samples, log_iteration = [], ppo_discrete.log_iteration

    def log_and_measure(run, *args):
        log_iteration(run, *args)
        resident_pages = int(open("/proc/self/statm").read().split()[1])
        samples.append((run.global_step, resident_pages * os.sysconf("SC_PAGE_SIZE") / 2**20))

    ppo_discrete.log_iteration = log_and_measure
    ppo_discrete.train(ppo_discrete.Args(env_id="OneStep-v0", total_timesteps=steps, checkpoint_every=0))
    for step, rss in samples[:: max(1, len(samples) // 10)] + samples[-1:]:
        print(f"step {step:>9,} ({step:,} one-step episodes)  RSS {rss:7.1f} MB")


if __name__ == "__main__":
    main()
