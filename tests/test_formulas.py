"""The parts PPO implementations most often get wrong, in every script that has them, against values computed
here in numpy with stub agents: the total loss term by term, each minibatch's advantage normalization, the
clipped global gradient, the distribution the rollout samples from, the KL that adapts beta, truncation."""

import gymnasium as gym
import numpy as np
import pytest
import torch

import ppo_atari
import ppo_continuous
import ppo_discrete
from tests.checks import StubAgent, rollout_of
from tests.test_scripts import TINY, in_tmp_dir  # noqa: F401  (in_tmp_dir: autouse)
import tests.toy_envs  # noqa: F401  (registers ComboLock-v0)
from tests.toy_envs import BoundedActionEnv, CountingEnv, CountingFramesEnv

SCRIPTS = pytest.mark.parametrize("ppo", [ppo_discrete, ppo_continuous, ppo_atari], ids=lambda m: m.__name__)


def log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))


def gaussian_log_prob(actions, mean, std) -> np.ndarray:
    return (-((actions - mean) ** 2) / (2 * std**2) - np.log(std) - 0.5 * np.log(2 * np.pi)).sum(-1)


def gaussian_kl(old_mean, old_std, mean, std) -> np.ndarray:
    return (np.log(std / old_std) + (old_std**2 + (old_mean - mean) ** 2) / (2 * std**2) - 0.5).sum(-1)


def categorical_kl(old_log_probs, new_log_probs) -> np.ndarray:
    return (np.exp(old_log_probs) * (old_log_probs - new_log_probs)).sum(-1)


# ---- the total loss, term by term

def old_and_new_policy(ppo, rng, n):
    """A batch of n samples with old and new policies far enough apart that the clip acts, and a stub agent
    giving the new policy; with the ratio, entropy and KL of each sample computed in numpy."""
    values, old_values, returns, advantages = rng.normal(size=(4, n))
    if ppo is ppo_continuous:
        old_mean, mean = rng.normal(size=(2, n, 2))
        old_std, std = np.exp(rng.normal(scale=0.3, size=(2, n, 2)))
        actions = old_mean + old_std * rng.normal(size=(n, 2))
        old_logprob = gaussian_log_prob(actions, old_mean, old_std)
        new_logprob = gaussian_log_prob(actions, mean, std)
        entropy = (0.5 + 0.5 * np.log(2 * np.pi) + np.log(std)).sum(-1)
        kl = gaussian_kl(old_mean, old_std, mean, std)
        fields = dict(actions=actions, means=old_mean, log_stds=np.log(old_std))
        agent = StubAgent(mean, np.log(std), values)
    else:
        old_log_probs, new_log_probs = log_softmax(rng.normal(size=(2, n, 3)))
        actions = rng.integers(0, 3, n)
        old_logprob, new_logprob = old_log_probs[np.arange(n), actions], new_log_probs[np.arange(n), actions]
        entropy = -(np.exp(new_log_probs) * new_log_probs).sum(-1)
        kl = categorical_kl(old_log_probs, new_log_probs)
        if ppo is ppo_discrete:
            actions = actions[:, None]  # (batch, components)
        fields = dict(actions=actions, policy_log_probs=old_log_probs)
        agent = StubAgent(new_log_probs, values, nvec=[3])
    fields.update(obs=np.zeros((n, 1)), logprobs=old_logprob, values=old_values, advantages=advantages,
                  returns=returns)
    tensors = {name: torch.tensor(value, dtype=torch.int64 if name == "actions" and ppo is not ppo_continuous
                                  else torch.float32) for name, value in fields.items()}
    batch = ppo.Batch(**{name: tensors.get(name) for name in ppo.Batch._fields})  # masks: None
    by_hand = dict(ratio=np.exp(new_logprob - old_logprob), entropy=entropy, kl=kl, advantages=advantages,
                   values=values, old_values=old_values, returns=returns)
    return agent, batch, by_hand


@SCRIPTS
@pytest.mark.parametrize("objective,clip_vloss", [("clip", True), ("kl-fixed", False)])
def test_the_total_loss_term_by_term(ppo, objective, clip_vloss):
    """policy loss - ent_coef * entropy + vf_coef * value loss, with the iteration's clip coefficient (not the
    flag's) in the surrogate and in the value clip, against numpy."""
    agent, batch, x = old_and_new_policy(ppo, np.random.default_rng(0), 64)
    args = ppo.Args(objective=objective, clip_vloss=clip_vloss, clip_coef=0.3, vf_coef=0.7, ent_coef=0.5)
    schedule = ppo.Schedule(1.0, 0.1, 0.03, 0.4)  # lr factor, clip, entropy coefficient, KL beta
    loss, logs, logratio = ppo.ppo_loss(agent, batch, args, schedule)

    ratio, advantages, clip = x["ratio"], x["advantages"], 0.1
    unclipped = -advantages * ratio
    if objective == "clip":
        policy = np.maximum(unclipped, -advantages * np.clip(ratio, 1 - clip, 1 + clip)).mean()
        assert not np.isclose(policy, unclipped.mean(), rtol=0.05)  # the clip acts on this batch
    else:
        policy = unclipped.mean() + 0.4 * x["kl"].mean()
    squared_error = (x["values"] - x["returns"]) ** 2
    clipped_values = x["old_values"] + np.clip(x["values"] - x["old_values"], -clip, clip)
    if clip_vloss:
        value = 0.5 * np.maximum(squared_error, (clipped_values - x["returns"]) ** 2).mean()
        assert not np.isclose(value, 0.5 * squared_error.mean(), rtol=0.05)
    else:
        value = 0.5 * squared_error.mean()
    entropy = x["entropy"].mean()
    np.testing.assert_allclose(logratio.numpy(), np.log(ratio), rtol=1e-4, atol=1e-5)
    assert logs["policy_loss"].item() == pytest.approx(policy, rel=1e-4)
    assert logs["value_loss"].item() == pytest.approx(value, rel=1e-4)
    assert logs["entropy"].item() == pytest.approx(entropy, rel=1e-4)
    assert loss.item() == pytest.approx(policy - 0.03 * entropy + 0.7 * value, rel=1e-4)


# ---- the update: advantages per minibatch, gradient clipping

class Recorder(torch.nn.Module):
    """A loss function for update() that records each minibatch; its loss is the dot product of two parameters
    (sizes 3 and 2) with the fixed vector `gradient`, so the gradient of every step is known."""

    def __init__(self, gradient):
        super().__init__()
        self.first, self.second = torch.nn.Parameter(torch.zeros(3)), torch.nn.Parameter(torch.zeros(2))
        self.gradient, self.minibatches = torch.tensor(gradient, dtype=torch.float32), []

    def __call__(self, agent, minibatch, args, schedule):
        self.minibatches.append(minibatch)
        loss = (torch.cat([self.first, self.second]) * self.gradient).sum()
        return loss, {}, torch.zeros(len(minibatch.obs))


def batch_of_indices(ppo, advantages: np.ndarray):
    """A batch whose observation i is [i], to find each sample in the minibatches."""
    n = len(advantages)
    batch = ppo.Batch(*[torch.zeros(n)] * len(ppo.Batch._fields))
    return batch._replace(obs=torch.arange(n, dtype=torch.float32)[:, None],
                          advantages=torch.tensor(advantages, dtype=torch.float32))


@SCRIPTS
@pytest.mark.parametrize("norm_adv", [True, False])
def test_each_minibatch_advantages_are_normalized_on_their_own(ppo, norm_adv):
    """Mean 0 and std 1 within each minibatch (numpy's std with ddof=1, as torch's); every sample once an
    epoch, in a new order each epoch."""
    raw = np.arange(64.0) ** 2  # far from normal: whole-batch statistics differ from any minibatch's
    recorder = Recorder(np.zeros(5))
    args = ppo.Args(num_minibatches=4, update_epochs=2, norm_adv=norm_adv)
    optimizer = torch.optim.SGD(recorder.parameters(), lr=1.0)
    ppo.update(recorder, optimizer, batch_of_indices(ppo, raw), args, np.random.default_rng(0), recorder,
               ppo.Schedule(1.0, 0.2, 0.0, 0.0))
    assert len(recorder.minibatches) == 8
    rows = [minibatch.obs[:, 0].numpy().astype(int) for minibatch in recorder.minibatches]
    epochs = [np.concatenate(rows[:4]), np.concatenate(rows[4:])]
    for order in epochs:
        np.testing.assert_array_equal(np.sort(order), np.arange(64))  # every sample once, none twice
    assert not np.array_equal(epochs[0], epochs[1]) and not np.array_equal(epochs[0], np.arange(64))
    for minibatch, own_rows in zip(recorder.minibatches, rows):
        own = raw[own_rows]
        expected = (own - own.mean()) / (own.std(ddof=1) + 1e-8) if norm_adv else own
        np.testing.assert_allclose(minibatch.advantages.numpy(), expected, rtol=1e-4, atol=1e-5)


@SCRIPTS
@pytest.mark.parametrize("gradient", [[3.0, -4.0, 12.0, 0.0, 84.0], [0.1, 0.0, -0.2, 0.05, 0.1]],
                         ids=["over", "under"])
def test_the_step_takes_the_gradient_clipped_to_max_grad_norm_over_all_parameters(ppo, gradient):
    """SGD with learning rate 1 moves the parameters by minus the clipped gradient: the whole gradient scaled
    to norm max_grad_norm when over it (one norm over all parameters, not one per parameter), as it is when
    under. Two minibatches: a gradient left from the first would add to the second."""
    recorder = Recorder(gradient)
    args = ppo.Args(num_minibatches=2, update_epochs=1, max_grad_norm=0.5)
    optimizer = torch.optim.SGD(recorder.parameters(), lr=1.0)
    batch, schedule = batch_of_indices(ppo, np.zeros(8)), ppo.Schedule(1.0, 0.2, 0.0, 0.0)
    stats = ppo.update(recorder, optimizer, batch, args, np.random.default_rng(0), recorder, schedule)
    gradient = np.array(gradient)
    norm = np.sqrt((gradient**2).sum())
    clipped = gradient * min(1.0, 0.5 / norm)
    step = torch.cat([recorder.first, recorder.second]).detach().numpy()
    np.testing.assert_allclose(step, -2 * clipped, rtol=1e-5, atol=1e-7)
    assert stats["grad_norm"] == pytest.approx(norm, rel=1e-5)  # the norm before clipping is logged


# ---- the rollout samples from the policy that the agent gives

@pytest.mark.parametrize("ppo", [ppo_discrete, ppo_atari], ids=lambda m: m.__name__)
def test_the_rollout_samples_actions_with_the_policy_probabilities(ppo):
    logits = np.array([[1.0, 0.0, -1.0]])
    probs = np.exp(log_softmax(logits[0]))
    if ppo is ppo_discrete:
        rollout, *_ = rollout_of(ppo, StubAgent(logits, [[0.0]], nvec=[3]), [CountingEnv] * 4, 1000)
    else:
        rollout, *_ = rollout_of(ppo, StubAgent(logits, [[0.0]]), [CountingFramesEnv] * 4, 1000)
    frequencies = np.bincount(rollout.actions.reshape(-1), minlength=3) / 4000
    standard_errors = np.sqrt(probs * (1 - probs) / 4000)
    assert (np.abs(frequencies - probs) < 4 * standard_errors).all(), frequencies


def test_the_rollout_samples_legal_actions_only():
    """ComboLock raises on an illegal action; uniform logits over all 7 would pick one every other step."""
    agent = StubAgent(np.zeros((1, 7)), [0.0], nvec=[3, 4])
    env_fn = ppo_discrete.make_env(ppo_discrete.Args(env_id="ComboLock-v0"))
    rollout, *_ = rollout_of(ppo_discrete, agent, [env_fn] * 2, 200)
    legal = np.take_along_axis(rollout.masks, rollout.actions + [0, 3], axis=-1)  # each component's flag
    assert rollout.masks is not None and legal.all()


def test_the_rollout_samples_the_gaussian_of_the_policy_mean_and_std():
    """The stored actions, sampled before the env clips them to [-0.1, 0.1]: mean and std within 4 standard
    errors over 4,000 samples (a std of exp(2 log_std), or of 1, is 20 or more standard errors away)."""
    mean, std = np.array([0.3, -0.5]), np.array([0.6, 1.4])
    agent = StubAgent(mean[None], np.log(std)[None], [0.0])
    make = lambda: gym.wrappers.TimeLimit(BoundedActionEnv(), 50)
    rollout, *_ = rollout_of(ppo_continuous, agent, [make] * 4, 1000, norm_obs=False, norm_reward=False)
    actions = rollout.actions.reshape(-1, 2)
    assert (np.abs(actions.mean(0) - mean) < 4 * std / np.sqrt(4000)).all(), actions.mean(0)
    assert (np.abs(actions.std(0) - std) < 4 * std / np.sqrt(2 * 4000)).all(), actions.std(0)


class ValueOfFrames(torch.nn.Module):
    """Uniform logits over 3 actions; the value of a stack of frames is its mean pixel."""

    def forward(self, obs):
        return torch.zeros(len(obs), 3), obs.float().mean((1, 2, 3))


def test_atari_truncation_bootstraps_and_termination_does_not():
    """The step cut by the time limit gets sign(reward) + gamma * V(final frames); a terminated step, the
    clipped reward alone. The stub's value is the stack's mean pixel: the step count t of the final frames."""
    agent = ValueOfFrames()
    truncating = lambda: gym.wrappers.TimeLimit(CountingFramesEnv(episode_length=None), max_episode_steps=4)
    rollout, *_ = rollout_of(ppo_atari, agent, [truncating], 6, gamma=0.9)
    np.testing.assert_allclose(rollout.rewards[:, 0], [1, 1, 1, 1 + 0.9 * 4, 1, 1])
    np.testing.assert_array_equal(rollout.dones[:, 0], [0, 0, 0, 1, 0, 0])
    rollout, *_ = rollout_of(ppo_atari, agent, [truncating], 6, gamma=0.9, bootstrap_truncation=False)
    np.testing.assert_allclose(rollout.rewards[:, 0], [1, 1, 1, 1, 1, 1])
    rollout, *_ = rollout_of(ppo_atari, agent, [lambda: CountingFramesEnv(episode_length=4)], 6, gamma=0.9)
    np.testing.assert_allclose(rollout.rewards[:, 0], [1, 1, 1, 1, 1, 1])
    np.testing.assert_array_equal(rollout.dones[:, 0], [0, 0, 0, 1, 0, 0])


# ---- the KL that adapts beta

@SCRIPTS
def test_the_exact_kl_of_the_whole_update_adapts_beta(ppo, monkeypatch):
    """The KL handed to adapted_kl_beta is the exact KL[pi_old || pi] averaged over the batch: pi_old from the
    rollout's outputs, pi from the agent after the update, computed here in numpy."""
    rollouts, updated, kls = [], [], []
    original_make_batch, original_update, original_beta = ppo.make_batch, ppo.update, ppo.adapted_kl_beta

    def make_batch(rollout, *rest):
        rollouts.append(rollout)
        return original_make_batch(rollout, *rest)

    def update(agent, optimizer, batch, *rest):
        stats = original_update(agent, optimizer, batch, *rest)
        with torch.no_grad():
            updated.append([output.numpy().astype(np.float64) for output in agent(batch.obs)])
        return stats

    def adapted_kl_beta(kl_beta, kl, kl_target):
        kls.append(kl)
        return original_beta(kl_beta, kl, kl_target)

    for function in [make_batch, update, adapted_kl_beta]:
        monkeypatch.setattr(ppo, function.__name__, function)
    ppo.train(ppo.Args(**TINY[ppo], objective="kl-adaptive", learning_rate=0.01))  # a KL well above rounding
    assert len(kls) == len(rollouts) == 2
    for kl, rollout, outputs in zip(kls, rollouts, updated):
        if ppo is ppo_continuous:
            old_mean, old_log_std = (x.flatten(0, 1).numpy().astype(np.float64) for x in rollout[2:4])
            expected = gaussian_kl(old_mean, np.exp(old_log_std), outputs[0], np.exp(outputs[1])).mean()
        else:
            old = log_softmax(rollout.logits.flatten(0, 1).numpy().astype(np.float64))
            expected = categorical_kl(old, log_softmax(outputs[0])).mean()
        assert kl == pytest.approx(expected, rel=1e-3)
