"""Checks shared by the tests of several scripts."""

import sys

import gymnasium as gym
import numpy as np
import pytest
import torch

import ppo_atari
import ppo_continuous
import ppo_discrete


def assert_orthogonal_init(layer: torch.nn.Module, gain: float):
    """Weights orthogonal with scale gain (W W^T = gain^2 I on the smaller side), biases zero."""
    w = layer.weight.detach().double().flatten(1)
    gram = w @ w.T if w.shape[0] <= w.shape[1] else w.T @ w
    np.testing.assert_allclose(gram, gain**2 * np.eye(min(w.shape)), atol=1e-5)
    assert torch.all(layer.bias == 0)


def record_steps(ppo, monkeypatch) -> list:
    """From now on every env the script makes keeps (observation, the action it got) of each of its steps in
    .steps; returns the list of those envs, in the order they were made."""
    made = []

    class Recorder(gym.Wrapper):
        def __init__(self, env):
            super().__init__(env)
            self.steps = []
            made.append(self)

        def reset(self, **kwargs):
            self.obs, info = self.env.reset(**kwargs)
            return self.obs, info

        def step(self, action):
            self.steps.append((np.asarray(self.obs), np.array(action)))
            self.obs, *rest = self.env.step(action)
            return self.obs, *rest

    wrap_envs(ppo, monkeypatch, Recorder)
    return made


def wrap_envs(ppo, monkeypatch, wrapper):
    """From now on every env the script makes is wrapped: wrapper(env) (a user's edit of make_env)."""
    make_env = ppo.make_env

    def wrapped_env(*given, **named):
        return lambda: wrapper(make_env(*given, **named)())

    monkeypatch.setattr(ppo, "make_env", wrapped_env)


def edit_agents(ppo, monkeypatch, edit):
    """From now on every Agent the script makes goes through edit(agent, *make_agent's arguments) (a user's
    edit of the network)."""
    make_agent = ppo.make_agent

    def edited_agent(*given):
        agent = make_agent(*given)
        edit(agent, *given)
        return agent

    monkeypatch.setattr(ppo, "make_agent", edited_agent)


def one_line_error(capsys, run) -> str:
    """run() stops with exit code 2 and one line on stderr starting "error: "; returns that line."""
    with pytest.raises(SystemExit) as exit_info:
        run()
    lines = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2 and len(lines) == 1 and lines[0].startswith("error: "), lines
    return lines[0]


def help_text(ppo, monkeypatch, capsys, columns: int = 200) -> str:
    """What `python ppo_*.py --help` prints in a terminal this wide, read in this process (main() as the shell
    calls it)."""
    monkeypatch.setenv("COLUMNS", str(columns))
    monkeypatch.setattr(sys, "argv", [f"{ppo.__name__}.py", "--help"])
    with pytest.raises(SystemExit) as exit_info:
        ppo.main()
    assert exit_info.value.code == 0
    return capsys.readouterr().out


class StubAgent(torch.nn.Module):
    """Gives fixed outputs, row i to observation i (or the same row to every observation, if one row)."""

    def __init__(self, *outputs, nvec=None):
        super().__init__()
        self.outputs = [torch.as_tensor(np.asarray(output, np.float32)) for output in outputs]
        self.nvec = nvec

    def forward(self, obs):
        return tuple(output.expand(len(obs), *output.shape[1:]) for output in self.outputs)


def agent_and_its_own_batch(ppo, n=64):
    """An agent and a batch of its own policy (old = new) in which the actions that the advantages favour are
    known: advantage +1 for action 0 (continuous: a first component above the mean), -1 for the others."""
    torch.manual_seed(0)
    agent = {
        ppo_discrete: lambda: ppo_discrete.Agent(4, [3]),
        ppo_continuous: lambda: ppo_continuous.Agent(4, 2),
        ppo_atari: lambda: ppo_atari.Agent(3),
    }[ppo]()
    obs = torch.randint(0, 256, (n, 4, 84, 84), dtype=torch.uint8) if ppo is ppo_atari else torch.randn(n, 4)
    with torch.no_grad():
        outputs = [output.clone() for output in agent(obs)]
    if ppo is ppo_continuous:
        means, log_stds, values = outputs
        actions = means + log_stds.exp() * torch.randn(n, 2)
        advantages = torch.where(actions[:, 0] > means[:, 0], 1.0, -1.0)
        logprobs = ppo.gaussian_log_prob(actions, means, log_stds)
        return (
            agent,
            ppo.Batch(obs, actions, means, log_stds, logprobs, values, advantages, values),
            advantages,
        )
    log_probs, values = torch.log_softmax(outputs[0], -1), outputs[1]
    actions = torch.arange(n) % 3
    advantages = torch.where(actions == 0, 1.0, -1.0)
    logprobs = log_probs[torch.arange(n), actions]
    if ppo is ppo_discrete:
        return (
            agent,
            ppo.Batch(obs, actions[:, None], None, log_probs, logprobs, values, advantages, values),
            advantages,
        )
    return agent, ppo.Batch(obs, actions, log_probs, logprobs, values, advantages, values), advantages


def rollout_of(ppo, agent, env_fns, num_steps, **flags):
    """One rollout of agent in a vector env of env_fns, as make_envs builds it (SAME_STEP autoreset, the envs'
    own observation buffers); returns the rollout, the episodes that ended, and the state handed to the next
    rollout."""
    envs = gym.vector.SyncVectorEnv(env_fns, copy=False, autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    args = ppo.Args(num_envs=len(env_fns), num_steps=num_steps, **flags)
    state = ppo.restart_episodes(envs, args, seed=0)
    rollout, finished = ppo.collect_rollout(
        envs, agent, state, args, np.random.default_rng(0), torch.device("cpu")
    )
    envs.close()
    return rollout, finished, state
