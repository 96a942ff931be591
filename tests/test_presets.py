"""--preset NAME: named flags for one env, which the flags given override, recorded resolved in saved
files."""

import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest
import torch

import ppo_continuous
import ppo_discrete
from tests.checks import help_text
from tests.test_scripts import script_path

PRESET_SCRIPTS = pytest.mark.parametrize(
    "ppo", [ppo_discrete, ppo_continuous], ids=lambda module: module.__name__
)


def parsed(ppo, monkeypatch, *argv):
    monkeypatch.setattr(sys, "argv", [script_path(ppo), *argv])
    return ppo.parse_args()


@PRESET_SCRIPTS
def test_no_preset_is_the_defaults_and_a_preset_sets_its_flags_under_those_given(ppo, monkeypatch):
    assert parsed(ppo, monkeypatch) == ppo.Args()
    assert parsed(ppo, monkeypatch, "--seed", "3") == ppo.Args(seed=3)
    for name, (_, flags) in ppo.PRESETS.items():
        args = parsed(ppo, monkeypatch, "--preset", name, "--seed", "3", "--gae-lambda", "0.5")
        for key, value in vars(ppo.Args()).items():
            if key in ("seed", "gae_lambda"):
                continue
            assert getattr(args, key) == flags.get(key, {"preset": name}.get(key, value)), (name, key)
        assert (args.seed, args.gae_lambda, args.preset) == (3, 0.5, name)


@PRESET_SCRIPTS
def test_every_preset_passes_the_checks_of_the_command_line(ppo):
    for name, (source, flags) in ppo.PRESETS.items():
        assert "rl-zoo3" in source and flags["env_id"]
        ppo.check_args(ppo.Args(preset=name, **flags))  # fails with SystemExit(2) on any bad value
        if "num_minibatches" in flags:  # rl-zoo3's batch_size, whole minibatches of it
            batch = flags.get("num_envs", ppo.Args.num_envs) * flags.get("num_steps", ppo.Args.num_steps)
            assert batch % flags["num_minibatches"] == 0


@PRESET_SCRIPTS
def test_help_lists_every_preset_and_where_it_comes_from(ppo, monkeypatch, capsys):
    text = " ".join(help_text(ppo, monkeypatch, capsys).split())  # on one line
    for name, (source, _) in ppo.PRESETS.items():
        assert f"{name}: {source}" in text
    assert "--preset {None," in text


def test_a_bad_preset_name_is_refused_by_the_parser(monkeypatch, capsys):
    with pytest.raises(SystemExit) as exit_info:
        parsed(ppo_continuous, monkeypatch, "--preset", "cheetah")
    assert exit_info.value.code == 2 and "cheetah" in capsys.readouterr().err


def test_the_initial_policy_std_is_log_std_init(monkeypatch):
    args = parsed(ppo_continuous, monkeypatch, "--preset", "halfcheetah")
    agent = ppo_continuous.make_agent(args, *spaces(args.env_id))
    mean, log_std, _ = agent(torch.zeros(5, 17))
    assert torch.equal(log_std, torch.full((5, 6), -2.0)) and args.log_std_init == -2.0
    assert isinstance(agent.actor_mean[0][1], torch.nn.ReLU) and agent.actor_mean[0][0].out_features == 256


def spaces(env_id):
    env = gym.make(env_id)
    env.close()
    return env.observation_space, env.action_space


def test_a_saved_model_holds_the_resolved_flags_and_loads_without_the_preset(tmp_path, monkeypatch):
    command = [
        sys.executable,
        script_path(ppo_continuous),
        "--preset",
        "pendulum",
        "--total-timesteps",
        "2048",
        "--num-envs",
        "2",
        "--num-steps",
        "1024",
        "--num-minibatches",
        "8",
        "--update-epochs",
        "1",
        "--save-model",
        "--checkpoint-every",
        "0",
    ]
    out = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    (model,) = tmp_path.glob("runs/*/ppo_continuous.model")
    saved = torch.load(model, weights_only=True)["args"]
    assert (saved["preset"], saved["gamma"], saved["learning_rate"], saved["num_envs"]) == (
        "pendulum",
        0.9,
        1e-3,
        2,
    )
    assert saved["norm_obs"] is False and saved["anneal_lr"] is False
    monkeypatch.chdir(tmp_path)
    summary = ppo_continuous.evaluate_saved_model(ppo_continuous.Args(load_model=str(model), eval_episodes=1))
    assert len(summary["eval_returns"]) == 1 and np.isfinite(summary["eval_returns"]).all()
