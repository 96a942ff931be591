"""ppo_discrete.py with MultiDiscrete actions and Dict observations: a toy env learned to its optimum without
an illegal action, and the components' log-probabilities, entropy, KL and loss against values computed by
hand."""

import numpy as np
import pytest
import torch

import ppo_discrete as ppo
import tests.toy_envs  # noqa: F401  (registers ComboLock-v0)
from tests.checks import StubAgent, one_line_error
from tests.test_scripts import in_tmp_dir  # noqa: F401  (autouse: runs/ in the test's directory)


@pytest.mark.slow
def test_combo_lock_is_learned_to_the_optimum_without_an_illegal_action():
    # the env raises on an illegal action: finishing training and both evaluations proves none was taken
    args = dict(env_id="ComboLock-v0", total_timesteps=24_576, eval_episodes=20, save_model=True)
    summary = ppo.train(ppo.Args(**args))
    assert np.mean(summary["recent_returns"]) > 1.8
    assert summary["eval_returns"] == [2.0] * 20  # greedy: both components right, every time
    sampled = ppo.evaluate_saved_model(
        ppo.Args(load_model=summary["model_path"], eval_episodes=50, eval_greedy=False)
    )
    assert np.mean(sampled["eval_returns"]) > 1.5


def test_multibinary_switches_are_learned_without_an_illegal_action():
    # Switches-v0 raises on an illegal action; a random policy scores 2.5 of 4
    args = ppo.Args(env_id="Switches-v0", total_timesteps=8192, eval_episodes=20, save_model=True)
    summary = ppo.train(args)
    assert np.mean(summary["recent_returns"]) > 2.8
    assert summary["eval_returns"] == [4.0] * 20
    space = ppo.make_env(args)().action_space
    assert ppo.action_nvec(space) == [2, 2, 2, 2]
    assert space.contains(ppo.env_actions(np.array([[1, 0, 0, 1]]), space)[0])  # the env's 0s and 1s
    sampled = ppo.evaluate_saved_model(ppo.Args(load_model=summary["model_path"], eval_greedy=False))
    assert len(sampled["eval_returns"]) == 10


def test_the_action_mask_is_read_per_component():
    flags = np.array([[1, 0, 1, 0, 1, 1, 1, 0, 1]], np.int8)  # MultiDiscrete([3, 4, 2]): 3, 4 and 2 flags
    obs, mask = ppo.observation_and_mask(np.zeros((1, 2)), {"action_mask": flags}, [3, 4, 2])
    assert obs.dtype == np.float32 and mask.dtype == bool
    np.testing.assert_array_equal(mask, flags.astype(bool))
    assert ppo.observation_and_mask(np.zeros((1, 2)), {}, [3, 4, 2])[1] is None


def test_each_component_samples_and_chooses_among_its_own_actions():
    nvec, rng = [3, 2], np.random.default_rng(0)
    logits = torch.tensor([[0.0, 5.0, 0.0, 9.0, 0.0]])  # component 0 prefers 1, component 1 prefers 0
    assert ppo.component_argmax(logits.numpy(), nvec).tolist() == [[1, 0]]
    samples = np.array([ppo.sample_actions(logits, nvec, rng)[0] for _ in range(2000)])
    assert samples[:, 0].max() <= 2 and samples[:, 1].max() <= 1
    np.testing.assert_allclose((samples[:, 0] == 1).mean(), np.exp(5) / (np.exp(5) + 2), atol=0.03)


def softmax_over(logits, legal):
    weights = np.where(legal, np.exp(logits - logits.max()), 0.0)
    return weights / weights.sum()


def test_components_probabilities_entropy_kl_and_loss_by_hand():
    # 2 states; action 1, then 3 illegal
    nvec, flags = [3, 2], np.array([[1, 0, 1, 1, 1], [1, 1, 1, 0, 1]], bool)
    old_flat = np.array([[0.5, 9.0, -0.3, 0.2, 0.1], [1.0, -1.0, 0.0, 7.0, 0.4]], np.float32)
    new_flat = np.array([[0.1, 3.0, 0.4, -0.2, 0.6], [0.7, -0.5, 0.2, 2.0, 0.0]], np.float32)
    actions = np.array([[2, 0], [1, 1]])
    _, masks = ppo.observation_and_mask(np.zeros((2, 1)), {"action_mask": flags}, nvec)

    # by hand: each component a softmax over its legal actions; log-probs, entropies and KLs add up
    components = [slice(0, 3), slice(3, 5)]
    old = [[softmax_over(old_flat[i, c], flags[i, c]) for c in components] for i in range(2)]
    new = [[softmax_over(new_flat[i, c], flags[i, c]) for c in components] for i in range(2)]
    old_logprob = [sum(np.log(old[i][k][actions[i, k]]) for k in range(2)) for i in range(2)]
    new_logprob = [sum(np.log(new[i][k][actions[i, k]]) for k in range(2)) for i in range(2)]
    entropy = np.mean([-sum((p[p > 0] * np.log(p[p > 0])).sum() for p in new[i]) for i in range(2)])
    kl = np.mean(
        [
            sum((p[p > 0] * np.log(p[p > 0] / q[p > 0])).sum() for p, q in zip(old[i], new[i]))
            for i in range(2)
        ]
    )
    advantages = np.array([1.5, -0.5])
    ratio = np.exp(np.array(new_logprob) - np.array(old_logprob))
    expected_loss = (
        -(advantages * ratio).mean() + 0.7 * kl - 0.01 * entropy + 0.5 * 0.5 * np.mean([0.25, 1.0])
    )

    rollout = ppo.Rollout(
        np.zeros((1, 2, 1), np.float32),
        actions[None],
        masks[None],
        torch.from_numpy(old_flat)[None],
        np.zeros((1, 2), np.float32),
        None,
        None,
        None,
    )
    batch = ppo.make_batch(
        rollout,
        advantages[None].astype(np.float32),
        np.array([[0.5, -1.0]], np.float32),
        nvec,
        torch.device("cpu"),
    )
    np.testing.assert_allclose(batch.logprobs.numpy(), old_logprob, rtol=1e-5)
    args = ppo.Args(objective="kl-fixed", clip_vloss=False)
    loss, logs, _ = ppo.ppo_loss(
        StubAgent(new_flat, np.zeros(2), nvec=nvec), batch, args, ppo.Schedule(1.0, 0.2, 0.01, 0.7)
    )
    assert logs["entropy"].item() == pytest.approx(entropy, rel=1e-5)
    new_log_probs = ppo.masked_log_probs(torch.from_numpy(new_flat), batch.masks, nvec)
    assert ppo.categorical_kl(batch.policy_log_probs, new_log_probs).mean().item() == pytest.approx(
        kl, rel=1e-4
    )
    assert loss.item() == pytest.approx(expected_loss, rel=1e-5)
    assert (new_log_probs.exp()[~batch.masks] == 0).all()  # illegal actions: probability 0


def test_a_component_without_a_legal_action_is_an_env_error():
    flags = np.array([[1, 1, 1, 0, 0]], bool)  # the second component of MultiDiscrete([3, 2]) has none
    with pytest.raises(ppo.EnvError, match="no legal action"):
        ppo.observation_and_mask(np.zeros((1, 1)), {"action_mask": flags}, [3, 2])
    with pytest.raises(ppo.EnvError, match="has 4 flags; its actions need 5"):
        ppo.observation_and_mask(np.zeros((1, 1)), {"action_mask": flags[:, :4]}, [3, 2])


def test_a_model_whose_observation_layout_differs_is_refused(capsys):
    summary = ppo.train(ppo.Args(env_id="ComboLock-v0", total_timesteps=512, save_model=True))
    model = torch.load(summary["model_path"], weights_only=True)
    assert "'first'" in model["spaces"][0] and "'action_mask'" in model["spaces"][0]  # keys, order, shapes
    model["spaces"][0] = model["spaces"][0].replace("'first'", "'primary'")
    torch.save(model, "other_layout.model")
    capsys.readouterr()  # the training's output
    error = one_line_error(
        capsys, lambda: ppo.evaluate_saved_model(ppo.Args(load_model="other_layout.model"))
    )
    assert "is for another env: its observation space is" in error
