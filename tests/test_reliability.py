"""Checkpoints, exact resume, clean stops on signals, NaN stops, safe checkpoint loading (ppo_discrete.py)."""

import glob
import os
import pickle
import random
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch

import ppo_discrete
from tests.test_scripts import ROOT, read_events

FLAGS = ["--total-timesteps", "30720", "--checkpoint-every", "4096", "--save-model"]  # 60 iterations, CartPole


@pytest.fixture(autouse=True)
def in_tmp_dir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)


def saved_weights(run_dir):
    return torch.load(os.path.join(run_dir, "ppo_discrete.model"), weights_only=True)["state_dict"]


def episode_curve(run_dir):
    return [(e.step, e.value) for e in read_events(run_dir).Scalars("charts/episodic_return")]


def test_resume_continues_bit_for_bit():
    args = dict(total_timesteps=8 * 512, checkpoint_every=2048, save_model=True)
    whole = ppo_discrete.train(ppo_discrete.Args(**args))
    os.makedirs("runs/copy")
    shutil.copy(os.path.join(whole["run_dir"], "checkpoint.pt"), "runs/copy/checkpoint.pt")
    checkpoint = torch.load("runs/copy/checkpoint.pt", weights_only=True)
    assert (checkpoint["global_step"], checkpoint["iteration"]) == (2048, 4)
    resumed = ppo_discrete.train(ppo_discrete.Args(resume="runs/copy/checkpoint.pt"))
    assert resumed["episodes"] == [e for e in whole["episodes"] if e[0] > 2048]
    for key, tensor in saved_weights(whole["run_dir"]).items():
        assert torch.equal(tensor, saved_weights(resumed["run_dir"])[key])


def start(flags):
    return subprocess.Popen([sys.executable, os.path.join(ROOT, "ppo_discrete.py"), *flags],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL])
def test_killed_at_a_random_point_and_resumed_ends_as_the_uninterrupted_run(signum):
    reference = start(FLAGS)
    assert reference.wait(timeout=120) == 0
    (reference_dir,) = glob.glob("runs/*")
    os.rename(reference_dir, "reference")

    process = start(FLAGS)
    while not glob.glob("runs/*/checkpoint.pt"):  # the first periodic checkpoint, then a random moment
        assert process.poll() is None, process.communicate()
        time.sleep(0.02)
    time.sleep(random.uniform(0.0, 0.4))
    assert process.poll() is None, "the run ended before the signal: make it longer"
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=60)
    (run_dir,) = glob.glob("runs/*")
    if signum == signal.SIGKILL:
        assert process.returncode == -signal.SIGKILL
    else:  # a clean stop: checkpoint of the iteration in progress, a message, exit 128 + signal
        assert process.returncode == 128 + signum
        assert "--resume" in stderr and "Traceback" not in stderr
    assert not os.path.exists(os.path.join(run_dir, "ppo_discrete.model"))

    resumed = start(["--resume", os.path.join(run_dir, "checkpoint.pt")])
    stdout, stderr = resumed.communicate(timeout=120)
    assert resumed.returncode == 0, stderr
    assert "resuming" in stdout
    for key, tensor in saved_weights("reference").items():
        assert torch.equal(tensor, saved_weights(run_dir)[key])
    assert episode_curve(run_dir) == episode_curve("reference")  # TensorBoard dropped the replayed points


def test_a_nan_stops_the_run_and_keeps_the_last_good_checkpoint(monkeypatch, capsys):
    original, calls = ppo_discrete.update, []

    def update_going_nan(*args, **kwargs):
        stats = original(*args, **kwargs)
        calls.append(1)
        return {**stats, "value_loss": float("nan")} if len(calls) == 6 else stats

    monkeypatch.setattr(ppo_discrete, "update", update_going_nan)
    with pytest.raises(SystemExit) as exit_info:
        ppo_discrete.train(ppo_discrete.Args(total_timesteps=10 * 512, checkpoint_every=1024))
    assert exit_info.value.code == 3
    error = capsys.readouterr().err
    assert "value_loss (nan)" in error and "step 3,072" in error and "last good checkpoint" in error
    (checkpoint_path,) = glob.glob("runs/*/checkpoint.pt")
    assert torch.load(checkpoint_path, weights_only=True)["global_step"] == 2048


class RunsCode:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_bad_checkpoints_are_refused_without_running_them(tmp_path):
    (tmp_path / "truncated.pt").write_bytes(b"PK\x03\x04 not a whole file")
    with open(tmp_path / "code.pt", "wb") as f:
        pickle.dump({"format": ppo_discrete.CHECKPOINT_FORMAT, "payload": RunsCode()}, f)
    torch.save({"format": "ppo_continuous/checkpoint/1"}, tmp_path / "other.pt")
    cases = [("missing.pt", "no such file"), ("truncated.pt", "not a readable checkpoint"),
             ("code.pt", "not a readable checkpoint"), ("other.pt", "not a ppo_discrete.py checkpoint")]
    for name, message in cases:
        out = subprocess.run([sys.executable, os.path.join(ROOT, "ppo_discrete.py"), "--resume", str(tmp_path / name)],
                             capture_output=True, text=True)
        assert out.returncode == 2 and message in out.stderr and "Traceback" not in out.stderr, out.stderr
    assert not os.path.exists("pwned") and not os.path.exists(tmp_path / "pwned")


def test_resume_refuses_flags_that_differ_from_the_checkpoint(capsys):
    ppo_discrete.train(ppo_discrete.Args(total_timesteps=4 * 512, checkpoint_every=1024))
    (checkpoint_path,) = glob.glob("runs/*/checkpoint.pt")
    with pytest.raises(SystemExit) as exit_info:
        ppo_discrete.train(ppo_discrete.Args(resume=checkpoint_path, learning_rate=1e-3))
    assert exit_info.value.code == 2 and "drop --learning-rate" in capsys.readouterr().err


def test_checkpoint_writes_are_atomic(tmp_path, monkeypatch):
    """A write that dies half-way leaves the previous checkpoint whole."""
    path = str(tmp_path / "checkpoint.pt")
    ppo_discrete.save_checkpoint(path, {"format": ppo_discrete.CHECKPOINT_FORMAT, "global_step": 1})

    def dies_half_way(obj, f):
        f.write(b"PK\x03\x04 half")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", dies_half_way)
    with pytest.raises(OSError):
        ppo_discrete.save_checkpoint(path, {"format": ppo_discrete.CHECKPOINT_FORMAT, "global_step": 2})
    monkeypatch.undo()
    assert ppo_discrete.load_checkpoint(path)["global_step"] == 1


@pytest.mark.parametrize("flags,message", [
    (dict(total_timesteps=0), "--total-timesteps must be a positive integer"),
    (dict(num_envs=-1), "--num-envs must be a positive integer"),
    (dict(num_steps=0), "--num-steps must be a positive integer"),
    (dict(num_minibatches=0), "--num-minibatches must be a positive integer"),
    (dict(update_epochs=0), "--update-epochs must be a positive integer"),
    (dict(gamma=-0.1), "--gamma must be in [0, 1]"),
    (dict(gae_lambda=1.5), "--gae-lambda must be in [0, 1]"),
    (dict(learning_rate=0.0), "--learning-rate must be > 0"),
    (dict(clip_coef=0.0), "--clip-coef must be > 0"),
    (dict(max_grad_norm=-1.0), "--max-grad-norm must be > 0"),
    (dict(ent_coef=-0.01), "--ent-coef must be >= 0"),
    (dict(vf_coef=-1.0), "--vf-coef must be >= 0"),
    (dict(target_kl=0.0), "--target-kl must be > 0"),
    (dict(eval_episodes=-1), "--eval-episodes must be >= 0"),
    (dict(checkpoint_every=-5), "--checkpoint-every must be >= 0"),
    (dict(hidden_sizes=()), "--hidden-sizes must be one or more positive integers"),
    (dict(hidden_sizes=(64, 0)), "--hidden-sizes must be one or more positive integers"),
    (dict(seed=-1), "--seed must be in [0, 2**32)"),
    (dict(torch_threads=-2), "--torch-threads must be >= 0"),
    (dict(exp_name="a/b"), "--exp-name must be a non-empty name"),
    (dict(load_model="m.model", resume="c.pt"), "give one of them"),
])
def test_every_impossible_flag_is_a_one_line_error(flags, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        ppo_discrete.check_args(ppo_discrete.Args(**flags))
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_an_unwritable_run_directory_is_a_one_line_error(tmp_path):
    (tmp_path / "runs").write_text("a file where the runs/ directory should be")
    out = subprocess.run([sys.executable, os.path.join(ROOT, "ppo_discrete.py")], capture_output=True, text=True,
                         cwd=tmp_path)
    assert out.returncode == 2 and "cannot create the directory runs/" in out.stderr and "Traceback" not in out.stderr
