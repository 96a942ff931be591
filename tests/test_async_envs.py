"""ppo_atari.py's envs in worker processes (--async-envs on): the same games as in one process, the same
training to the bit, a worker's error in one line, and no worker left behind by Ctrl-C or SIGTERM."""

import contextlib
import glob
import os
import signal
import subprocess
import sys
import time

import gymnasium as gym
import numpy as np
import pytest
import torch

import ppo_atari as ppo
from tests.checks import one_line_error, wrap_envs
from tests.test_atari import untrained_rollouts
from tests.test_scripts import TINY, in_tmp_dir, script_path  # noqa: F401  (in_tmp_dir: autouse)


def test_workers_play_the_same_games_as_one_process():
    """Same seeds and actions: the same frames, clipped rewards, lost lives (episode ends) and whole games."""
    plays = {}
    for mode in ["off", "on"]:
        with contextlib.closing(untrained_rollouts(ppo.Args(num_envs=2, async_envs=mode))) as play:
            plays[mode] = [next(play) for _ in range(3)]  # 384 steps of each env: games end, lives are lost
    assert isinstance(ppo.make_envs(ppo.Args(num_envs=2, async_envs="on")), gym.vector.AsyncVectorEnv)
    for (rollout, games), (reference, reference_games) in zip(plays["on"], plays["off"]):
        for name in ["obs", "actions", "rewards", "dones", "values", "next_value"]:
            np.testing.assert_array_equal(getattr(rollout, name), getattr(reference, name), err_msg=name)
        assert games == reference_games
    assert sum(len(games) for _, games in plays["off"]) > 0 and any(r.dones.any() for r, _ in plays["off"])


@pytest.mark.slow
def test_training_with_workers_ends_with_the_weights_of_one_process():
    """With workers: a video recorded by the first env (in its worker), an evaluation, a checkpoint
    resumed."""
    one_process = ppo.train(ppo.Args(**TINY[ppo], async_envs="off", save_model=True))
    summary = ppo.train(ppo.Args(**TINY[ppo], async_envs="on", save_model=True, checkpoint_every=256,
                                 capture_video=True, eval_episodes=1))
    reference = torch.load(one_process["model_path"], weights_only=True)["agent"]
    for name, weight in torch.load(summary["model_path"], weights_only=True)["agent"].items():
        assert torch.equal(weight, reference[name]), name
    assert any(name.endswith(".mp4") for name in os.listdir(f"videos/{os.path.basename(summary['run_dir'])}"))
    assert len(summary["eval_returns"]) == 1
    resumed = ppo.train(ppo.Args(resume=os.path.join(summary["run_dir"], "checkpoint.pt")))
    assert os.path.exists(resumed["model_path"])  # resumed with workers: new games, as without


class FailsAfter(gym.Wrapper):
    def __init__(self, env, steps):
        super().__init__(env)
        self.steps = steps

    def step(self, action):
        self.steps -= 1
        if self.steps == 0:
            raise RuntimeError("the emulator crashed")
        return self.env.step(action)


def test_an_env_that_fails_in_its_worker_is_one_line(monkeypatch, capsys):
    wrap_envs(ppo, monkeypatch, lambda env: FailsAfter(env, 100))  # the workers are forked: they make these
    line = one_line_error(capsys, lambda: ppo.train(ppo.Args(**TINY[ppo], async_envs="on")))
    assert line.startswith("error: env 0 failed in its worker process: RuntimeError: the emulator crashed; "
                           "stopped at step 0")


def children_of(pid: int) -> list[int]:
    children = []
    for stat in glob.glob("/proc/[0-9]*/stat"):
        with contextlib.suppress(OSError):
            fields = open(stat).read().rsplit(")", 1)[1].split()
            if int(fields[1]) == pid:  # the parent's pid
                children.append(int(stat.split("/")[2]))
    return children


def gone(pid: int) -> bool:
    with contextlib.suppress(OSError):
        return open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] == "Z"  # a zombie holds nothing
    return True


def test_ctrl_c_and_sigterm_leave_no_worker_behind():
    flags = ["--async-envs", "on", "--num-envs", "2", "--num-steps", "64", "--num-minibatches", "2",
             "--update-epochs", "1", "--total-timesteps", "100000", "--no-cuda"]
    for signum, to_group in [(signal.SIGINT, True), (signal.SIGTERM, False)]:  # Ctrl-C: the terminal's group
        process = subprocess.Popen([sys.executable, script_path(ppo), *flags], stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True, start_new_session=True)
        while not glob.glob("runs/*/events.out.tfevents.*") or len(children_of(process.pid)) < 2:
            assert process.poll() is None, process.communicate()
            time.sleep(0.1)
        workers = children_of(process.pid)
        time.sleep(1.0)  # mid-iteration
        if to_group:
            os.killpg(process.pid, signum)
        else:
            process.send_signal(signum)
        _, stderr = process.communicate(timeout=120)
        assert process.returncode == 128 + signum and "Traceback" not in stderr, stderr[-2000:]
        assert "stopped at step" in stderr
        for _ in range(50):
            if all(gone(pid) for pid in workers):
                break
            time.sleep(0.1)
        assert all(gone(pid) for pid in workers), workers
        for path in glob.glob("runs/*"):
            os.rename(path, f"{path}-{signum}")  # the next run's directory is its own
