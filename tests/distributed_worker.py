"""Run by tests/test_distributed.py under torchrun: trains with one of the scripts, then saves this rank's
parameters to OUT_DIR/rank{RANK}.pt.

    torchrun --standalone --nproc_per_node 2 tests/distributed_worker.py ppo_atari OUT_DIR \
        --total-timesteps 1024
"""

import importlib
import os
import sys

import torch
import tyro

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

script, out_dir, flags = sys.argv[1], sys.argv[2], sys.argv[3:]
ppo = importlib.import_module(script)
summary = ppo.train(tyro.cli(ppo.Args, args=flags))
torch.save(summary["agent"].state_dict(), os.path.join(out_dir, f"rank{os.environ['RANK']}.pt"))
