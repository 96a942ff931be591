"""Each script end to end: TensorBoard tags, save / load / evaluate / video, bad input, determinism."""

import ast
import glob
import os
import pickle
import shutil
import subprocess
import sys
import time

import gymnasium as gym
import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import ppo_atari
import ppo_continuous
import ppo_discrete
from tests.checks import agent_and_its_own_batch, help_text, one_line_error, wrap_envs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TAGS = [
    "charts/episodic_return",
    "charts/episodic_length",
    "charts/learning_rate",
    "charts/SPS",
    "losses/value_loss",
    "losses/policy_loss",
    "losses/entropy",
    "losses/old_approx_kl",
    "losses/approx_kl",
    "losses/clipfrac",
    "losses/explained_variance",
]
# two iterations of a cheap env for each script
TINY = {
    ppo_discrete: dict(env_id="CartPole-v1", total_timesteps=1024, num_envs=4, num_steps=128),
    ppo_continuous: dict(env_id="Pendulum-v1", total_timesteps=1024, num_envs=2, num_steps=256,
                         num_minibatches=4, update_epochs=2),
    ppo_atari: dict(env_id="ALE/Breakout-v5", total_timesteps=512, num_envs=2, num_steps=128,
                    num_minibatches=4, update_epochs=1),
}
VECTOR_SCRIPTS = pytest.mark.parametrize(
    "ppo", [ppo_discrete, ppo_continuous], ids=lambda module: module.__name__
)
SCRIPTS = pytest.mark.parametrize("ppo", list(TINY), ids=lambda module: module.__name__)


def script_path(ppo):
    return os.path.join(ROOT, f"{ppo.__name__}.py")


def episode_curve(run_dir):
    return [(e.step, e.value) for e in read_events(run_dir).Scalars("charts/episodic_return")]


def read_events(run_dir):
    events = EventAccumulator(run_dir, size_guidance={"scalars": 0, "tensors": 0})
    events.Reload()
    return events


@pytest.fixture(autouse=True)
def in_tmp_dir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # runs/ and videos/ land in the test's own directory


@SCRIPTS
def test_two_iterations_write_every_tag(ppo):
    summary = ppo.train(ppo.Args(**TINY[ppo]))
    events = read_events(summary["run_dir"])
    assert set(TAGS) <= set(events.Tags()["scalars"])
    assert "hyperparameters/text_summary" in events.Tags()["tensors"]
    flags = events.Tensors("hyperparameters/text_summary")[0].tensor_proto.string_val[0]
    assert b"|device|cpu|" in flags and b"|cuda|True|" in flags  # the device it ran on, beside --cuda
    learning_rates = [e.value for e in events.Scalars("charts/learning_rate")]
    np.testing.assert_allclose(
        learning_rates, [ppo.Args.learning_rate, ppo.Args.learning_rate / 2], rtol=1e-6
    )
    batch = TINY[ppo]["num_envs"] * TINY[ppo]["num_steps"]
    assert [e.step for e in events.Scalars("losses/value_loss")] == [batch, 2 * batch]
    episode_steps = [e.step for e in events.Scalars("charts/episodic_return")]
    assert len(episode_steps) >= len(summary["recent_returns"]) > 0 and episode_steps == sorted(episode_steps)


@VECTOR_SCRIPTS
def test_logged_episodes_are_the_envs_raw_returns_at_the_steps_they_ended(ppo):
    # every env's episodes last 5 steps with reward 1 a step: each ends with return 5 and length 5 (the env's
    # own reward, though ppo_continuous trains on scaled ones) at the global steps 5 N, 10 N, ... of N envs
    num_envs = 2
    num_steps = 64
    summary = ppo.train(ppo.Args(env_id=toy_env_id(ppo, "ScalarObs"), total_timesteps=2 * num_envs * num_steps,
                                 num_envs=num_envs, num_steps=num_steps, num_minibatches=2, update_epochs=1))
    events = read_events(summary["run_dir"])
    ends = [5 * num_envs * k for k in range(1, 2 * num_steps // 5 + 1) for env in range(num_envs)]
    assert [(e.step, e.value) for e in events.Scalars("charts/episodic_return")] == [(end, 5.0) for end in ends]
    assert [(e.step, e.value) for e in events.Scalars("charts/episodic_length")] == [(end, 5.0) for end in ends]


@SCRIPTS
def test_losses_are_means_over_the_whole_update(ppo, monkeypatch):
    """The logged value loss is the mean of every minibatch's loss, not the last one's."""
    seen = []
    original = ppo.value_loss
    monkeypatch.setattr(ppo, "value_loss", lambda *a, **k: seen.append(original(*a, **k)) or seen[-1])
    args = ppo.Args(**{**TINY[ppo], "total_timesteps": TINY[ppo]["num_envs"] * TINY[ppo]["num_steps"]})
    summary = ppo.train(args)
    (logged,) = [e.value for e in read_events(summary["run_dir"]).Scalars("losses/value_loss")]
    assert len(seen) == args.num_minibatches * args.update_epochs
    assert logged == pytest.approx(np.mean([v.item() for v in seen]), rel=1e-5)
    assert logged != pytest.approx(seen[-1].item(), rel=1e-3)


@SCRIPTS
def test_the_learning_rate_schedule_scales_every_parameter_group(ppo):
    """AdamW's usual set-up: no weight decay on biases, in a second group with its own learning rate."""
    agent, batch, _ = agent_and_its_own_batch(ppo)
    weights = [p for name, p in agent.named_parameters() if name.endswith("weight")]
    others = [p for name, p in agent.named_parameters() if not name.endswith("weight")]
    optimizer = torch.optim.AdamW(
        [dict(params=weights, lr=1e-3), dict(params=others, lr=4e-4, weight_decay=0.0)]
    )
    for lr_factor in [0.5, 0.25]:
        ppo.update(
            agent,
            optimizer,
            batch,
            ppo.Args(update_epochs=1),
            np.random.default_rng(0),
            ppo.ppo_loss,
            ppo.Schedule(lr_factor, 0.2, 0.0, 0.0),
        )
        assert [group["lr"] for group in optimizer.param_groups] == pytest.approx(
            [1e-3 * lr_factor, 4e-4 * lr_factor]
        )


@SCRIPTS
def test_the_logged_kl_estimates_and_clip_fraction_cover_every_minibatch(ppo):
    """old_approx_kl = mean(-log r), approx_kl = mean((r - 1) - log r), clipfrac = the share of |r - 1| over
    the iteration's clip coefficient (an annealed one here, not the flag's), over all the update's samples."""
    agent, batch, _ = agent_and_its_own_batch(ppo)
    args = ppo.Args(num_minibatches=4, update_epochs=2, clip_coef=0.2)
    optimizer = torch.optim.Adam(agent.parameters(), lr=3e-4 if ppo is ppo_atari else 3e-2)  # ratios near 1
    schedule = ppo.Schedule(1.0, 0.01, 0.0, 0.0)
    seen = []

    def recorded_loss(*inputs):
        loss, logs, logratio = ppo.ppo_loss(*inputs)
        seen.append(logratio)
        return loss, logs, logratio

    stats = ppo.update(agent, optimizer, batch, args, np.random.default_rng(0), recorded_loss, schedule)
    logratio = torch.cat(seen).double().numpy()
    assert len(seen) == 8 and stats["gradient_steps"] == 8
    assert stats["old_approx_kl"] == pytest.approx(np.mean(-logratio), rel=1e-4, abs=1e-7)
    assert stats["approx_kl"] == pytest.approx(np.mean(np.expm1(logratio) - logratio), rel=1e-4, abs=1e-9)
    assert stats["clipfrac"] == pytest.approx(np.mean(np.abs(np.expm1(logratio)) > 0.01), abs=1e-6)
    assert np.mean(np.abs(np.expm1(logratio)) > 0.01) != np.mean(np.abs(np.expm1(logratio)) > 0.2)


@SCRIPTS
def test_target_kl_stops_the_update_at_the_first_minibatch_over_it(ppo):
    """Minibatch 1 sees the old policy (KL 0) and steps; minibatch 2 sees KL > 0 and stops the whole update,
    before its step and without evaluating any later minibatch (CleanRL would finish the epoch: 4 steps)."""
    agent, batch, _ = agent_and_its_own_batch(ppo)
    args = ppo.Args(num_minibatches=4, update_epochs=4, target_kl=0.0)
    optimizer = torch.optim.Adam(agent.parameters(), lr=1e-2)
    schedule, evaluated = ppo.Schedule(1.0, args.clip_coef, args.ent_coef, args.kl_beta), []

    def counted_loss(*inputs):
        evaluated.append(1)
        return ppo.ppo_loss(*inputs)

    stats = ppo.update(agent, optimizer, batch, args, np.random.default_rng(0), counted_loss, schedule)
    assert stats["gradient_steps"] == 1 and len(evaluated) == 2
    args.target_kl = None
    assert (
        ppo.update(agent, optimizer, batch, args, np.random.default_rng(0), ppo.ppo_loss, schedule)[
            "gradient_steps"
        ]
        == 16
    )


@pytest.mark.slow
@SCRIPTS
def test_same_seed_same_returns_bit_for_bit(ppo):
    args = TINY[ppo]  # two iterations: the second rollout follows an update
    first = ppo.train(ppo.Args(seed=7, save_model=True, **args))
    second = ppo.train(ppo.Args(seed=7, save_model=True, **args))
    assert episode_curve(first["run_dir"]) == episode_curve(second["run_dir"])
    for key, tensor in torch.load(first["model_path"])["agent"].items():
        assert torch.equal(tensor, torch.load(second["model_path"])["agent"][key])
    assert episode_curve(ppo.train(ppo.Args(seed=8, **args))["run_dir"]) != episode_curve(first["run_dir"])


@pytest.mark.slow
@SCRIPTS
def test_save_load_evaluate_record_video_and_resume(ppo):
    batch_size = TINY[ppo]["num_envs"] * TINY[ppo]["num_steps"]  # a checkpoint after the first iteration
    summary = ppo.train(ppo.Args(save_model=True, eval_episodes=2, capture_video=True,
                                 checkpoint_every=batch_size, **TINY[ppo]))
    assert len(summary["eval_returns"]) == 2
    events = read_events(summary["run_dir"])
    assert len(events.Scalars("eval/episodic_return")) == 2
    run_name = os.path.basename(summary["run_dir"])
    assert any(name.endswith(".mp4") for name in os.listdir(f"videos/{run_name}"))
    assert len([n for n in os.listdir(f"videos/{run_name}-eval") if n.endswith(".mp4")]) == 2

    # the saved model alone, in a fresh process, greedy: same returns as the in-training evaluation
    command = [sys.executable, script_path(ppo), "--load-model", summary["model_path"], "--eval-episodes",
               "2", "--env-id", TINY[ppo]["env_id"]]
    out = subprocess.run(command, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert f"mean return {np.mean(summary['eval_returns']):.2f}" in out.stdout
    word = "game" if ppo is ppo_atari else "episode"  # a line as each ends
    each = [line.split(":")[0] for line in out.stdout.splitlines() if line.startswith(f"eval {word} ")]
    assert each == [f"eval {word} 1 of 2", f"eval {word} 2 of 2"]
    sampled = ppo.evaluate_saved_model(
        ppo.Args(load_model=summary["model_path"], eval_episodes=1, eval_greedy=False)
    )
    assert len(sampled["eval_returns"]) == 1 and not sampled["recent_returns"]  # evaluated, not trained

    # resumed, the run records into folders of its own: the videos of the first part stay as they were
    first_part = {folder: videos(folder) for folder in [f"videos/{run_name}", f"videos/{run_name}-eval"]}
    ppo.train(ppo.Args(resume=os.path.join(summary["run_dir"], "checkpoint.pt")))
    assert {folder: videos(folder) for folder in first_part} == first_part
    assert videos(f"videos/{run_name}-resumed-at-step-{batch_size}")
    assert len(videos(f"videos/{run_name}-resumed-at-step-{batch_size}-eval")) == 2


def test_greedy_evaluation_takes_each_observations_most_likely_action():
    # Counting-v0: observations [t, 1] for t = 0, 1, 2, reward = action + 1; a greedy episode's return is the
    # sum over t of 1 + the argmax of the saved agent's logits at [t, 1], each computed as evaluation does
    args = dict(env_id="tests.toy_envs:Counting-v0", total_timesteps=512, num_envs=2, num_steps=128,
                num_minibatches=4, update_epochs=1)
    summary = ppo_discrete.train(ppo_discrete.Args(save_model=True, **args))
    with torch.no_grad():
        actions = [summary["agent"](torch.tensor([[t, 1.0]]))[0].argmax().item() for t in range(3)]
    greedy = ppo_discrete.evaluate_saved_model(
        ppo_discrete.Args(load_model=summary["model_path"], eval_episodes=4))
    assert greedy["eval_returns"] == [float(sum(actions) + 3)] * 4
    sampled = ppo_discrete.evaluate_saved_model(
        ppo_discrete.Args(load_model=summary["model_path"], eval_episodes=4, eval_greedy=False))
    assert sampled["eval_returns"] != greedy["eval_returns"]  # a policy still near uniform: other actions


def videos(folder):
    """Each MP4 file's name -> its bytes."""
    return {name: open(os.path.join(folder, name), "rb").read() for name in os.listdir(folder)
            if name.endswith(".mp4")}


@pytest.mark.skipif(not shutil.which("c++"), reason="torch.compile on a CPU needs a C++ compiler")
def test_compile_trains():
    summary = ppo_discrete.train(ppo_discrete.Args(compile=True, eval_episodes=1, **TINY[ppo_discrete]))
    assert summary["recent_returns"] and len(summary["eval_returns"]) == 1
    assert all(torch.isfinite(weight).all() for weight in summary["agent"].parameters())


# start_logging, which runs W&B, and the Run are the same in ppo_discrete.py and ppo_continuous.py
@pytest.mark.parametrize("ppo", [ppo_discrete, ppo_atari], ids=lambda module: module.__name__)
def test_track_with_wandb_offline(ppo, monkeypatch, capsys):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    batch_size = TINY[ppo]["num_envs"] * TINY[ppo]["num_steps"]  # a checkpoint after the first iteration
    summary = ppo.train(ppo.Args(track=True, capture_video=True, eval_episodes=1, checkpoint_every=batch_size,
                                 **TINY[ppo]))
    wandb_dir = os.path.join(summary["run_dir"], "wandb")
    (first_part,) = [name for name in os.listdir(wandb_dir) if name.startswith("offline-run")]
    # every video recorded, in training and in evaluation, went to W&B as well
    recorded = glob.glob(f"videos/{os.path.basename(summary['run_dir'])}*/*.mp4")
    sent = glob.glob(os.path.join(wandb_dir, first_part, "files", "media", "videos", "**", "*.mp4"), recursive=True)
    assert len(recorded) > 1 and len(sent) == len(recorded)
    # resumed, the run goes on in the same W&B run: an offline run's folder ends with the run's id
    time.sleep(1)  # W&B names a run's folder by the second it starts
    ppo.train(ppo.Args(resume=os.path.join(summary["run_dir"], "checkpoint.pt")))
    folders = [name for name in os.listdir(wandb_dir) if name.startswith("offline-run")]
    assert len(folders) == 2 and {name.split("-")[-1] for name in folders} == {first_part.split("-")[-1]}
    # a project name that W&B refuses
    line = one_line_error(capsys, lambda: ppo.train(ppo.Args(track=True, wandb_project_name="bad/name")))
    assert line.startswith("error: --track: W&B did not start (UsageError: Invalid project name 'bad/name'")
    # online, with no API key (a process of its own: W&B keeps its settings in the process)
    env = {name: value for name, value in os.environ.items() if name not in ("WANDB_MODE", "WANDB_API_KEY")}
    env.update(HOME=os.getcwd(), WANDB_CONFIG_DIR=os.getcwd())  # no ~/.netrc, no settings of this machine's user
    out = subprocess.run([sys.executable, script_path(ppo), "--track", "--env-id", TINY[ppo]["env_id"]], env=env,
                         stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and out.stderr.strip().splitlines()[-1] == (
        "error: --track: W&B did not start (UsageError: No API key configured. Use `wandb login` to log in.); "
        "check --wandb-project-name and --wandb-entity, or run with WANDB_MODE=offline, or drop --track")


def field_docstrings(path):
    """Args field name -> its docstring, read from the source."""
    tree = ast.parse(open(path).read())
    (args_class,) = [node for node in tree.body if isinstance(node, ast.ClassDef) and node.name == "Args"]
    docs = {}
    for node, following in zip(args_class.body, args_class.body[1:]):
        if isinstance(node, ast.AnnAssign) and isinstance(following, ast.Expr):
            docs[node.target.id] = following.value.value
    return docs


@SCRIPTS
def test_help_shows_every_field_with_its_docstring(ppo, monkeypatch, capsys):
    docs = field_docstrings(script_path(ppo))
    assert set(docs) == {f.name for f in ppo.Args.__dataclass_fields__.values()}
    lines = help_text(ppo, monkeypatch, capsys, columns=1000).splitlines()  # no line wraps at this width
    for name, doc in docs.items():
        assert any(f"--{name.replace('_', '-')}" in line for line in lines)
        assert any(" ".join(doc.split()) in line for line in lines), name  # whole: tyro shows line breaks


BAD_INPUTS = [
    (ppo_discrete, dict(env_id="Pendulum-v1"), "use ppo_continuous.py"),
    (ppo_discrete, dict(env_id="tests.toy_envs:ImageObs-v0"), "use ppo_atari.py"),
    (ppo_continuous, dict(env_id="CartPole-v1"), "use ppo_discrete.py"),
    (ppo_continuous, dict(env_id="tests.toy_envs:ImageObs-v0"), "needs Box actions"),
    (ppo_atari, dict(env_id="CartPole-v1"), "is not an Atari game"),
    (ppo_atari, dict(noop_max=-1), "--noop-max must be >= 0"),
]
for module in [ppo_discrete, ppo_continuous, ppo_atari]:
    BAD_INPUTS += [
        (module, dict(env_id="NoSuchEnv-v0"), "cannot make --env-id"),
        (module, dict(num_minibatches=3), "does not divide the batch"),
        (module, dict(total_timesteps=100), "smaller than one batch"),
        (module, dict(gamma=1.5), "--gamma must be in [0, 1]"),
        (module, dict(num_envs=0), "--num-envs must be a positive integer"),
    ]
for module in [ppo_discrete, ppo_continuous]:
    BAD_INPUTS += [(module, dict(capture_video=True, env_kwargs={"render_mode": "human"}),
                    "drop render_mode from --env-kwargs")]


@pytest.mark.parametrize("ppo,flags,message", BAD_INPUTS, ids=lambda x: getattr(x, "__name__", None))
def test_bad_input_is_one_line_and_exit_2(ppo, flags, message, capsys):
    assert message in one_line_error(capsys, lambda: ppo.train(ppo.Args(**flags)))


def toy_env_id(ppo, name: str) -> str:
    """The id of a toy env of tests/toy_envs.py with the actions of this script (Box ones: "Continuous")."""
    return f"tests.toy_envs:{name}{'Continuous' if ppo is ppo_continuous else ''}-v0"


# observations at steps 0 and 1 of each toy env, flattened by hand
FLATTENED = {
    "Matrix": [[0, 1, 2, 3, 4, 5], [1, 2, 3, 4, 5, 6]],  # in C order
    "Scalar": [[0], [1]],
    "Discrete": [[1, 0, 0, 0], [0, 1, 0, 0]],  # one-hot
    "Tuple": [[1, 0, 0, 0, 1], [0, 1, 0, 1, 2]],  # the parts side by side
}


@VECTOR_SCRIPTS
@pytest.mark.parametrize("kind", list(FLATTENED))
def test_observations_other_than_a_box_vector_reach_the_network_flattened(ppo, kind):
    env_id = toy_env_id(ppo, f"{kind}Obs")
    env = ppo.make_env(ppo.Args(env_id=env_id))()
    first, second = FLATTENED[kind]
    np.testing.assert_array_equal(env.reset(seed=0)[0], first)
    np.testing.assert_array_equal(env.step(env.action_space.sample())[0], second)
    summary = ppo.train(ppo.Args(env_id=env_id, total_timesteps=256, num_envs=2, num_steps=128,
                                 eval_episodes=1, save_model=True))
    assert summary["agent"](torch.zeros(1, len(first)))[-1].shape == (1,)  # a value for a vector of that size
    assert ppo.evaluate_saved_model(ppo.Args(load_model=summary["model_path"]))["eval_returns"]


@VECTOR_SCRIPTS
def test_evaluation_ends_an_episode_the_env_never_ends(ppo):
    """An env with no time limit and a policy that never ends its episode: evaluation cuts it, and says so
    (in a process of its own: were it to hang, the timeout fails the test)."""
    env_id = toy_env_id(ppo, "Endless")
    command = [sys.executable, script_path(ppo), "--env-id", env_id, "--total-timesteps", "256", "--num-envs",
               "2", "--num-steps", "128", "--eval-episodes", "1", "--no-cuda"]
    out = subprocess.run(command, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": ROOT})
    assert out.returncode == 0, out.stderr
    assert f"note: {env_id} has no time limit: evaluation episodes end at 10,000 steps" in out.stdout
    assert "eval (greedy, 1 episodes): mean return 10000.00 +- 0.00" in out.stdout  # reward 1 a step


@SCRIPTS
def test_bad_input_from_the_command_line_is_one_line_and_exit_2(ppo):
    out = subprocess.run([sys.executable, script_path(ppo), "--gamma", "1.5"], capture_output=True, text=True)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    (line,) = out.stderr.strip().splitlines()
    assert line == "error: --gamma must be in [0, 1], got 1.5"


# an env argument that changes the observations: a model fits only envs made with it; then other arguments of
# the same spaces, and some of other spaces
ENV_KWARGS = {
    ppo_discrete: ("FrozenLake-v1", ["map_name", "8x8", "is_slippery", "False"],
                   {"map_name": "8x8", "is_slippery": False}, "Discrete(64)",
                   {"map_name": "8x8", "is_slippery": True}, {"map_name": "4x4"}),
    ppo_continuous: ("HalfCheetah-v5", ["exclude_current_positions_from_observation", "False"],
                     {"exclude_current_positions_from_observation": False}, "Box(-inf, inf, (18,), float64)",
                     {"exclude_current_positions_from_observation": False, "ctrl_cost_weight": 1.0}, {}),
}


@VECTOR_SCRIPTS
def test_env_kwargs_reach_every_env_of_the_run_and_stay_with_its_files(ppo, monkeypatch, capsys):
    env_id, flags, kwargs, space, same_spaces, other_spaces = ENV_KWARGS[ppo]
    command = [sys.executable, script_path(ppo), "--env-id", env_id, "--env-kwargs", *flags, "--total-timesteps",
               "1024", "--num-envs", "2", "--num-steps", "256", "--num-minibatches", "4", "--checkpoint-every",
               "512", "--save-model", "--eval-episodes", "1"]
    trained = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert trained.returncode == 0, trained.stderr
    (run_dir,) = glob.glob("runs/*")
    model = os.path.join(run_dir, f"{ppo.__name__}.model")
    saved = torch.load(model, weights_only=True)
    assert saved["args"]["env_kwargs"] == kwargs  # False parsed as a bool, not the text "False"
    assert saved["spaces"][0] == space
    made = []  # the arguments of every env made from here on
    wrap_envs(ppo, monkeypatch, lambda env: made.append(env.spec.kwargs) or env)
    # evaluation, and a resume that names no flag, make their envs with the saved kwargs
    assert len(ppo.evaluate_saved_model(ppo.Args(load_model=model))["eval_returns"]) == 10
    resumed = ppo.train(ppo.Args(resume=os.path.join(run_dir, "checkpoint.pt")))
    assert resumed["run_dir"] == os.path.abspath(run_dir) and resumed["stopped"] is None
    assert made and all(made_with.items() >= kwargs.items() for made_with in made)
    # --load-model evaluates in envs of the arguments named, where their spaces are the model's
    made.clear()
    evaluated = ppo.evaluate_saved_model(ppo.Args(load_model=model, env_kwargs=same_spaces))
    assert len(evaluated["eval_returns"]) == 10
    assert made and all(made_with.items() >= same_spaces.items() for made_with in made)
    message = one_line_error(capsys, lambda: ppo.evaluate_saved_model(
        ppo.Args(load_model=model, env_kwargs=other_spaces), given={"load_model", "env_kwargs"}))
    assert "is for another env: its observation space is" in message


@VECTOR_SCRIPTS
def test_the_activation_check_adds_no_warning_to_a_bad_input_line(ppo):
    # nn.Softmax() warns of its implicit dimension when the check tries it; the error line stays alone
    flags = ["--activation", "Softmax", "--num-minibatches", "3"]  # checked after the activation
    out = subprocess.run([sys.executable, script_path(ppo), *flags], capture_output=True, text=True)
    (line,) = out.stderr.strip().splitlines()
    assert out.returncode == 2 and line.startswith("error: --num-minibatches 3 does not divide the batch")


class RunsCode:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


@SCRIPTS
@pytest.mark.parametrize("flag", ["load_model", "resume"])
def test_bad_model_and_checkpoint_files_are_refused_without_running_them(ppo, flag, tmp_path, capsys):
    (tmp_path / "truncated.pt").write_bytes(b"PK\x03\x04 not a whole file")
    with open(tmp_path / "code.pt", "wb") as f:
        pickle.dump({"format": ppo.CHECKPOINT_FORMAT, "payload": RunsCode()}, f)
    other = ppo_continuous if ppo is ppo_discrete else ppo_discrete  # a file of another script
    torch.save({"format": other.CHECKPOINT_FORMAT}, tmp_path / "other_script.pt")
    torch.save({"format": ppo.CHECKPOINT_FORMAT, "payload": RunsCode()}, tmp_path / "zipped_code.pt")
    cases = {
        "truncated.pt": "not a readable checkpoint or model",
        "code.pt": "not a readable checkpoint or model",
        "zipped_code.pt": "not a readable checkpoint or model (UnpicklingError: Weights only load failed.)",
        "other_script.pt": f"not a {ppo.__name__}.py checkpoint or model (format {other.CHECKPOINT_FORMAT!r}; "
                           f"this script reads {ppo.CHECKPOINT_FORMAT!r})",
        "missing.pt": "no such file",
    }
    for name, message in cases.items():
        with pytest.raises(SystemExit) as exit_info:
            ppo.train(ppo.Args(**{flag: str(tmp_path / name)}))
        (line,) = capsys.readouterr().err.strip().splitlines()
        assert exit_info.value.code == 2 and line.startswith("error: ") and message in line, (name, line)
    assert not os.path.exists("pwned") and not os.path.exists(tmp_path / "pwned")
    if flag == "load_model":  # and from the command line, through main(): one line, exit code 2
        out = subprocess.run([sys.executable, script_path(ppo), "--load-model", str(tmp_path / "code.pt")],
                             capture_output=True, text=True)
        assert out.returncode == 2 and "Traceback" not in out.stderr and not os.path.exists("pwned")


OTHER_ENV = {ppo_discrete: "Acrobot-v1", ppo_continuous: "MountainCarContinuous-v0", ppo_atari: "ALE/Pong-v5"}


@SCRIPTS
def test_a_model_for_another_env_or_network_is_refused_naming_what_differs(ppo, capsys):
    """A file whose env is another (as it says in its flags, but its spaces are the trained env's) is refused
    on the spaces; one whose spaces match the other env is refused because the network does not fit them."""
    summary = ppo.train(ppo.Args(save_model=True, **TINY[ppo]))
    model = torch.load(summary["model_path"], weights_only=True)
    model["args"]["env_id"] = OTHER_ENV[ppo]
    torch.save(model, "other_env.model")
    line = one_line_error(capsys, lambda: ppo.evaluate_saved_model(ppo.Args(load_model="other_env.model")))
    assert "is for another env: its" in line
    other = gym.make(OTHER_ENV[ppo])
    model["spaces"] = [str(other.observation_space), str(other.action_space)]
    torch.save(model, "other_env.model")
    line = one_line_error(capsys, lambda: ppo.evaluate_saved_model(ppo.Args(load_model="other_env.model")))
    assert "does not fit this script's network" in line and "mis-shaped [" in line


@SCRIPTS
def test_two_runs_in_the_same_second_get_their_own_directories(ppo):
    first = ppo.new_run_dir("same-name")
    second = ppo.new_run_dir("same-name")
    assert first != second and os.path.isdir(first) and os.path.isdir(second)


@SCRIPTS
def test_an_interrupted_run_keeps_every_point_logged_before_it(ppo, monkeypatch):
    """Scalars reach TensorBoard in bursts (ScalarWriter); a run stopped by an error or Ctrl-C still writes
    them all."""
    original, calls = ppo.update, []

    def update_then_interrupt(*args, **kwargs):
        calls.append(time.time())
        if len(calls) == 2:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(ppo, "update", update_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        ppo.train(ppo.Args(**{**TINY[ppo], "total_timesteps": 2 * TINY[ppo]["total_timesteps"]}))
    (run_dir,) = [os.path.join("runs", name) for name in os.listdir("runs")]
    events = read_events(run_dir)
    batch = TINY[ppo]["num_envs"] * TINY[ppo]["num_steps"]
    assert [e.step for e in events.Scalars("losses/value_loss")] == [batch]  # the one finished iteration
    checkpoint = torch.load(os.path.join(run_dir, "checkpoint.pt"), weights_only=True)
    assert checkpoint["counters"]["global_step"] == batch  # Ctrl-C twice keeps the one finished iteration
    (sps_point,) = events.Scalars("charts/SPS")
    assert sps_point.wall_time < calls[1]  # the time it was logged at, not the time the burst was written


def test_progress_lines_say_no_episode_has_ended_until_one_has(capsys):
    # Pendulum's episodes last 200 steps: none has ended at step 128 of each env, one of each at step 256
    summary = ppo_continuous.train(ppo_continuous.Args(env_id="Pendulum-v1", total_timesteps=512, num_envs=2,
                                                       num_steps=128, num_minibatches=4, update_epochs=1))
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("step ")]
    assert len(summary["recent_returns"]) == 2
    assert lines[0].endswith("steps/s, no episode has ended yet")
    assert lines[-1].endswith(f"mean return of the last 2 episodes: {np.mean(summary['recent_returns']):.2f}")


def test_an_env_of_ones_own_module_trains_saves_and_loads_from_the_shell(tmp_path):
    # as the README says: registered in the user's module, named "module:EnvId", the module on PYTHONPATH
    (tmp_path / "my_envs.py").write_text(
        "import gymnasium as gym\n"
        "from gymnasium.envs.classic_control import CartPoleEnv\n"
        "gym.register('MyPole-v0', entry_point=CartPoleEnv, max_episode_steps=50)\n")
    env = {**os.environ, "PYTHONPATH": "."}
    flags = ["--env-id", "my_envs:MyPole-v0", "--total-timesteps", "1024", "--save-model"]
    trained = subprocess.run([sys.executable, script_path(ppo_discrete), *flags], env=env, cwd=tmp_path,
                             capture_output=True, text=True, timeout=120)
    assert trained.returncode == 0, trained.stderr
    # the run's folder has no ":" (scp and rsync read "name:" as a host; Windows refuses it in names)
    (model,) = glob.glob(str(tmp_path / "runs" / "my_envs-MyPole-v0__ppo_discrete__1__*" / "ppo_discrete.model"))
    loaded = subprocess.run([sys.executable, script_path(ppo_discrete), "--load-model", model, "--eval-episodes",
                             "2"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert loaded.returncode == 0, loaded.stderr
    mean_return = float(loaded.stdout.split("mean return ")[1].split()[0])
    assert 0 < mean_return <= 50  # episodes of at most 50 steps, as registered


@SCRIPTS
def test_the_progress_counts_to_the_steps_of_the_whole_batches_trained(ppo, capsys, in_tmp_dir):
    """--total-timesteps is rounded down to whole batches (as in CleanRL): the progress says so, and the run's
    last line reads as a finished run's."""
    batch = TINY[ppo]["num_envs"] * TINY[ppo]["num_steps"]
    summary = ppo.train(ppo.Args(**{**TINY[ppo], "total_timesteps": 2 * batch + batch // 2}))
    assert summary["stopped"] is None
    progress = [line for line in capsys.readouterr().out.splitlines() if line.startswith("step ")]
    assert progress[-1].startswith(f"step {2 * batch:,} of {2 * batch:,}, ")
