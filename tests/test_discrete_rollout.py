"""Episode boundaries in collect_rollout: no reset step is ever stored, truncations bootstrap from
V(final obs), logged returns are the env's raw returns."""

import gymnasium as gym
import numpy as np
import torch

import ppo_discrete as ppo
from tests.checks import rollout_of
from tests.toy_envs import CountingEnv


def rollout(env_fns, num_steps, bootstrap_truncation=True, gamma=0.9):
    torch.manual_seed(0)
    agent = ppo.Agent(2, [3])
    data, finished, state = rollout_of(ppo, agent, env_fns, num_steps, gamma=gamma,
                                       bootstrap_truncation=bootstrap_truncation)
    return agent, (data, state.obs, finished)


def test_no_reset_step_is_stored():
    # episodes of 3 steps: every stored transition must be a real one (reward = action + 1 > 0),
    # and the observation after a done is the next episode's first one, [0, 1]
    _, (data, next_obs, finished) = rollout([lambda: CountingEnv(3)] * 2, num_steps=10)
    np.testing.assert_array_equal(data.rewards, data.actions[..., 0] + 1)  # one component: Discrete
    np.testing.assert_array_equal(data.obs[:, :, 0], np.tile(np.arange(10) % 3, (2, 1)).T)
    np.testing.assert_array_equal(data.dones[:, 0], [0, 0, 1, 0, 0, 1, 0, 0, 1, 0])
    np.testing.assert_array_equal(next_obs[:, 0], [1, 1])  # step 10 is the 2nd step of episode 4
    # three finished episodes per env, each with its raw return and length 3
    assert len(finished) == 6
    for step, env, episode_return, length in finished:
        assert length == 3
        assert episode_return == data.rewards[step - 2 : step + 1, env].sum()


def test_truncation_bootstraps_from_final_observation():
    # a never-ending env cut by a time limit of 4 steps: the step that truncates gets
    # reward + gamma * V(final obs [4, 1]); the episode return logged stays the raw sum
    make = lambda: gym.wrappers.TimeLimit(CountingEnv(episode_length=None), max_episode_steps=4)
    agent, (data, _, finished) = rollout([make], num_steps=6, gamma=0.9)
    with torch.no_grad():
        v_final = agent(torch.tensor([[4.0, 1.0]]))[1].item()
    raw_rewards = data.actions[:, 0, 0] + 1.0
    expected = raw_rewards.copy()
    expected[3] += 0.9 * v_final
    np.testing.assert_allclose(data.rewards[:, 0], expected, rtol=1e-6)
    np.testing.assert_array_equal(data.dones[:, 0], [0, 0, 0, 1, 0, 0])
    ((step, _, episode_return, length),) = finished
    assert (step, length) == (3, 4) and episode_return == raw_rewards[:4].sum()

    _, (plain, _, _) = rollout([make], num_steps=6, gamma=0.9, bootstrap_truncation=False)
    np.testing.assert_array_equal(plain.rewards[:, 0], plain.actions[:, 0, 0] + 1.0)
    np.testing.assert_array_equal(plain.dones[:, 0], [0, 0, 0, 1, 0, 0])


def test_termination_does_not_bootstrap():
    _, (data, _, _) = rollout([lambda: CountingEnv(2)], num_steps=4, gamma=0.9)
    np.testing.assert_array_equal(data.rewards[:, 0], data.actions[:, 0, 0] + 1.0)


def test_the_rollout_keeps_what_the_agent_gave_step_by_step():
    # the logits and values stored step by step (4 observations at a time) are the agent's on the whole
    # rollout
    agent, (data, next_obs, _) = rollout([lambda: CountingEnv(5)] * 3, num_steps=7)
    with torch.no_grad():
        logits, values = agent(torch.from_numpy(data.obs.reshape(-1, 2)))
        _, next_values = agent(torch.from_numpy(next_obs))
    torch.testing.assert_close(data.logits.reshape(-1, 3), logits)
    np.testing.assert_allclose(data.values, values.reshape(7, 3).numpy(), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(data.next_value, next_values.numpy(), rtol=1e-6, atol=1e-6)
    # the log-probabilities of the batch are those of the actions taken
    advantages = np.zeros((7, 3), np.float32)
    batch = ppo.make_batch(data, advantages, advantages, [3], torch.device("cpu"))
    expected = torch.log_softmax(logits, -1)[torch.arange(21), torch.from_numpy(data.actions.reshape(-1))]
    torch.testing.assert_close(batch.logprobs, expected)
