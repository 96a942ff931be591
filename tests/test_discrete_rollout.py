"""Episode boundaries in collect_rollout: no reset step is ever stored, truncations bootstrap from
V(final obs), logged returns are the env's raw returns."""

import gymnasium as gym
import numpy as np
import torch

import ppo_discrete as ppo
from tests.toy_envs import CountingEnv


def rollout(env_fns, num_steps, bootstrap_truncation=True, gamma=0.9, seed=0):
    # as make_envs: step hands back the envs' own observation buffer, overwritten at the next step
    envs = gym.vector.SyncVectorEnv(env_fns, copy=False, autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    obs, _ = envs.reset(seed=seed)
    torch.manual_seed(seed)
    agent = ppo.Agent(2, 3)
    returns, lengths = np.zeros(envs.num_envs), np.zeros(envs.num_envs, dtype=np.int64)
    data, next_obs, _, finished = ppo.collect_rollout(
        envs, agent, obs.astype(np.float32), None, num_steps, gamma, bootstrap_truncation,
        np.random.default_rng(seed), torch.device("cpu"), returns, lengths)
    envs.close()
    return agent, (data, next_obs, finished)


def test_no_reset_step_is_stored():
    # episodes of 3 steps: every stored transition must be a real one (reward = action + 1 > 0),
    # and the observation after a done is the next episode's first one, [0, 1]
    _, (data, next_obs, finished) = rollout([lambda: CountingEnv(3)] * 2, num_steps=10)
    np.testing.assert_array_equal(data["rewards"], data["actions"] + 1)
    np.testing.assert_array_equal(data["obs"][:, :, 0], np.tile(np.arange(10) % 3, (2, 1)).T)
    np.testing.assert_array_equal(data["dones"][:, 0], [0, 0, 1, 0, 0, 1, 0, 0, 1, 0])
    np.testing.assert_array_equal(next_obs[:, 0], [1, 1])  # step 10 is the 2nd step of episode 4
    # three finished episodes per env, each with its raw return and length 3
    assert len(finished) == 6
    for step, env, episode_return, length in finished:
        assert length == 3
        assert episode_return == data["rewards"][step - 2 : step + 1, env].sum()


def test_truncation_bootstraps_from_final_observation():
    # a never-ending env cut by a time limit of 4 steps: the step that truncates gets
    # reward + gamma * V(final obs [4, 1]); the episode return logged stays the raw sum
    make = lambda: gym.wrappers.TimeLimit(CountingEnv(episode_length=None), max_episode_steps=4)
    agent, (data, _, finished) = rollout([make], num_steps=6, gamma=0.9)
    v_final = agent.value(torch.tensor([[4.0, 1.0]])).item()
    raw_rewards = data["actions"][:, 0] + 1.0
    expected = raw_rewards.copy()
    expected[3] += 0.9 * v_final
    np.testing.assert_allclose(data["rewards"][:, 0], expected, rtol=1e-6)
    np.testing.assert_array_equal(data["dones"][:, 0], [0, 0, 0, 1, 0, 0])
    ((step, _, episode_return, length),) = finished
    assert (step, length) == (3, 4) and episode_return == raw_rewards[:4].sum()

    _, (plain, _, _) = rollout([make], num_steps=6, gamma=0.9, bootstrap_truncation=False)
    np.testing.assert_array_equal(plain["rewards"][:, 0], plain["actions"][:, 0] + 1.0)
    np.testing.assert_array_equal(plain["dones"][:, 0], [0, 0, 0, 1, 0, 0])


def test_termination_does_not_bootstrap():
    _, (data, _, _) = rollout([lambda: CountingEnv(2)], num_steps=4, gamma=0.9)
    np.testing.assert_array_equal(data["rewards"][:, 0], data["actions"][:, 0] + 1.0)


def test_scores_of_the_batched_pass_match_one_by_one():
    agent, (data, next_obs, _) = rollout([lambda: CountingEnv(5)] * 3, num_steps=7)
    obs = torch.from_numpy(data["obs"].reshape(-1, 2))
    with torch.no_grad():
        log_probs = torch.log_softmax(agent.logits(obs), -1)
        expected_logprobs = log_probs[torch.arange(21), torch.from_numpy(data["actions"].reshape(-1))]
        expected_values = agent.value(obs).reshape(7, 3)
        expected_next = agent.value(torch.from_numpy(next_obs))
    torch.testing.assert_close(data["logprobs"], expected_logprobs)
    np.testing.assert_allclose(data["values"], expected_values.numpy(), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(data["next_value"], expected_next.numpy(), rtol=1e-6, atol=1e-6)
