"""ppo_discrete.py end to end: TensorBoard tags, save / load / evaluate / video, bad input, determinism."""

import ast
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import ppo_discrete as ppo

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "ppo_discrete.py")
TAGS = [
    "charts/episodic_return", "charts/episodic_length", "charts/learning_rate", "charts/SPS",
    "losses/value_loss", "losses/policy_loss", "losses/entropy", "losses/old_approx_kl",
    "losses/approx_kl", "losses/clipfrac", "losses/explained_variance",
]
TINY = dict(total_timesteps=1024, num_envs=4, num_steps=128)  # two iterations


def read_events(run_dir):
    events = EventAccumulator(run_dir, size_guidance={"scalars": 0, "tensors": 0})
    events.Reload()
    return events


@pytest.fixture(autouse=True)
def in_tmp_dir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # runs/ and videos/ land in the test's own directory


def test_two_iterations_write_every_tag():
    summary = ppo.train(ppo.Args(**TINY))
    events = read_events(summary["run_dir"])
    assert set(TAGS) <= set(events.Tags()["scalars"])
    assert "hyperparameters/text_summary" in events.Tags()["tensors"]
    learning_rates = [e.value for e in events.Scalars("charts/learning_rate")]
    np.testing.assert_allclose(learning_rates, [ppo.annealed_lr(i, 2, 2.5e-4) for i in (1, 2)], rtol=1e-6)
    assert [e.step for e in events.Scalars("losses/value_loss")] == [512, 1024]
    episode_steps = [e.step for e in events.Scalars("charts/episodic_return")]
    assert len(episode_steps) == len(summary["episodes"]) > 0 and episode_steps == sorted(episode_steps)


def test_losses_are_means_over_the_whole_update(monkeypatch):
    """The logged value loss is the mean of every minibatch's loss, not the last one's."""
    seen = []
    original = ppo.value_loss
    monkeypatch.setattr(ppo, "value_loss", lambda *a, **k: seen.append(original(*a, **k)) or seen[-1])
    summary = ppo.train(ppo.Args(total_timesteps=512, num_envs=4, num_steps=128))
    (logged,) = [e.value for e in read_events(summary["run_dir"]).Scalars("losses/value_loss")]
    assert len(seen) == 16
    assert logged == pytest.approx(np.mean([v.item() for v in seen]), rel=1e-5)
    assert logged != pytest.approx(seen[-1].item(), rel=1e-3)


def test_target_kl_stops_the_update_at_the_first_minibatch_over_it():
    args = ppo.Args(total_timesteps=512, num_envs=4, num_steps=128, target_kl=0.0, learning_rate=1e-2)
    agent = ppo.Agent(4, 2)
    optimizer = torch.optim.Adam(agent.parameters(), lr=args.learning_rate)
    batch = dict(obs=torch.randn(512, 4), actions=torch.randint(0, 2, (512,)), logprobs=torch.full((512,), np.log(0.5)),
                 values=torch.zeros(512), advantages=torch.randn(512), returns=torch.randn(512))
    stats = ppo.update(agent, optimizer, batch, args, np.random.default_rng(0))
    assert stats["minibatches"] == 1  # KL > 0 after the first step already; CleanRL would finish the epoch (4)
    args.target_kl = None
    assert ppo.update(agent, optimizer, batch, args, np.random.default_rng(0))["minibatches"] == 16


def test_same_seed_same_returns_bit_for_bit():
    args = dict(total_timesteps=4096, num_envs=4, num_steps=128)
    first = ppo.train(ppo.Args(seed=7, save_model=True, **args))
    second = ppo.train(ppo.Args(seed=7, save_model=True, **args))
    assert first["episodes"] == second["episodes"]
    for key, tensor in torch.load(first["model_path"])["state_dict"].items():
        assert torch.equal(tensor, torch.load(second["model_path"])["state_dict"][key])
    assert ppo.train(ppo.Args(seed=8, **args))["episodes"] != first["episodes"]


def test_shared_body_and_relu_train():
    summary = ppo.train(ppo.Args(shared_body=True, activation="relu", hidden_sizes=(32,), save_model=True, **TINY))
    agent, saved = ppo.load_agent(summary["model_path"])
    assert agent.shared_body and saved["activation"] == "relu" and saved["hidden_sizes"] == [32]


def test_save_load_evaluate_and_record_video():
    summary = ppo.train(ppo.Args(save_model=True, eval_episodes=2, capture_video=True, **TINY))
    assert len(summary["eval_returns"]) == 2
    events = read_events(summary["run_dir"])
    assert len(events.Scalars("eval/episodic_return")) == 2
    run_name = os.path.basename(summary["run_dir"])
    assert any(name.endswith(".mp4") for name in os.listdir(f"videos/{run_name}"))
    assert len([n for n in os.listdir(f"videos/{run_name}-eval") if n.endswith(".mp4")]) == 2

    # the saved model alone, in a fresh process, greedy: same returns as the in-training evaluation
    out = subprocess.run([sys.executable, SCRIPT, "--load-model", summary["model_path"], "--eval-episodes", "2"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert f"mean return {np.mean(summary['eval_returns']):.2f}" in out.stdout
    sampled = ppo.evaluate_saved_model(ppo.Args(load_model=summary["model_path"], eval_episodes=3, eval_greedy=False))
    assert len(sampled) == 3


def test_track_with_wandb_offline(monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    summary = ppo.train(ppo.Args(track=True, **TINY))
    wandb_dir = os.path.join(summary["run_dir"], "wandb")
    assert any(name.startswith("offline-run") for name in os.listdir(wandb_dir))


def field_docstrings():
    """Args field name -> its docstring, read from the source."""
    tree = ast.parse(open(SCRIPT).read())
    (args_class,) = [node for node in tree.body if isinstance(node, ast.ClassDef) and node.name == "Args"]
    docs = {}
    for node, following in zip(args_class.body, args_class.body[1:]):
        if isinstance(node, ast.AnnAssign) and isinstance(following, ast.Expr):
            docs[node.target.id] = following.value.value
    return docs


def test_help_shows_every_field_with_its_docstring():
    docs = field_docstrings()
    assert set(docs) == {f.name for f in ppo.Args.__dataclass_fields__.values()}
    out = subprocess.run([sys.executable, SCRIPT, "--help"], capture_output=True, text=True, env={**os.environ, "COLUMNS": "200"})
    assert out.returncode == 0
    help_text = " ".join(out.stdout.split())
    for name, doc in docs.items():
        assert f"--{name.replace('_', '-')}" in help_text
        assert " ".join(doc.split())[:40] in help_text, name


BAD_INPUTS = [
    (["--env-id", "Pendulum-v1"], "use ppo_continuous.py"),
    (["--env-id", "tests.toy_envs:ImageObs-v0"], "use ppo_atari.py"),
    (["--env-id", "NoSuchEnv-v0"], "cannot make --env-id"),
    (["--num-minibatches", "3"], "does not divide the batch"),
    (["--total-timesteps", "100"], "smaller than one batch"),
    (["--gamma", "1.5"], "--gamma must be in [0, 1]"),
    (["--num-envs", "0"], "--num-envs must be a positive integer"),
]


@pytest.mark.parametrize("flags,message", BAD_INPUTS)
def test_bad_input_is_one_line_and_exit_2(flags, message):
    out = subprocess.run([sys.executable, SCRIPT, *flags], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    (line,) = out.stderr.strip().splitlines()
    assert line.startswith("error: ") and message in line


class RunsCode:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_bad_model_files_are_refused_without_running_them(tmp_path):
    (tmp_path / "truncated.model").write_bytes(b"PK\x03\x04 not a whole file")
    with open(tmp_path / "code.model", "wb") as f:
        pickle.dump({"format": ppo.MODEL_FORMAT, "payload": RunsCode()}, f)
    torch.save({"format": "ppo_continuous/1"}, tmp_path / "other_script.model")
    cases = {"truncated.model": "not a readable model file", "code.model": "not a readable model file",
             "other_script.model": "not a ppo_discrete.py model", "missing.model": "no such file"}
    for name, message in cases.items():
        out = subprocess.run([sys.executable, SCRIPT, "--load-model", str(tmp_path / name)], capture_output=True, text=True)
        assert out.returncode == 2 and message in out.stderr and "Traceback" not in out.stderr, (name, out.stderr)
    assert not os.path.exists("pwned") and not os.path.exists(tmp_path / "pwned")


def test_model_for_another_env_is_refused():
    summary = ppo.train(ppo.Args(save_model=True, **TINY))
    with pytest.raises(SystemExit) as exit_info:
        ppo.evaluate_saved_model(ppo.Args(load_model=summary["model_path"], env_id="Acrobot-v1"))
    assert exit_info.value.code == 2


def test_two_runs_in_the_same_second_get_their_own_directories():
    first = ppo.new_run_dir("same-name")
    second = ppo.new_run_dir("same-name")
    assert first[1] != second[1] and os.path.isdir(first[1]) and os.path.isdir(second[1])


def test_cartpole_is_solved_with_the_defaults():
    """The learning test: seed 1, CleanRL's defaults, 500k steps (about 35 s here)."""
    summary = ppo.train(ppo.Args(seed=1))
    last_100 = [episode_return for _, episode_return, _ in summary["episodes"][-100:]]
    assert np.mean(last_100) >= 490
