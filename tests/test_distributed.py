"""ppo_atari.py's data-parallel runs under torchrun, 2 CPU processes with gloo: identical parameters on every
rank, the gradient averaged over the processes, rank 0 alone logging, resume, and no distributed state without
torchrun."""

import glob
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch

import ppo_atari
from tests.checks import one_line_error
# in_tmp_dir: an autouse fixture
from tests.test_scripts import ROOT, TINY, in_tmp_dir, read_events, script_path  # noqa: F401

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
WORKER = os.path.join(ROOT, "tests", "distributed_worker.py")


def flags(settings: dict) -> list[str]:
    """Args fields as command-line flags."""
    names = {key: key.replace("_", "-") for key in settings}
    return [
        (f"--{names[key]}" if value else f"--no-{names[key]}")
        if isinstance(value, bool)
        else f"--{names[key]}={value}"
        for key, value in settings.items()
    ]


def run(command: list[str], **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, **kwargs)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


ppo = ppo_atari
SETTINGS = dict(TINY[ppo_atari], total_timesteps=1024, num_steps=256)  # 2 envs in all: 1 a process


def test_the_update_averages_the_gradient_over_processes(monkeypatch):
    """With a faked process group of 2, each parameter's gradient becomes the mean of this process's and the
    other's, computed here by hand."""
    torch.manual_seed(0)
    agent = ppo.Agent(4)
    for parameter in agent.parameters():
        parameter.grad = torch.randn_like(parameter)
    mine = [parameter.grad.clone() for parameter in agent.parameters()]
    theirs = [torch.randn_like(parameter) for parameter in agent.parameters()]

    def all_reduce(tensor):  # the sum over the two processes, in place
        tensor += torch.cat([grad.flatten() for grad in theirs])

    monkeypatch.setattr(ppo.dist, "is_initialized", lambda: True)
    monkeypatch.setattr(ppo.dist, "get_world_size", lambda: 2)
    monkeypatch.setattr(ppo.dist, "all_reduce", all_reduce)
    ppo.average_gradients(agent)
    for parameter, own, other in zip(agent.parameters(), mine, theirs):
        torch.testing.assert_close(parameter.grad, (own + other) / 2)


@pytest.mark.slow
def test_rank_0_alone_logs_the_episodes_of_every_rank(tmp_path):
    settings = dict(SETTINGS, total_timesteps=2048, save_model=True, checkpoint_every=1024, async_envs="on")
    result = run([*TORCHRUN, script_path(ppo), *flags(settings)])  # each rank's env in a worker process
    (run_dir,) = glob.glob("runs/*")
    assert {"checkpoint.pt", "ppo_atari.model"} <= set(os.listdir(run_dir))
    assert len(glob.glob(f"{run_dir}/events.out.tfevents.*")) == 1
    assert result.stdout.count("model saved to") == 1
    # 2 ranks x 1 env, 1,024 steps each: rank 0's env alone plays 4 frames a step (and a few no-ops at each
    # game's start), about 4,096 frames; the games logged hold far more, so rank 1's are among them
    lengths = read_events(run_dir).Scalars("charts/episodic_length")
    assert sum(e.value for e in lengths) > 1.3 * 4 * 1024
    assert [e.step for e in lengths] == sorted(e.step for e in lengths)
    assert {e.step for e in read_events(run_dir).Scalars("charts/SPS")} == {512 * i for i in range(1, 5)}
    hyperparameters = (
        read_events(run_dir).Tensors("hyperparameters/text_summary")[0].tensor_proto.string_val[0]
    )
    assert b"|processes|2|" in hyperparameters and b"|num_envs|2|" in hyperparameters


@pytest.mark.slow
def test_a_stopped_torchrun_resumes_with_every_process(tmp_path, capsys):
    """SIGTERM to torchrun: every rank stops at the same iteration, rank 0 checkpoints both ranks' generators,
    and the run goes on with 2 processes (python alone is refused)."""
    settings = dict(SETTINGS, total_timesteps=8 * 128, num_steps=64, checkpoint_every=0)
    process = subprocess.Popen([*TORCHRUN, script_path(ppo), *flags(settings)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    while not glob.glob("runs/*/events.out.tfevents.*"):
        time.sleep(0.05)
    time.sleep(1.0)
    assert process.poll() is None, "the run ended before the signal: make it longer"
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert stderr.count("stopped at step") == 1, stderr[-3000:]
    (checkpoint,) = glob.glob("runs/*/checkpoint.pt")
    saved = torch.load(checkpoint)
    assert len(saved["ranks"]) == 2 and saved["ranks"][0]["generator"] != saved["ranks"][1]["generator"]
    line = one_line_error(capsys, lambda: ppo.train(ppo.Args(resume=checkpoint)))  # one process
    assert line.startswith("error: --resume") and "2 process(es)" in line
    resumed = run([*TORCHRUN, script_path(ppo), f"--resume={checkpoint}", ])
    assert resumed.stdout.count("resuming") == 1 and f"step {8 * 128:,} of" in resumed.stdout


def test_envs_that_do_not_split_over_the_processes_are_an_error(capsys):
    line = one_line_error(capsys, lambda: ppo.check_args(ppo.Args(num_envs=3), world_size=2))
    assert line == "error: --num-envs 3 does not split evenly over 2 torchrun processes"


def test_without_torchrun_there_is_no_distributed_state(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("init_process_group called without torchrun")

    monkeypatch.setattr(torch.distributed, "init_process_group", refuse)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    summary = ppo.train(ppo.Args(**SETTINGS))
    assert not torch.distributed.is_initialized() and summary["recent_returns"]


@pytest.mark.slow
def test_two_nodes_join_through_the_master_address_and_hold_identical_parameters(tmp_path):
    """The README's multi-node launch, with both nodes on this machine (rendezvous at 127.0.0.1). Each rank
    steps its own envs on its own data; only the averaged gradient keeps the networks equal."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    node = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nnodes=2",
        "--nproc_per_node=1",
        "--master_addr=127.0.0.1",
        f"--master_port={port}",
    ]
    nodes = [
        subprocess.Popen(
            [*node, f"--node_rank={rank}", WORKER, "ppo_atari", str(tmp_path), *flags(SETTINGS)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for rank in (0, 1)
    ]
    for process in nodes:
        _, stderr = process.communicate(timeout=300)
        assert process.returncode == 0, stderr[-3000:]
    rank0, rank1 = torch.load(tmp_path / "rank0.pt"), torch.load(tmp_path / "rank1.pt")
    torch.manual_seed(ppo.Args.seed)  # the initial network of both ranks
    initial = ppo.Agent(4).state_dict()
    for name in rank0:
        assert torch.equal(rank0[name], rank1[name]), name
    assert all(rank0[name].shape == initial[name].shape for name in rank0)
    assert any(not torch.equal(rank0[name], initial[name]) for name in rank0)  # the updates did move them


def test_evaluating_a_saved_model_under_torchrun_is_an_error(tmp_path):
    """Refused before the file is read (this one does not exist)."""
    result = subprocess.run(
        [*TORCHRUN, script_path(ppo), "--load-model=model_of_any_run.model"], capture_output=True, text=True
    )
    assert result.returncode != 0
    assert "error: --load-model evaluates in one process: run it with python ppo_atari.py" in result.stderr
