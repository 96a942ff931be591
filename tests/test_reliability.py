"""Checkpoints, exact resume, clean stops on signals, NaN stops, safe checkpoint loading, bad input
(ppo_discrete.py and ppo_continuous.py)."""

import fcntl
import glob
import os
import random
import shutil
import signal
import subprocess
import sys
import time

import gymnasium as gym
import pytest
import torch
from gymnasium.envs.classic_control import CartPoleEnv, PendulumEnv

import ppo_atari
import ppo_continuous
import ppo_discrete
import tests.toy_envs  # noqa: F401  (registers the custom envs)
from tests.checks import edit_agents, one_line_error, wrap_envs
from tests.test_scripts import ROOT, SCRIPTS, TINY, episode_curve, in_tmp_dir, read_events  # noqa: F401
from tests.test_scripts import VECTOR_SCRIPTS as EXACT  # the scripts whose envs' state a checkpoint holds

# 8 iterations, a checkpoint after the 4th; MuJoCo for the continuous script (its state is saved whole); an
# iteration is 512 steps, 128 for Atari (its network costs 25 times an MLP's)
SMALL = {
    ppo_discrete: dict(total_timesteps=8 * 512, checkpoint_every=2048),
    ppo_continuous: dict(env_id="HalfCheetah-v5", total_timesteps=8 * 512, num_steps=512, num_minibatches=4,
                         update_epochs=2, checkpoint_every=2048),
    ppo_atari: dict(env_id="ALE/Breakout-v5", total_timesteps=8 * 128, num_envs=2, num_steps=64,
                    num_minibatches=4, update_epochs=1, checkpoint_every=512),
}
ITERATION = {
    ppo: ppo.Args(**settings).num_envs * ppo.Args(**settings).num_steps for ppo, settings in SMALL.items()
}
# 30 (CartPole) or 40 (Pendulum) iterations, for runs killed at a random moment
FLAGS = {
    ppo_discrete: ["--total-timesteps", "15360", "--checkpoint-every", "2048", "--save-model"],
    ppo_continuous: ["--env-id", "Pendulum-v1", "--num-steps", "256", "--num-minibatches", "4",
                     "--update-epochs", "2", "--total-timesteps", "10240", "--checkpoint-every", "1024",
                     "--save-model"],
}


def saved_model(ppo, run_dir):
    return torch.load(os.path.join(run_dir, f"{ppo.__name__}.model"), weights_only=True)


def assert_same_model(ppo, first_dir, second_dir):
    """The same weights and (ppo_continuous.py) running statistics, bit for bit."""
    first, second = saved_model(ppo, first_dir), saved_model(ppo, second_dir)
    for key, tensor in first["agent"].items():
        assert torch.equal(tensor, second["agent"][key]), key
    for name, statistics in first["state"].items():
        for key, value in (statistics.items() if name.endswith("_rms") and statistics else []):
            assert torch.equal(value, second["state"][name][key]), (name, key)


def copy_of_checkpoint(run_dir: str) -> str:
    """The run's checkpoint.pt copied to runs/copy/, where a resume goes on: the run's own stays as it was."""
    os.makedirs("runs/copy")
    return shutil.copy(os.path.join(run_dir, "checkpoint.pt"), "runs/copy/checkpoint.pt")


@EXACT
def test_resume_continues_bit_for_bit(ppo):
    whole = ppo.train(ppo.Args(**SMALL[ppo], save_model=True))
    copy = copy_of_checkpoint(whole["run_dir"])
    checkpoint = torch.load(copy, weights_only=True)
    assert (checkpoint["counters"]["global_step"], checkpoint["counters"]["iteration"]) == (2048, 4)
    resumed = ppo.train(ppo.Args(resume=copy))
    assert episode_curve(resumed["run_dir"]) == [e for e in episode_curve(whole["run_dir"]) if e[0] > 2048]
    assert_same_model(ppo, whole["run_dir"], resumed["run_dir"])
    evaluated = ppo.evaluate_saved_model(ppo.Args(load_model=resumed["model_path"], eval_episodes=1))
    # the model of a resumed run loads (its --resume is not carried)
    assert len(evaluated["eval_returns"]) == 1


def test_a_resumed_episode_keeps_its_time_limit_count():
    # MountainCar-v0: a young policy never reaches the flag, so every episode is cut at 200 steps; the
    # checkpoint at step 2,048 (512 steps of each of 4 envs) falls 112 steps into the third episodes, which
    # end 88 steps later
    whole = ppo_discrete.train(ppo_discrete.Args(**SMALL[ppo_discrete], env_id="MountainCar-v0"))
    copy = copy_of_checkpoint(whole["run_dir"])
    resumed = ppo_discrete.train(ppo_discrete.Args(resume=copy))
    assert episode_curve(resumed["run_dir"])[:4] == [(600 * 4, -200.0)] * 4
    assert episode_curve(resumed["run_dir"]) == [e for e in episode_curve(whole["run_dir"]) if e[0] > 2048]


@SCRIPTS
def test_resume_goes_on_with_the_adapted_kl_beta(ppo):
    whole = ppo.train(ppo.Args(**SMALL[ppo], objective="kl-adaptive", save_model=True))
    copy = copy_of_checkpoint(whole["run_dir"])
    saved_beta = torch.load(copy, weights_only=True)["counters"]["kl_beta"]
    assert saved_beta != ppo.Args.kl_beta  # adapted in the first four updates
    resumed = ppo.train(ppo.Args(resume=copy))
    first_resumed = read_events(resumed["run_dir"]).Scalars("charts/kl_beta")[0]
    assert first_resumed.step == 5 * ITERATION[ppo] and first_resumed.value == saved_beta


@EXACT
def test_an_error_mid_run_keeps_the_last_iteration_done_and_resumes_from_it_bit_for_bit(
    ppo, monkeypatch, capsys
):
    whole = ppo.train(ppo.Args(**SMALL[ppo], save_model=True))
    original, calls = ppo.update, []

    def update_that_fails(*args, **kwargs):  # an env or an edit that raises in the 7th of 8 iterations
        calls.append(1)
        if len(calls) == 7:
            raise RuntimeError("the simulator diverged")
        return original(*args, **kwargs)

    monkeypatch.setattr(ppo, "update", update_that_fails)
    with pytest.raises(RuntimeError, match="diverged"):
        ppo.train(ppo.Args(**SMALL[ppo], save_model=True))
    (path,) = [
        path for path in glob.glob("runs/*/checkpoint.pt") if os.path.dirname(path) != whole["run_dir"]
    ]
    # the 7th update failed: the run stands at the 6th iteration (3,072 steps), whose checkpoint it wrote
    assert (
        f"RuntimeError at step 3,072: the logs keep every point, the last good checkpoint is {path}"
        in capsys.readouterr().err
    )
    # not the periodic one of the 4th
    assert torch.load(path, weights_only=True)["counters"]["iteration"] == 6
    monkeypatch.setattr(ppo, "update", original)
    resumed = ppo.train(ppo.Args(resume=path))
    assert_same_model(ppo, whole["run_dir"], resumed["run_dir"])


@pytest.mark.slow
def test_atari_resume_restores_the_learner_and_starts_new_games(capsys):
    settings = dict(SMALL[ppo_atari], total_timesteps=4 * 128, checkpoint_every=256)
    whole = ppo_atari.train(ppo_atari.Args(**settings, save_model=True))
    checkpoint_path = os.path.join(whole["run_dir"], "checkpoint.pt")
    checkpoint = torch.load(checkpoint_path, weights_only=True)
    # the optimizer's state (Adam's moments) is in the checkpoint
    assert checkpoint["counters"]["global_step"] == 256 and checkpoint["optimizer"]["state_dict"]["state"]
    os.remove(os.path.join(whole["run_dir"], "ppo_atari.model"))
    resumed = ppo_atari.train(ppo_atari.Args(resume=checkpoint_path))
    assert "cannot save its state: new episodes start" in capsys.readouterr().out
    assert resumed["run_dir"] == os.path.abspath(whole["run_dir"]) and os.path.exists(resumed["model_path"])
    steps = [e.step for e in read_events(whole["run_dir"]).Scalars("losses/value_loss")]
    # one curve: the replayed iterations 3-4 replaced, not doubled
    assert steps == [128 * i for i in range(1, 5)]


# a user's env with `state`, `data` and `model` attributes of its own, with and without a TimeLimit, and a
# subclass of CartPole with state beyond CartPole's: trained without a word, resumed with new episodes
CUSTOM = {
    "OwnState-v0": ppo_discrete,
    "OwnStateNoTimeLimit-v0": ppo_discrete,
    "CartPoleWithExtraState-v0": ppo_discrete,
    "OwnStateContinuous-v0": ppo_continuous,
    "OwnStateContinuousNoTimeLimit-v0": ppo_continuous,
}


@pytest.mark.parametrize("env_id", list(CUSTOM))
def test_a_custom_env_with_state_of_its_own_trains_and_resumes_with_new_episodes(env_id, capsys):
    ppo = CUSTOM[env_id]
    tiny = dict(
        env_id=env_id, total_timesteps=2048, num_steps=128 if ppo is ppo_discrete else 512, update_epochs=1
    )
    ppo.train(ppo.Args(**tiny, checkpoint_every=0))
    assert not glob.glob("runs/*/checkpoint.pt") and capsys.readouterr().err == ""
    whole = ppo.train(ppo.Args(**tiny, checkpoint_every=1024, save_model=True))
    path = os.path.join(whole["run_dir"], "checkpoint.pt")
    assert torch.load(path, weights_only=True)["envs"] is None
    os.remove(whole["model_path"])
    capsys.readouterr()
    resumed = ppo.train(ppo.Args(resume=path))
    output = capsys.readouterr()
    note = "cannot be carried over (an env other than gymnasium's own, a wrapper of yours, or env workers)"
    assert output.out.count(f"{note}: new episodes start") == 1 and output.err == ""
    assert os.path.exists(resumed["model_path"])


@EXACT
def test_an_env_in_a_wrapper_of_the_users_own_is_not_saved_as_if_whole(ppo, monkeypatch):
    args = ppo.Args(env_id={ppo_discrete: "CartPole-v1", ppo_continuous: "Pendulum-v1"}[ppo], num_envs=2)

    def states(video_dir=None):
        envs = ppo.make_envs(args, video_dir)
        envs.reset(seed=1)
        return ppo.env_states(envs)

    # gym.make's wrappers, and RecordVideo on the first env: the env's state is saved
    assert states() is not None and states("videos/first") is not None
    wrap_envs(ppo, monkeypatch, gym.wrappers.NormalizeObservation)  # running statistics no checkpoint keeps
    assert states() is None


@EXACT
def test_envs_in_worker_processes_train_and_resume_with_new_episodes(ppo, monkeypatch, capsys):
    """A user's edit for speed: gymnasium's AsyncVectorEnv in make_envs (the envs' state is in workers)."""
    def make_envs(args, video_dir=None):
        thunks = [ppo.make_env(args, video_dir if i == 0 else None) for i in range(args.num_envs)]
        same_step = gym.vector.AutoresetMode.SAME_STEP
        return gym.vector.AsyncVectorEnv(thunks, copy=False, autoreset_mode=same_step)

    monkeypatch.setattr(ppo, "make_envs", make_envs)
    settings = {ppo_discrete: dict(num_steps=128), ppo_continuous: dict(env_id="Pendulum-v1", num_steps=256)}
    whole = ppo.train(ppo.Args(**settings[ppo], total_timesteps=2048, update_epochs=1, checkpoint_every=1024,
                               save_model=True, eval_episodes=1))
    path = os.path.join(whole["run_dir"], "checkpoint.pt")
    assert torch.load(path, weights_only=True)["envs"] is None and len(whole["eval_returns"]) == 1
    os.remove(whole["model_path"])
    capsys.readouterr()
    resumed = ppo.train(ppo.Args(resume=path))
    assert "state cannot be carried over" in capsys.readouterr().out
    assert os.path.exists(resumed["model_path"])


@EXACT
def test_envs_made_without_gym_make_train_and_evaluate(ppo, monkeypatch, capsys):
    """A user's edit of make_env: the env built directly (MyEnv(), so no spec), with or without a TimeLimit
    of the user's; evaluation cuts an episode at 10,000 steps only where no TimeLimit is there."""
    bare = {ppo_discrete: CartPoleEnv, ppo_continuous: lambda: gym.wrappers.TimeLimit(PendulumEnv(), 50)}[ppo]
    monkeypatch.setattr(ppo, "make_env", lambda *given, **named: bare)
    summary = ppo.train(ppo.Args(**TINY[ppo], eval_episodes=2))
    assert len(summary["eval_returns"]) == 2
    noted = "has no time limit: evaluation episodes end at 10,000 steps" in capsys.readouterr().out
    assert noted == (ppo is ppo_discrete)  # Pendulum in the user's TimeLimit of 50 steps: no note


@SCRIPTS
def test_vector_envs_that_reset_a_step_late_are_a_one_line_error(ppo, monkeypatch, capsys):
    """A user's edit: gymnasium's default NEXT_STEP autoreset (gym.make_vec, a vector env built without
    autoreset_mode), whose step after a done one is the reset, which the rollout would store as a step."""
    original = ppo.make_envs

    def make_envs(*args, **kwargs):
        envs = original(*args, **kwargs)
        envs.close()
        return gym.vector.SyncVectorEnv(envs.env_fns)  # the same envs

    monkeypatch.setattr(ppo, "make_envs", make_envs)
    line = one_line_error(capsys, lambda: ppo.train(ppo.Args(**TINY[ppo])))
    assert "with AutoresetMode.NEXT_STEP; the rollout needs gym.vector.AutoresetMode.SAME_STEP" in line


@SCRIPTS
def test_a_network_with_batch_norm_is_evaluated_in_eval_mode(ppo, monkeypatch):
    """A user's edit: batch normalization of the observations, which on one observation (an evaluation step)
    works only in eval mode, with the running statistics the training gathered."""
    def add_batch_norm(agent, *given):
        if ppo is ppo_atari:  # (batch, 4 frames, 84, 84), made on the device
            agent.add_module("input_norm", torch.nn.BatchNorm2d(4).to(given[-1]))
        else:  # (batch, obs_dim), moved with the agent
            agent.add_module("input_norm", torch.nn.BatchNorm1d(given[1].shape[0]))
        agent.register_forward_pre_hook(lambda agent, inputs: (agent.input_norm(inputs[0].float()),))

    edit_agents(ppo, monkeypatch, add_batch_norm)
    summary = ppo.train(ppo.Args(**TINY[ppo], eval_episodes=1, save_model=True))
    assert len(summary["eval_returns"]) == 1 and not summary["agent"].training
    evaluation = ppo.evaluate_saved_model(ppo.Args(load_model=summary["model_path"], eval_episodes=1))
    assert evaluation["eval_returns"] == summary["eval_returns"]


@SCRIPTS
def test_a_network_whose_outputs_do_not_fit_the_rollout_is_a_one_line_error(ppo, monkeypatch, capsys):
    """A user's edit: the value head left (batch, 1), the classic slip that broadcasts silently in the loss
    where the batch allows it."""
    def unsqueeze_values(agent, inputs, outputs):
        return (*outputs[:-1], outputs[-1][:, None])

    edit_agents(ppo, monkeypatch, lambda agent, *given: agent.register_forward_hook(unsqueeze_values))
    line = one_line_error(capsys, lambda: ppo.train(ppo.Args(**TINY[ppo])))
    num_envs = TINY[ppo]["num_envs"]
    assert f"({num_envs}, 1)] for the envs' observations" in line and f"({num_envs},)]" in line


@SCRIPTS
def test_a_network_that_fails_fails_in_the_rollout_where_its_traceback_shows_the_call(ppo, monkeypatch):
    def forward_that_fails(agent, inputs):  # a user's edit with a bug in it
        raise ValueError("a bug in the edited forward pass")

    edit_agents(ppo, monkeypatch, lambda agent, *given: agent.register_forward_pre_hook(forward_that_fails))
    with pytest.raises(ValueError, match="a bug in the edited forward pass") as error:
        ppo.train(ppo.Args(**TINY[ppo]))
    assert "collect_rollout" in [entry.name for entry in error.traceback]


def test_outputs_after_those_the_rollout_reads_are_left_to_the_user():
    args = ppo_discrete.Args(**TINY[ppo_discrete])
    envs = ppo_discrete.make_envs(args)
    obs, _ = envs.reset(seed=1)
    agent = ppo_discrete.make_agent(args, envs.single_observation_space, envs.single_action_space)
    agent.register_forward_hook(lambda agent, inputs, outputs: (*outputs, outputs[0][:, :1]))  # an extra head
    ppo_discrete.check_agent(agent, envs, obs.astype("float32"), torch.device("cpu"))


def test_gymnasium_envs_without_a_time_limit_resume_bit_for_bit():
    whole = ppo_discrete.train(
        ppo_discrete.Args(**{**SMALL[ppo_discrete], "env_id": "CartPoleNoTimeLimit-v0"}, save_model=True)
    )
    checkpoint = torch.load(os.path.join(whole["run_dir"], "checkpoint.pt"), weights_only=True)
    assert [env["elapsed_steps"] for env in checkpoint["envs"]] == [None] * 4
    copy = copy_of_checkpoint(whole["run_dir"])
    resumed = ppo_discrete.train(ppo_discrete.Args(resume=copy))
    assert_same_model(ppo_discrete, whole["run_dir"], resumed["run_dir"])


def start(ppo, flags):
    return subprocess.Popen([sys.executable, os.path.join(ROOT, f"{ppo.__name__}.py"), *flags],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
@pytest.mark.parametrize("ppo,signum", [(ppo_discrete, signal.SIGINT), (ppo_discrete, signal.SIGTERM),
                                        (ppo_continuous, signal.SIGKILL)],
                         ids=["discrete-SIGINT", "discrete-SIGTERM", "continuous-SIGKILL"])
def test_killed_at_a_random_point_and_resumed_ends_as_the_uninterrupted_run(ppo, signum, monkeypatch):
    process = start(ppo, FLAGS[ppo])
    while not glob.glob("runs/*/checkpoint.pt"):  # the first periodic checkpoint, then a random moment
        assert process.poll() is None, process.communicate()
        time.sleep(0.02)
    time.sleep(random.Random(f"{ppo.__name__} {signum}").uniform(0.0, 0.4))  # the same moment every run
    assert process.poll() is None, "the run ended before the signal: make it longer"
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=60)
    (run_dir,) = glob.glob("runs/*")
    if signum == signal.SIGKILL:
        assert process.returncode == -signal.SIGKILL
    else:  # a clean stop: checkpoint of the iteration in progress, a message, exit 128 + signal
        assert process.returncode == 128 + signum
        assert "--resume" in stderr and "Traceback" not in stderr
    assert not os.path.exists(os.path.join(run_dir, f"{ppo.__name__}.model"))

    resumed = start(ppo, ["--resume", os.path.join(run_dir, "checkpoint.pt")])
    os.makedirs("reference")
    with monkeypatch.context() as inside:  # the uninterrupted run, from the same command line, meanwhile
        inside.chdir("reference")
        inside.setattr(sys, "argv", [f"{ppo.__name__}.py", *FLAGS[ppo]])
        ppo.main()
    stdout, stderr = resumed.communicate(timeout=120)
    assert resumed.returncode == 0, stderr
    assert "resuming" in stdout
    (reference_dir,) = glob.glob("reference/runs/*")
    assert_same_model(ppo, reference_dir, run_dir)
    assert episode_curve(run_dir) == episode_curve(reference_dir)  # TensorBoard dropped the replayed points


@pytest.mark.parametrize("ppo", [ppo_atari], ids=["ppo_atari"])  # the one script that runs under torchrun
@pytest.mark.parametrize("signalled_call", [1, 2, 3, 4])
def test_a_signal_that_lands_during_a_gather_still_stops_the_run(ppo, signalled_call, monkeypatch):
    """Under torchrun a process mostly waits inside a collective, and Python runs the signal's handler when
    the collective returns: whichever gather of the first two iterations that is, the run stops with a
    checkpoint."""
    original, calls = ppo.gather_from_ranks, []

    def gather_then_signal(items):
        gathered = original(items)
        if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:  # the gathers of the training loop
            calls.append(1)
            if len(calls) == signalled_call:
                # the handler runs here, before the gather's result is used
                signal.raise_signal(signal.SIGTERM)
        return gathered

    monkeypatch.setattr(ppo, "gather_from_ranks", gather_then_signal)
    summary = ppo.train(ppo.Args(**{**SMALL[ppo], "checkpoint_every": 0}))
    assert summary["stopped"] == signal.SIGTERM
    (checkpoint_path,) = glob.glob("runs/*/checkpoint.pt")
    assert (
        torch.load(checkpoint_path, weights_only=True)["counters"]["global_step"]
        < SMALL[ppo]["total_timesteps"]
    )


FAULT_FLAGS = ["--num-envs", "1", "--num-steps", "128", "--total-timesteps", "1024",
               "--checkpoint-every", "1024"]


def test_an_env_that_exits_mid_run_keeps_the_last_iteration_and_its_exit_code(monkeypatch):
    """SystemExit(5) from the env at step 300: the checkpoint of iteration 2, one line, exit code 5."""
    monkeypatch.setenv("PYTHONPATH", ROOT)  # the toy envs, from the test's own directory
    process = start(ppo_discrete, ["--env-id", "tests.toy_envs:ExitsMidRun-v0", *FAULT_FLAGS])
    _, stderr = process.communicate(timeout=120)
    (checkpoint_path,) = glob.glob("runs/*/checkpoint.pt")
    assert process.returncode == 5 and stderr.strip().splitlines() == [
        f"SystemExit at step 256: the logs keep every point, the last good checkpoint is {checkpoint_path}"]
    assert torch.load(checkpoint_path, weights_only=True)["counters"]["global_step"] == 256


def test_an_env_that_fails_to_close_after_an_error_loses_neither_the_logs_nor_the_checkpoint(monkeypatch):
    """RuntimeError from the env at step 300, and again from its close(): the checkpoint of iteration 2 and
    the logs up to it are written before the envs close."""
    monkeypatch.setenv("PYTHONPATH", ROOT)
    process = start(ppo_discrete, ["--env-id", "tests.toy_envs:FailsToClose-v0", *FAULT_FLAGS])
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 1 and "RuntimeError: the simulator's connection is gone" in stderr
    (checkpoint_path,) = glob.glob("runs/*/checkpoint.pt")
    assert torch.load(checkpoint_path, weights_only=True)["counters"]["global_step"] == 256
    steps = [event.step for event in read_events(os.path.dirname(checkpoint_path)).Scalars("losses/value_loss")]
    assert steps == [128, 256]


def test_a_second_signal_stops_a_run_whose_env_hangs(monkeypatch):
    """SIGTERM while the env hangs in its step: the run says it will stop after the iteration; a second
    SIGTERM stops it at once, with the checkpoint of the last iteration done (exit 130, as a second
    Ctrl-C)."""
    monkeypatch.setenv("PYTHONPATH", ROOT)
    process = start(ppo_discrete, ["--env-id", "tests.toy_envs:HangsMidRun-v0", *FAULT_FLAGS])
    while not os.path.exists("hanging"):
        assert process.poll() is None, process.communicate()
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    time.sleep(1.0)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    (checkpoint_path,) = glob.glob("runs/*/checkpoint.pt")
    assert process.returncode == 130 and "SIGTERM: stopping after this iteration" in stderr
    assert "KeyboardInterrupt at step 256: the logs keep every point, the last good checkpoint is" in stderr
    assert torch.load(checkpoint_path, weights_only=True)["counters"]["global_step"] == 256


@SCRIPTS
def test_sigterm_during_the_final_evaluation_is_said_and_keeps_the_episodes_done(ppo, monkeypatch, capsys):
    original = ppo.evaluate

    def evaluate_after_a_signal(*args):
        signal.raise_signal(signal.SIGTERM)  # lands as the evaluation starts
        return original(*args)

    monkeypatch.setattr(ppo, "evaluate", evaluate_after_a_signal)
    summary = ppo.train(ppo.Args(**{**TINY[ppo], "eval_episodes": 3, "save_model": True}))
    assert (
        summary["stopped"] == signal.SIGTERM and len(summary["eval_returns"]) == 1 and summary["model_path"]
    )
    unit = "games" if ppo is ppo_atari else "episodes"
    assert f"SIGTERM: stopped after 1 evaluation {unit}" in capsys.readouterr().err


@SCRIPTS
def test_a_closed_terminal_stops_the_run_as_sigterm_does(ppo, monkeypatch):
    """SIGHUP during iteration 2: the run stops after it, with its checkpoint, and says how to resume."""
    original, calls = ppo.update, []

    def update_then_hang_up(*args):
        calls.append(1)
        if len(calls) == 2:
            signal.raise_signal(signal.SIGHUP)
        return original(*args)

    monkeypatch.setattr(ppo, "update", update_then_hang_up)
    summary = ppo.train(ppo.Args(**SMALL[ppo]))
    assert summary["stopped"] == signal.SIGHUP
    (checkpoint_path,) = glob.glob("runs/*/checkpoint.pt")
    assert torch.load(checkpoint_path, weights_only=True)["counters"]["global_step"] == 2 * ITERATION[ppo]


@SCRIPTS
def test_a_stop_in_the_last_iteration_says_to_evaluate_not_to_resume(ppo, monkeypatch, capsys):
    """A signal in the last iteration: the training is done, its evaluation is not; --resume would refuse."""
    original, calls = ppo.update, []
    last = SMALL[ppo]["total_timesteps"] // ITERATION[ppo]

    def update_then_stop(*args):
        calls.append(1)
        if len(calls) == last:
            signal.raise_signal(signal.SIGTERM)
        return original(*args)

    monkeypatch.setattr(ppo, "update", update_then_stop)
    summary = ppo.train(ppo.Args(**SMALL[ppo], eval_episodes=1))
    checkpoint = os.path.join(summary["run_dir"], "checkpoint.pt")
    assert summary["stopped"] == signal.SIGTERM and summary["eval_returns"] == []
    assert capsys.readouterr().err.strip().endswith(
        f"the training is done; evaluate with: python {ppo.__name__}.py --load-model {checkpoint}")
    assert len(ppo.evaluate_saved_model(ppo.Args(load_model=checkpoint, eval_episodes=1))["eval_returns"]) == 1


@SCRIPTS
def test_a_nan_stops_the_run_and_keeps_the_last_good_checkpoint(ppo, monkeypatch, capsys):
    """A nan in the gradients of iteration 4's first minibatch: the step makes every weight nan."""
    original, calls = ppo.ppo_loss, []

    def loss_going_nan(agent, minibatch, args, schedule):
        loss, logs, logratio = original(agent, minibatch, args, schedule)
        calls.append(1)
        first_of_iteration_4 = len(calls) == 3 * args.num_minibatches * args.update_epochs + 1
        return loss * float("nan") if first_of_iteration_4 else loss, logs, logratio

    monkeypatch.setattr(ppo, "ppo_loss", loss_going_nan)
    with pytest.raises(SystemExit) as exit_info:
        ppo.train(ppo.Args(**{**SMALL[ppo], "total_timesteps": 6 * ITERATION[ppo],
                              "checkpoint_every": 2 * ITERATION[ppo]}))
    assert exit_info.value.code == 3
    error = capsys.readouterr().err
    assert f"(nan) went non-finite in the update ending at step {4 * ITERATION[ppo]:,}" in error
    assert "last good checkpoint" in error
    (checkpoint_path,) = glob.glob("runs/*/checkpoint.pt")
    assert torch.load(checkpoint_path, weights_only=True)["counters"]["global_step"] == 2 * ITERATION[ppo]


@SCRIPTS
def test_resume_refuses_flags_that_differ_from_the_checkpoint(ppo, capsys):
    ppo.train(
        ppo.Args(
            **{**SMALL[ppo], "total_timesteps": 4 * ITERATION[ppo], "checkpoint_every": 2 * ITERATION[ppo]}
        )
    )
    (checkpoint_path,) = glob.glob("runs/*/checkpoint.pt")
    with pytest.raises(SystemExit) as exit_info:
        ppo.train(ppo.Args(resume=checkpoint_path, learning_rate=1e-3))
    assert exit_info.value.code == 2 and "drop --learning-rate" in capsys.readouterr().err


@SCRIPTS
def test_checkpoint_writes_are_atomic(ppo, monkeypatch):
    """A write that dies half-way leaves the previous checkpoint whole."""
    writes = []

    def open_dying_at_the_second_write(path, mode="r", *args, **kwargs):
        f = open(path, mode, *args, **kwargs)
        if mode == "wb":  # a checkpoint's temporary file
            writes.append(1)
            if len(writes) == 2:
                f.write(b"PK\x03\x04 half")
                f.close()
                raise OSError(28, "No space left on device")
        return f

    monkeypatch.setattr(ppo, "open", open_dying_at_the_second_write, raising=False)  # the script's own open()
    # one line, exit code 1 (tests/test_faults.py: a real full disk)
    with pytest.raises(SystemExit) as exit_info:
        ppo.train(ppo.Args(**{**SMALL[ppo], "checkpoint_every": 2 * ITERATION[ppo]}))
    (checkpoint_path,) = glob.glob("runs/*/checkpoint.pt")
    assert exit_info.value.code == 1 and not glob.glob("runs/*/*.tmp")
    assert torch.load(checkpoint_path, weights_only=True)["counters"]["global_step"] == 2 * ITERATION[ppo]


@pytest.mark.parametrize(
    "flags,message",
    [
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
        (
            dict(export_onnx="missing/policy.onnx"),
            "--export-onnx 'missing/policy.onnx': no file can be written there",
        ),
        (dict(export_onnx="."), "--export-onnx '.': no file can be written there"),
    ],
)
@SCRIPTS
def test_every_impossible_flag_is_a_one_line_error(ppo, flags, message, capsys):
    if not all(hasattr(ppo.Args, name) for name in flags):
        pytest.skip(f"{ppo.__name__} has no such flag")
    with pytest.raises(SystemExit) as exit_info:
        ppo.check_args(ppo.Args(**flags))
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


@SCRIPTS
def test_an_unwritable_run_directory_is_a_one_line_error(ppo, tmp_path):
    (tmp_path / "runs").write_text("a file where the runs/ directory should be")
    out = subprocess.run(
        [sys.executable, os.path.join(ROOT, f"{ppo.__name__}.py")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert (
        out.returncode == 2
        and "cannot create the directory runs/" in out.stderr
        and "Traceback" not in out.stderr
    )


@SCRIPTS
def test_paths_that_are_not_files_are_named_and_outputs_are_checked_before_training(ppo, tmp_path, capsys):
    os.mkfifo(tmp_path / "fifo")
    os.symlink(tmp_path / "loop", tmp_path / "loop")
    for path, what in [
        (tmp_path, "a directory"),
        ("/dev/null", "not a regular file"),
        (tmp_path / "fifo", "not a regular file"),
        (tmp_path / "loop", "a link that leads nowhere"),
        ("nothing.pt", "no such file"),
    ]:
        for flag in ["resume", "load_model"]:
            line = one_line_error(capsys, lambda: ppo.train(ppo.Args(**{flag: str(path)})))
            assert f"--{flag.replace('_', '-')} {str(path)!r}: {what}" in line
    # in the test's own directory
    (tmp_path / "videos").write_text("a file where the videos/ directory should be")
    line = one_line_error(capsys, lambda: ppo.train(ppo.Args(capture_video=True)))
    assert (
        "--capture-video writes under videos/, which cannot be written here" in line
        and not os.path.exists("runs")
    )


@EXACT
def test_capture_video_of_an_env_that_cannot_render_is_one_line(ppo, capsys):
    """A custom env without an rgb_array render mode, or whose constructor takes no render_mode: one line before
    training, not a traceback at step 0."""
    env_id = {ppo_discrete: "Counting-v0", ppo_continuous: "OwnStateContinuous-v0"}[ppo]
    line = one_line_error(capsys, lambda: ppo.train(ppo.Args(env_id=env_id, capture_video=True)))
    assert line == (f"error: --capture-video: {env_id} cannot render frames (its render modes: []); give it an "
                    f"rgb_array render mode, or drop --capture-video") and not os.path.exists("runs")
    env_id = {ppo_discrete: "NoRenderMode-v0", ppo_continuous: "NoRenderModeContinuous-v0"}[ppo]
    line = one_line_error(capsys, lambda: ppo.train(ppo.Args(env_id=env_id, capture_video=True)))
    assert line.startswith(f"error: --capture-video: {env_id} cannot be made to render (TypeError: ") and line.endswith(
        "give its constructor a render_mode argument, or drop --capture-video") and not os.path.exists("runs")
    # a render that gives no frame, or a grayscale one, which RecordVideo fails on at the first episode's end
    for name, got in [("NoFrames", "NoneType of shape ()"), ("GrayFrames", "ndarray of shape (32, 32)")]:
        env_id = name + {ppo_discrete: "", ppo_continuous: "Continuous"}[ppo] + "-v0"
        flags = dict(env_id=env_id, capture_video=True, total_timesteps=512, num_envs=2, num_steps=256)
        line = one_line_error(capsys, lambda: ppo.train(ppo.Args(**flags)))
        assert line == (f"error: --capture-video: {env_id}'s render() gives {got}, not an RGB frame (height, "
                        f"width, 3): fix it, or drop --capture-video") and not os.path.exists("runs")


@SCRIPTS
def test_a_second_run_in_a_run_directory_in_use_is_refused(ppo, capsys):
    """Two --resume of one checkpoint at once: the second refuses in one line while the first holds the
    lock."""
    summary = ppo.train(
        ppo.Args(**{**SMALL[ppo], "total_timesteps": 2 * ITERATION[ppo], "checkpoint_every": ITERATION[ppo]})
    )
    checkpoint_path = os.path.join(summary["run_dir"], "checkpoint.pt")
    with open(os.path.join(summary["run_dir"], "run.lock"), "a") as lock:  # as the first run holds it
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        line = one_line_error(capsys, lambda: ppo.train(ppo.Args(resume=checkpoint_path)))
        assert "is in use by another run" in line
    # the directory is free again
    assert ppo.train(ppo.Args(resume=checkpoint_path))["run_dir"] == os.path.abspath(summary["run_dir"])


@SCRIPTS
def test_capture_video_without_moviepy_is_a_one_line_error(ppo, monkeypatch, capsys):
    # as if it were not installed: importing it raises ImportError
    monkeypatch.setitem(sys.modules, "moviepy", None)
    with pytest.raises(SystemExit) as exit_info:
        ppo.train(ppo.Args(**SMALL[ppo], capture_video=True))
    assert exit_info.value.code == 2
    assert "--capture-video needs moviepy" in capsys.readouterr().err


@pytest.mark.parametrize("platform,backend", [("linux", "egl"), ("darwin", None)])
def test_mujoco_renders_headless_on_linux_and_as_gymnasium_chooses_elsewhere(platform, backend, monkeypatch,
                                                                              tmp_path):
    monkeypatch.chdir(tmp_path)  # check_video_support makes videos/ here
    monkeypatch.delenv("MUJOCO_GL", raising=False)
    monkeypatch.setattr(sys, "platform", platform)
    ppo_continuous.check_video_support()
    assert os.environ.get("MUJOCO_GL") == backend  # macOS has no EGL


@SCRIPTS
def test_a_run_without_fcntl_sighup_and_sysconf_as_on_windows(ppo, tmp_path):
    """Windows has no fcntl (msvcrt locks files), no SIGHUP and no os.sysconf: tests/as_on_windows.py runs a
    script without them, with a stand-in msvcrt. The run ends well; its lock, held, refuses a --resume."""
    flags = {  # two iterations, a checkpoint after the first
        ppo_discrete: ["--total-timesteps", "1024", "--checkpoint-every", "512"],
        ppo_continuous: ["--env-id", "Pendulum-v1", "--total-timesteps", "4096", "--checkpoint-every", "2048"],
        ppo_atari: ["--env-id", "ALE/Breakout-v5", "--total-timesteps", "256", "--checkpoint-every", "128",
                    "--num-envs", "2", "--num-steps", "64", "--num-minibatches", "4", "--update-epochs", "1",
                    "--async-envs", "on"],
    }[ppo]

    def run(*flags):
        command = [sys.executable, os.path.join(ROOT, "tests", "as_on_windows.py"), ppo.__file__, *flags]
        return subprocess.run(command, cwd=tmp_path, capture_output=True, text=True)

    first = run(*flags)
    assert first.returncode == 0, first.stderr
    [run_dir] = glob.glob(os.path.join(tmp_path, "runs", "*"))
    with open(os.path.join(run_dir, "run.lock"), "a") as lock:  # as a run going on in the directory holds it
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        second = run("--resume", os.path.join(run_dir, "checkpoint.pt"))
    assert second.returncode == 2 and "Traceback" not in second.stderr  # ALE's banner comes first
    assert second.stderr.splitlines()[-1] == (
        f"error: {run_dir} is in use by another run (two --resume of one checkpoint?): let it end or stop it")
