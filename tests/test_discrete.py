"""ppo_discrete.py formulas against numbers computed independently (by hand or a slow loop), and its
learning."""

import math

import numpy as np
import pytest
import torch

import ppo_discrete as ppo
from tests.checks import assert_orthogonal_init


def slow_gae(rewards, values, dones, next_value, gamma, lam):
    """A_t = sum_l (gamma*lam)^l delta_{t+l}, summed until the episode ends, one (t, env) at a time."""
    num_steps, num_envs = rewards.shape
    advantages = np.zeros((num_steps, num_envs))
    for env in range(num_envs):
        for t in range(num_steps):
            total, weight = 0.0, 1.0
            for k in range(t, num_steps):
                following = next_value[env] if k == num_steps - 1 else values[k + 1, env]
                delta = rewards[k, env] + gamma * following * (1 - dones[k, env]) - values[k, env]
                total += weight * delta
                if dones[k, env]:
                    break
                weight *= gamma * lam
            advantages[t, env] = total
    return advantages


def test_gae_by_hand():
    # one env, gamma = lam = 0.5, the episode ends at step 1, the last step bootstraps from next_value = 4
    rewards = np.array([[1.0], [2.0], [3.0]], np.float32)
    values = np.array([[1.0], [1.0], [2.0]], np.float32)
    dones = np.array([[0.0], [1.0], [0.0]], np.float32)
    advantages, returns = ppo.compute_gae(rewards, values, dones, np.array([4.0], np.float32), 0.5, 0.5)
    # delta_2 = 3 + 0.5*4 - 2 = 3;  A_2 = 3
    # delta_1 = 2 + 0 - 1 = 1;      A_1 = 1 (episode ended: nothing flows back from step 2)
    # delta_0 = 1 + 0.5*1 - 1 = 0.5; A_0 = 0.5 + 0.25*1 = 0.75
    np.testing.assert_allclose(advantages[:, 0], [0.75, 1.0, 3.0])
    np.testing.assert_allclose(returns[:, 0], [1.75, 2.0, 5.0])


def test_gae_matches_slow_loop_with_terminations_and_truncations():
    rng = np.random.default_rng(0)
    rewards = rng.normal(size=(64, 5)).astype(np.float32)
    values = rng.normal(size=(64, 5)).astype(np.float32)
    dones = (rng.random((64, 5)) < 0.1).astype(np.float32)
    dones[-1, 0] = 1.0  # an episode that ends on the very last step: next_value must not leak in
    next_value = rng.normal(size=5).astype(np.float32)
    # a truncation is a done whose reward already holds + gamma * V(final_obs) (collect_rollout adds it)
    truncated = (dones == 1) & (rng.random((64, 5)) < 0.5)
    final_values = rng.normal(size=(64, 5)).astype(np.float32)
    rewards = np.where(truncated, rewards + 0.99 * final_values, rewards).astype(np.float32)
    advantages, returns = ppo.compute_gae(rewards, values, dones, next_value, 0.99, 0.95)
    expected = slow_gae(rewards, values, dones, next_value, 0.99, 0.95)
    np.testing.assert_allclose(advantages, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(returns, expected + values, rtol=1e-5, atol=1e-5)


def test_clipped_policy_loss_by_hand():
    old = torch.zeros(4)
    new = torch.log(torch.tensor([1.5, 0.5, 1.1, 0.5])).requires_grad_()
    advantages = torch.tensor([1.0, -1.0, 2.0, 1.0])
    loss, logratio = ppo.policy_loss(new, old, advantages, "clip", clip_coef=0.2)
    # per sample min(r*A, clip(r)*A): min(1.5, 1.2)=1.2; min(-0.5, -0.8)=-0.8; min(2.2, 2.2)=2.2; min(0.5,
    # 0.8)=0.5
    assert loss.item() == pytest.approx(-(1.2 - 0.8 + 2.2 + 0.5) / 4, abs=1e-6)
    np.testing.assert_allclose(logratio.detach(), new.detach(), atol=1e-7)
    loss.backward()
    # d(-r*A/4)/d(log r) = -r*A/4 where the unclipped term is the min, 0 where the clip binds
    np.testing.assert_allclose(new.grad, [0.0, 0.0, -1.1 * 2.0 / 4, -0.5 * 1.0 / 4], atol=1e-6)


def test_clipped_value_loss_by_hand():
    new = torch.tensor([3.0, 1.5], requires_grad=True)
    old = torch.tensor([1.0, 1.0])
    returns = torch.tensor([2.0, 3.0])
    loss = ppo.value_loss(new, old, returns, clip_coef=0.2, clip=True)
    # sample 0: (3-2)^2 = 1 vs clipped prediction 1.2: (1.2-2)^2 = 0.64 -> 1
    # sample 1: (1.5-3)^2 = 2.25 vs clipped prediction 1.2: (1.2-3)^2 = 3.24 -> 3.24 (no gradient)
    assert loss.item() == pytest.approx(0.5 * (1.0 + 3.24) / 2)
    loss.backward()
    np.testing.assert_allclose(new.grad, [0.5 * 2 * (3 - 2) / 2, 0.0], atol=1e-6)
    plain = ppo.value_loss(new, old, returns, clip_coef=0.2, clip=False)
    assert plain.item() == pytest.approx(0.5 * (1.0 + 2.25) / 2)


def test_learning_rate_and_clip_anneal_linearly():
    annealed = ppo.Args(anneal_lr=True, anneal_clip=True, clip_coef=2.0)
    assert [ppo.iteration_schedule(i, 4, annealed, 0.0).lr_factor for i in range(1, 5)] == [
        1.0,
        0.75,
        0.5,
        0.25,
    ]
    assert [ppo.iteration_schedule(i, 4, annealed, 0.0).clip_coef for i in range(1, 5)] == [
        2.0,
        1.5,
        1.0,
        0.5,
    ]
    constant = ppo.Args(anneal_lr=False, anneal_clip=False, clip_coef=2.0)
    assert {ppo.iteration_schedule(i, 4, constant, 0.0)[:2] for i in range(1, 5)} == {(1.0, 2.0)}


@pytest.mark.parametrize("shared_body", [False, True])
def test_orthogonal_init_gains_and_zero_biases(shared_body):
    agent = ppo.Agent(obs_dim=8, nvec=[4], hidden_sizes=(64, 32), shared_body=shared_body)
    hidden = [m for m in [*agent.actor_body, *agent.critic_body] if isinstance(m, torch.nn.Linear)]
    assert [layer.weight.shape for layer in hidden[:2]] == [(64, 8), (32, 64)]
    for layer in hidden:
        assert_orthogonal_init(layer, math.sqrt(2))
    assert_orthogonal_init(agent.actor_head, 0.01)
    assert_orthogonal_init(agent.critic_head, 1.0)
    assert (agent.actor_body is agent.critic_body) == shared_body


def test_shared_body_computes_the_body_once_for_both_heads():
    agent = ppo.Agent(4, [3], shared_body=True)
    obs = torch.randn(10, 4)
    logits, values = agent(obs)
    features = agent.actor_body(obs)
    torch.testing.assert_close(logits, agent.actor_head(features))
    torch.testing.assert_close(values, agent.critic_head(features).squeeze(-1))
    assert logits.shape == (10, 3) and values.shape == (10,)


def test_sampled_actions_follow_softmax():
    logits = np.array([[0.0, 1.0, -1.0], [2.0, 0.0, 0.0]])
    rng = np.random.default_rng(0)
    # (20000, 2)
    samples = np.stack([ppo.sample_actions(torch.tensor(logits), [3], rng)[:, 0] for _ in range(20000)])
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    for row in range(2):
        frequencies = np.bincount(samples[:, row], minlength=3) / len(samples)
        np.testing.assert_allclose(frequencies, probs[row], atol=0.01)  # ~4 standard errors


def test_explained_variance():
    target = np.array([1.0, 2.0, 3.0, 4.0])
    assert ppo.explained_variance(target, target) == 1.0
    assert ppo.explained_variance(np.full(4, 2.5), target) == pytest.approx(0.0)
    # residual [0.5, -0.5, 0.5, -0.5]: var 0.25 against var(target) 1.25
    assert ppo.explained_variance(target - np.array([0.5, -0.5, 0.5, -0.5]), target) == pytest.approx(0.8)


def test_shared_body_and_relu_train(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = ppo.Args(
        shared_body=True, activation="ReLU", hidden_sizes=(32,), save_model=True, total_timesteps=1024
    )
    summary = ppo.train(args)
    agent, saved = summary["agent"], torch.load(summary["model_path"], weights_only=True)
    assert agent.actor_body is agent.critic_body and isinstance(agent.actor_body[1], torch.nn.ReLU)
    assert saved["args"]["activation"] == "ReLU" and saved["args"]["hidden_sizes"] == (32,)
    assert ppo.evaluate_saved_model(ppo.Args(load_model=summary["model_path"], eval_episodes=1))[
        "eval_returns"
    ]


@pytest.mark.slow
def test_cartpole_learns_with_the_defaults(tmp_path, monkeypatch):
    """The learning test: seed 1, CleanRL's defaults but 100k steps (the mean of the last 100 episodes: 233,
    284 and 269 with seeds 1-3; random play: 22; 500k steps solve it, benchmarks/README.md)."""
    monkeypatch.chdir(tmp_path)
    summary = ppo.train(ppo.Args(seed=1, total_timesteps=100_000))
    assert len(summary["recent_returns"]) == 100 and np.mean(summary["recent_returns"]) >= 175


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Acrobot-v1", "MountainCar-v0", "LunarLander-v3"])
def test_works_by_env_id_alone(env_id, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    summary = ppo.train(ppo.Args(env_id=env_id, total_timesteps=256, num_steps=64, save_model=True))
    assert torch.load(summary["model_path"], weights_only=True)["args"]["env_id"] == env_id
