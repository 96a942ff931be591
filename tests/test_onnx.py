"""--export-onnx: onnxruntime on the exported graph plays what the torch agent's greedy evaluation plays, on
256 observations from the env; the README's example runs an exported CartPole policy without the script."""

import os
import re

import gymnasium as gym
import numpy as np
import onnxruntime
import torch

import ppo_atari
import ppo_continuous
import ppo_discrete
import tests.toy_envs  # noqa: F401  (registers ComboLock-v0)
from tests.checks import one_line_error
from tests.test_scripts import ROOT, TINY, in_tmp_dir  # noqa: F401  (in_tmp_dir: autouse)


def trained_and_exported(ppo, **flags):
    summary = ppo.train(ppo.Args(**{**TINY[ppo], **flags, "export_onnx": "policy.onnx", "save_model": True}))
    model = torch.load(summary["model_path"], weights_only=True)
    return summary["agent"].cpu(), model, onnxruntime.InferenceSession("policy.onnx")


def observations_from_the_env(ppo, args, count=256):
    """count observations (and info) from random play, as the env gives them (after the script's wrappers)."""
    envs = ppo.make_envs(args)
    obs, info = envs.reset(seed=5)
    seen, masks, rng = [], [], np.random.default_rng(0)
    while len(seen) * envs.num_envs < count:
        seen.append(obs.copy())
        masks.append(info.get("action_mask"))
        if masks[-1] is not None:  # a random legal action of each component
            nvec = ppo.action_nvec(envs.single_action_space)
            _, mask = ppo.observation_and_mask(obs, info, nvec)
            choice = ppo.sample_actions(torch.from_numpy(np.where(mask, 0.0, ppo.MASKED_LOGIT)), nvec, rng)
            obs, _, _, _, info = envs.step(ppo.env_actions(choice, envs.single_action_space))
        else:
            obs, _, _, _, info = envs.step(envs.action_space.sample())
    envs.close()
    return np.concatenate(seen)[:count], (np.concatenate(masks)[:count] if masks[0] is not None else None)


def test_discrete_export_plays_the_greedy_actions():
    # Discrete; MultiDiscrete with masks and Dict observations; MultiBinary with masks in info
    for env_id in ["CartPole-v1", "ComboLock-v0", "Switches-v0"]:
        agent, _, session = trained_and_exported(ppo_discrete, env_id=env_id)
        args = ppo_discrete.Args(env_id=env_id)
        obs, flags = observations_from_the_env(ppo_discrete, args)
        space = ppo_discrete.make_env(args)().action_space
        nvec = ppo_discrete.action_nvec(space)
        with torch.no_grad():
            logits = agent(torch.as_tensor(obs, dtype=torch.float32))[0].numpy()
        if flags is not None:  # illegal actions never chosen
            logits = np.where(flags.astype(bool), logits, -np.inf)
        # each component's best action, by hand
        best = np.stack([part.argmax(-1) for part in np.split(logits, np.cumsum(nvec)[:-1], axis=-1)], -1)
        expected = ppo_discrete.env_actions(best, space)
        inputs = {"obs": obs.astype(np.float32)} | (
            {"action_mask": flags.astype(bool)} if flags is not None else {}
        )
        (actions,) = session.run(None, inputs)
        np.testing.assert_array_equal(actions, expected)


def test_continuous_export_normalizes_and_clips_as_evaluation_does():
    agent, model, session = trained_and_exported(ppo_continuous)  # Pendulum: normalized observations
    obs, _ = observations_from_the_env(ppo_continuous, ppo_continuous.Args(**TINY[ppo_continuous]))
    raw = obs  # make_envs gives raw observations: the script normalizes them
    stats = model["state"]["obs_rms"]
    obs_rms = ppo_continuous.RunningMeanStd(stats["mean"].numpy(), stats["var"].numpy())
    with torch.no_grad():
        mean = agent(torch.from_numpy(ppo_continuous.normalize(raw, obs_rms, 10.0).astype(np.float32)))[
            0
        ].numpy()
    expected = np.clip(mean, -2.0, 2.0)  # Pendulum's bounds
    (actions,) = session.run(None, {"obs": raw.astype(np.float32)})
    np.testing.assert_allclose(actions, expected, rtol=1e-5, atol=1e-5)  # float32 rounding apart


def test_atari_export_takes_the_preprocessed_stack():
    agent, _, session = trained_and_exported(ppo_atari)
    agent.bf16 = False
    obs, _ = observations_from_the_env(ppo_atari, ppo_atari.Args(**TINY[ppo_atari]))
    assert obs.shape == (256, 4, 84, 84) and obs.dtype == np.uint8
    with torch.no_grad():
        expected = (
            agent(torch.from_numpy(obs).contiguous(memory_format=torch.channels_last))[0].argmax(-1).numpy()
        )
    (actions,) = session.run(None, {"obs": obs})
    np.testing.assert_array_equal(actions, expected)


def test_the_readme_example_runs_an_exported_policy_without_the_script():
    summary = ppo_discrete.train(
        ppo_discrete.Args(total_timesteps=4096, export_onnx="cartpole.onnx", save_model=True)
    )
    readme = open(os.path.join(ROOT, "README.md")).read()
    (example,) = re.findall(r"```python\n(import onnxruntime.*?)```", readme, re.S)
    scope = {}
    exec(example, scope)  # runs in a fresh namespace: no import of the scripts
    assert "import ppo" not in example
    agent = ppo_discrete.Agent(4, [2])  # the same episode, played by the saved network's most likely actions
    agent.load_state_dict(torch.load(summary["model_path"], weights_only=True)["agent"])
    env = gym.make("CartPole-v1")
    (obs, _), done, total = env.reset(seed=0), False, 0.0
    while not done:
        with torch.no_grad():
            action = agent(torch.as_tensor(obs[None]))[0].argmax().item()
        obs, reward, terminated, truncated, _ = env.step(action)
        total, done = total + reward, terminated or truncated
    assert scope["total"] == total


def test_the_readme_example_loads_a_saved_model_into_the_agent():
    summary = ppo_discrete.train(ppo_discrete.Args(total_timesteps=1024, save_model=True))
    readme = open(os.path.join(ROOT, "README.md")).read()
    (example,) = re.findall(r"```python\n(import gymnasium as gym, torch\nimport ppo_discrete\n.*?)```", readme, re.S)
    scope = {}
    exec(example.replace("runs/RUN/ppo_discrete.model", summary["model_path"]), scope)
    obs, _ = gym.make("CartPole-v1").reset(seed=0)
    logits, value = summary["agent"](torch.as_tensor(obs[None]))
    assert torch.equal(scope["logits"], logits) and torch.equal(scope["value"], value)


def test_a_saved_model_is_exported_alone_where_0_evaluation_episodes_are_named(capsys):
    model_path = ppo_discrete.train(ppo_discrete.Args(**TINY[ppo_discrete], save_model=True))["model_path"]
    args = ppo_discrete.Args(load_model=model_path, eval_episodes=0, export_onnx="alone.onnx")
    unnamed = ppo_discrete.evaluate_saved_model(args, {"load_model", "export_onnx"})
    assert len(unnamed["eval_returns"]) == 10  # --load-model's default count
    os.remove("alone.onnx")
    named = ppo_discrete.evaluate_saved_model(args, {"load_model", "export_onnx", "eval_episodes"})
    assert named["eval_returns"] == [] and os.path.exists("alone.onnx")
    nothing = ppo_discrete.Args(load_model=model_path, eval_episodes=0)
    line = one_line_error(
        capsys, lambda: ppo_discrete.evaluate_saved_model(nothing, {"load_model", "eval_episodes"})
    )
    assert line.endswith("--eval-episodes 0 has nothing to do: name episodes to play, or --export-onnx")
