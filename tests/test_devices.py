"""The CUDA paths, on a machine without CUDA (tests/conftest.py hides any GPU): the device a run takes and
says, torchrun with more processes than GPUs, bf16 by compute capability, deterministic algorithms and TF32,
and no tensor made on the default device where the batch's device is meant."""

import os

import numpy as np
import pytest
import torch

import ppo_atari
import ppo_discrete
from tests.checks import agent_and_its_own_batch, one_line_error
from tests.test_scripts import SCRIPTS, TINY, in_tmp_dir  # noqa: F401  (in_tmp_dir: autouse)


def fake_gpus(monkeypatch, count):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device: f"Fake GPU {device.index}")


def test_the_tests_run_on_the_cpu():
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "" and not torch.cuda.is_available()


@SCRIPTS
def test_cuda_that_is_not_usable_is_said_and_the_run_goes_on_the_cpu(ppo, capsys):
    device = ppo.run_device(ppo.Args(), given=set())  # --cuda by default
    out = capsys.readouterr().out
    assert device == torch.device("cpu") and out.count("\n") == 2
    assert "note: CUDA is not usable here (this torch has no CUDA): the run goes on cpu" in out
    assert out.endswith("device: cpu\n")
    assert ppo.run_device(ppo.Args(cuda=False), given={"cuda"}) == torch.device("cpu")
    assert capsys.readouterr().out == "device: cpu\n"  # --no-cuda: no note
    line = one_line_error(capsys, lambda: ppo.run_device(ppo.Args(), given={"cuda"}))
    assert line == "error: --cuda: this torch has no CUDA; drop --cuda to train on the CPU"


def test_a_gpu_is_taken_by_local_rank_and_named(monkeypatch, capsys):
    fake_gpus(monkeypatch, 2)
    assert ppo_discrete.run_device(ppo_discrete.Args(), given=set()) == torch.device("cuda", 0)
    monkeypatch.setenv("LOCAL_RANK", "1")  # torchrun's second process on this machine
    assert ppo_atari.run_device(ppo_atari.Args(), given=set()) == torch.device("cuda", 1)
    assert capsys.readouterr().out == "device: cuda:0 (Fake GPU 0)\ndevice: cuda:1 (Fake GPU 1)\n"


@SCRIPTS
def test_an_edit_of_training_device_is_the_device_of_the_whole_run(ppo, monkeypatch, capsys):
    """train() and the harness (its checks, evaluation, the device it says) take the device from
    training_device alone: an edit there (a GPU of one's choice, "mps") reaches every part."""
    chosen = []

    def edited(args):
        chosen.append(torch.device("cpu", 0))
        return chosen[-1]

    monkeypatch.setattr(ppo, "training_device", edited)
    summary = ppo.train(ppo.Args(**TINY[ppo], eval_episodes=1, checkpoint_every=0))
    assert len(chosen) == 2  # the harness's, said, and train()'s
    assert "device: cpu:0\n" in capsys.readouterr().out and len(summary["eval_returns"]) == 1


def test_torchrun_with_more_processes_than_gpus_says_to_use_no_cuda(monkeypatch, capsys):
    fake_gpus(monkeypatch, 1)
    for name, value in dict(WORLD_SIZE="2", RANK="0", LOCAL_RANK="0", LOCAL_WORLD_SIZE="2").items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(torch.distributed, "init_process_group", pytest.fail)  # refused before NCCL starts
    line = one_line_error(capsys, lambda: ppo_atari.Run.start(ppo_atari.Args()))
    assert line == (
        "error: torchrun starts 2 processes on a node with 1 GPU(s): NCCL takes one GPU a process; "
        "start as many (--nproc_per_node), or train on the CPUs with --no-cuda"
    )


@pytest.mark.parametrize("capability,bf16", [((7, 5), False), ((8, 0), True), ((9, 0), True)])
def test_auto_precision_takes_bf16_on_gpus_with_bf16_convolutions(capability, bf16, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)  # as torch says of a T4: emulated
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device: capability)
    assert ppo_atari.use_bf16("auto", torch.device("cuda", 0)) is bf16
    assert ppo_atari.use_bf16("fp32", torch.device("cuda", 0)) is False
    assert ppo_atari.use_bf16("bf16", torch.device("cuda", 0)) is True  # named: as asked
    assert ppo_atari.use_bf16("auto", torch.device("cpu")) is False


@pytest.fixture
def numerics():
    """Puts torch's global numerics back after the test."""
    backends = torch.backends.cuda.matmul, torch.backends.cudnn
    before = [backend.allow_tf32 for backend in backends], torch.backends.cudnn.deterministic
    yield
    for backend, allowed in zip(backends, before[0]):
        backend.allow_tf32 = allowed
    torch.backends.cudnn.deterministic = before[1]
    torch.use_deterministic_algorithms(False)


@SCRIPTS
def test_deterministic_and_tf32_flags_set_cuda_numerics(ppo, numerics, monkeypatch):
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    ppo.set_numerics(ppo.Args(), torch.device("cpu"))  # CPU runs are deterministic: no global switch
    assert not torch.are_deterministic_algorithms_enabled() and "CUBLAS_WORKSPACE_CONFIG" not in os.environ
    assert torch.backends.cudnn.allow_tf32  # torch's own default: TF32 for cuDNN's convolutions
    ppo.set_numerics(ppo.Args(), torch.device("cuda", 0))
    assert (
        torch.are_deterministic_algorithms_enabled() and torch.is_deterministic_algorithms_warn_only_enabled()
    )
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8" and torch.backends.cudnn.deterministic
    assert not torch.backends.cudnn.allow_tf32 and not torch.backends.cuda.matmul.allow_tf32
    ppo.set_numerics(ppo.Args(tf32=True, torch_deterministic=False), torch.device("cuda", 0))
    assert torch.backends.cudnn.allow_tf32 and torch.backends.cuda.matmul.allow_tf32
    assert not torch.backends.cudnn.deterministic


@SCRIPTS
@pytest.mark.parametrize("target_kl", [None, -1.0], ids=["steps", "stopped-at-once"])
def test_the_update_makes_no_tensor_off_the_batch_device(ppo, target_kl):
    """A tensor made on the default device (the CPU) beside the batch's (a GPU) fails there at once: here the
    default device is meta, the batch's the CPU. -1: the first minibatch is over --target-kl, no step at
    all."""
    agent, batch, _ = agent_and_its_own_batch(ppo)
    optimizer = torch.optim.Adam(agent.parameters(), lr=1e-3)
    args = ppo.Args(num_minibatches=4, update_epochs=1, target_kl=target_kl)
    schedule = ppo.Schedule(1.0, args.clip_coef, args.ent_coef, args.kl_beta)
    ppo.update(
        agent,
        optimizer,
        batch,
        ppo.Args(num_minibatches=4, update_epochs=1),
        np.random.default_rng(0),
        ppo.ppo_loss,
        schedule,
    )  # Adam's state exists (its step counter is made on the default device)
    with torch.device("meta"):
        stats = ppo.update(agent, optimizer, batch, args, np.random.default_rng(0), ppo.ppo_loss, schedule)
    assert stats["gradient_steps"] == (4 if target_kl is None else 0) and np.isfinite(stats["grad_norm"])


@SCRIPTS
def test_the_checkpoint_snapshot_is_copied_off_the_device(ppo):
    """A sticky CUDA error makes every read of the device fail: the last iteration's snapshot must be on the
    CPU already. A tensor on the meta device, which holds no data, cannot be copied there."""
    snapshot = ppo.as_data({"agent": {"weight": torch.ones(2)}, "steps": [np.zeros(3)]})
    assert snapshot["agent"]["weight"].device == torch.device("cpu") and snapshot["steps"][0].shape == (3,)
    with pytest.raises(NotImplementedError, match="meta"):
        ppo.as_data({"agent": {"weight": torch.ones(2, device="meta")}})
