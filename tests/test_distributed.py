"""Data-parallel runs under torchrun, 2 CPU processes with gloo: identical parameters on every rank, learning like
one process with all the envs, rank 0 alone logging, resume, and no distributed state without torchrun."""

import copy
import glob
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

import ppo_atari
import ppo_continuous
import ppo_discrete
from tests.test_reliability import assert_same_model
from tests.test_scripts import episode_curve
from tests.test_scripts import ROOT, TINY, in_tmp_dir, read_events, script_path  # noqa: F401  (in_tmp_dir: autouse)

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
WORKER = os.path.join(ROOT, "tests", "distributed_worker.py")


def flags(settings: dict) -> list[str]:
    """Args fields as command-line flags."""
    names = {key: key.replace("_", "-") for key in settings}
    return [(f"--{names[key]}" if value else f"--no-{names[key]}") if isinstance(value, bool) else f"--{names[key]}={value}"
            for key, value in settings.items()]


def run(command: list[str], **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, **kwargs)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.mark.parametrize("ppo", list(TINY), ids=lambda module: module.__name__)
def test_ranks_hold_identical_parameters_after_updates(ppo, tmp_path):
    """Each rank steps its own envs on its own data; only the averaged gradient keeps the networks equal."""
    run([*TORCHRUN, WORKER, ppo.__name__, str(tmp_path), *flags(TINY[ppo])])
    rank0, rank1 = torch.load(tmp_path / "rank0.pt"), torch.load(tmp_path / "rank1.pt")
    torch.manual_seed(ppo.Args.seed)  # the initial network of both ranks
    initial = ppo.Agent(*{ppo_discrete: (4, [2]), ppo_continuous: (3, 1), ppo_atari: (4,)}[ppo]).state_dict()
    for name in rank0:
        assert torch.equal(rank0[name], rank1[name]), name
    assert all(rank0[name].shape == initial[name].shape for name in rank0)
    assert any(not torch.equal(rank0[name], initial[name]) for name in rank0)  # the updates did move them


def test_rank_0_alone_logs_the_episodes_of_every_rank(tmp_path):
    settings = dict(TINY[ppo_discrete], total_timesteps=4096, save_model=True, checkpoint_every=2048)
    result = run([*TORCHRUN, script_path(ppo_discrete), *flags(settings)])
    (run_dir,) = glob.glob("runs/*")
    assert {"checkpoint.pt", "ppo_discrete.model"} <= set(os.listdir(run_dir))
    assert len(glob.glob(f"{run_dir}/events.out.tfevents.*")) == 1
    assert result.stdout.count("model saved to") == 1
    # 2 ranks x 2 envs: the 4 envs of rank 0 and 1 together; rank 0's envs alone would give about half as many
    one_process = ppo_discrete.train(ppo_discrete.Args(**settings))
    logged = read_events(run_dir).Scalars("charts/episodic_return")
    one_process_logged = read_events(one_process["run_dir"]).Scalars("charts/episodic_return")
    assert 0.8 < len(logged) / len(one_process_logged) < 1.25
    assert [e.step for e in logged] == sorted(e.step for e in logged)
    assert {e.step for e in read_events(run_dir).Scalars("charts/SPS")} == {512 * i for i in range(1, 9)}
    hyperparameters = read_events(run_dir).Tensors("hyperparameters/text_summary")[0].tensor_proto.string_val[0]
    assert b"|processes|2|" in hyperparameters and b"|num_envs|4|" in hyperparameters


def test_two_processes_learn_like_one_with_all_the_envs():
    """CartPole, 50k steps, 4 envs in all: 2 processes x 2 envs vs 1 process x 4 envs, seeds 1-3."""
    def final_returns(launcher: list[str], name: str, side_by_side: int) -> list[float]:
        os.makedirs(name)
        for first in range(1, 4, side_by_side):  # seeds 1-3, at most one process a core
            processes = [subprocess.Popen([*launcher, script_path(ppo_discrete), "--total-timesteps=50000",
                                           f"--seed={seed}"], cwd=name, stdout=subprocess.DEVNULL)
                         for seed in range(first, min(first + side_by_side, 4))]
            assert [process.wait(timeout=600) for process in processes] == [0] * len(processes)
        run_dirs = sorted(glob.glob(f"{name}/runs/*"), key=lambda run_dir: int(run_dir.split("__")[2]))  # by seed
        return [np.mean([e.value for e in read_events(run_dir).Scalars("charts/episodic_return")][-20:])
                for run_dir in run_dirs]

    one, two = final_returns([sys.executable], "one", side_by_side=2), final_returns(TORCHRUN, "two", side_by_side=1)
    print(f"final 20-episode means: 1 process {one}, 2 processes {two}")
    assert min(one + two) > 100  # both learn (random play: ~22)
    spread = np.sqrt((np.var(one, ddof=1) + np.var(two, ddof=1)) / 3)  # standard error of the difference of means
    assert abs(np.mean(two) - np.mean(one)) < 3 * spread + 30  # the seeds spread by ~20 at 50k steps (6-seed benchmark)


@pytest.mark.parametrize("ppo,iterations", [(ppo_discrete, 80), (ppo_continuous, 80)], ids=["ppo_discrete", "ppo_continuous"])
def test_stopped_run_resumes_under_torchrun_bit_for_bit(ppo, iterations):
    """SIGTERM to torchrun at a random moment: every rank stops at the same iteration, rank 0 checkpoints (with
    both ranks' generators, envs and, for ppo_continuous, statistics), and the resumed 2-process run ends with
    exactly the weights and statistics of the uninterrupted one."""
    settings = dict(TINY[ppo], total_timesteps=iterations * 512, save_model=True, checkpoint_every=0)
    run([*TORCHRUN, script_path(ppo), *flags(settings)])
    (reference_dir,) = glob.glob("runs/*")
    os.rename(reference_dir, "reference")
    process = subprocess.Popen([*TORCHRUN, script_path(ppo), *flags(settings)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    while not glob.glob("runs/*/events.out.tfevents.*"):
        time.sleep(0.05)
    time.sleep(np.random.default_rng().uniform(0.3, 1.5))
    assert process.poll() is None, "the run ended before the signal: make it longer"
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert stderr.count("stopped at step") == 1, stderr[-3000:]
    (run_dir,) = glob.glob("runs/*")
    assert len(torch.load(os.path.join(run_dir, "checkpoint.pt"))["ranks"]) == 2
    run([*TORCHRUN, script_path(ppo), f"--resume={os.path.join(run_dir, 'checkpoint.pt')}"])
    assert_same_model(ppo, "reference", run_dir)  # weights and, for ppo_continuous, statistics
    assert episode_curve(run_dir) == episode_curve("reference")


def test_resume_needs_as_many_processes(tmp_path):
    settings = dict(TINY[ppo_discrete], total_timesteps=4 * 512, checkpoint_every=1024)
    run([*TORCHRUN, script_path(ppo_discrete), *flags(settings)])
    (checkpoint,) = glob.glob("runs/*/checkpoint.pt")
    result = subprocess.run([sys.executable, script_path(ppo_discrete), f"--resume={checkpoint}"],
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("error: --resume") and "2 process(es)" in result.stderr


def test_envs_that_do_not_split_over_the_processes_are_an_error():
    result = subprocess.run([*TORCHRUN, script_path(ppo_discrete), "--num-envs=3"], capture_output=True, text=True)
    assert result.returncode != 0
    assert "error: --num-envs 3 does not split evenly over 2 torchrun processes" in result.stderr


@pytest.mark.parametrize("ppo", [ppo_discrete, ppo_continuous], ids=lambda module: module.__name__)
def test_without_torchrun_there_is_no_distributed_state(ppo, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("init_process_group called without torchrun")

    monkeypatch.setattr(torch.distributed, "init_process_group", refuse)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    summary = ppo.train(ppo.Args(**TINY[ppo]))
    assert not torch.distributed.is_initialized() and summary["recent_returns"]


def test_two_nodes_join_through_the_master_address(tmp_path):
    """The README's multi-node launch, with both nodes on this machine: rendezvous at 127.0.0.1."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    node = [sys.executable, "-m", "torch.distributed.run", "--nnodes=2", "--nproc_per_node=1",
            "--master_addr=127.0.0.1", f"--master_port={port}"]
    nodes = [subprocess.Popen([*node, f"--node_rank={rank}", WORKER, "ppo_discrete", str(tmp_path), *flags(TINY[ppo_discrete])],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for rank in (0, 1)]
    for process in nodes:
        _, stderr = process.communicate(timeout=300)
        assert process.returncode == 0, stderr[-3000:]
    rank0, rank1 = torch.load(tmp_path / "rank0.pt"), torch.load(tmp_path / "rank1.pt")
    assert all(torch.equal(rank0[name], rank1[name]) for name in rank0)


def test_evaluating_a_saved_model_under_torchrun_is_an_error(tmp_path):
    model_path = ppo_discrete.train(ppo_discrete.Args(**TINY[ppo_discrete], save_model=True))["model_path"]
    result = subprocess.run([*TORCHRUN, script_path(ppo_discrete), f"--load-model={model_path}"], capture_output=True, text=True)
    assert result.returncode != 0
    assert "error: --load-model evaluates in one process: run it with python ppo_discrete.py" in result.stderr


def test_normalization_statistics_merge_the_samples_of_every_rank(monkeypatch):
    """Two ranks share statistics, each adds its own samples (one row at a time, as the rollout does); after
    merge_over_ranks rank 0 holds the mean and variance of all the samples, computed here in one go."""
    rng = np.random.default_rng(0)
    shared, mine, theirs = rng.normal(3.0, 2.0, (50, 3)), rng.normal(-1.0, 0.5, (40, 3)), rng.normal(5.0, 4.0, (70, 3))
    ranks = [ppo_continuous.EnvState(None, None, None, ppo_continuous.RunningMeanStd(np.zeros(3), np.ones(3)), None,
                                     None) for _ in range(2)]
    for state in ranks:
        state.obs_rms.update(shared)
    before = copy.deepcopy(ranks[0])
    for row in mine:
        ranks[0].obs_rms.update(row[None])
    ranks[1].obs_rms.update(theirs)
    monkeypatch.setattr(ppo_continuous.dist, "is_initialized", lambda: True)
    rank1_added = []  # what rank 1 contributes to the all-gather
    monkeypatch.setattr(ppo_continuous, "gather_from_ranks", lambda items: rank1_added.extend(items) or items)
    ppo_continuous.merge_over_ranks(ranks[1], before)
    monkeypatch.setattr(ppo_continuous, "gather_from_ranks", lambda items: items + rank1_added)
    ppo_continuous.merge_over_ranks(ranks[0], before)
    everything = np.concatenate([shared, mine, theirs])
    assert ranks[0].obs_rms.count == 160
    np.testing.assert_allclose(ranks[0].obs_rms.mean, everything.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(ranks[0].obs_rms.var, everything.var(axis=0), rtol=1e-10)
