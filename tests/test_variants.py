"""The PPO paper's and the seeds' variants: objectives (clip, KL penalties, none, PPOG), the adaptive beta,
entropy decay, clip annealing, and invalid-action masking."""

import math

import numpy as np
import pytest
import torch

import ppo_atari
import ppo_continuous
import ppo_discrete
import tests.toy_envs  # noqa: F401  (registers MaskedTrading-v0)
from tests.checks import agent_and_its_own_batch
from tests.test_scripts import SCRIPTS, TINY, episode_curve, in_tmp_dir, read_events  # noqa: F401

CATEGORICAL = pytest.mark.parametrize("ppo", [ppo_discrete, ppo_atari], ids=lambda m: m.__name__)


@CATEGORICAL
def test_categorical_kl_by_hand(ppo):
    old = torch.log(torch.tensor([[0.5, 0.5], [0.1, 0.9]]))
    new = torch.log(torch.tensor([[0.25, 0.75], [0.1, 0.9]]))
    expected = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)
    torch.testing.assert_close(ppo.categorical_kl(old, new), torch.tensor([expected, 0.0]))


def test_gaussian_kl_by_hand():
    # KL(N(0, 1) || N(1, 2)) = log 2 + (1 + 1) / (2 * 4) - 1/2, per component, summed over the 2 components
    old_mean, new_mean = torch.zeros(1, 2), torch.ones(1, 2)
    old_log_std, new_log_std = torch.zeros(2), torch.full((2,), math.log(2.0))
    expected = 2 * (math.log(2.0) + 2 / 8 - 0.5)
    kl = ppo_continuous.gaussian_kl(old_mean, old_log_std, new_mean, new_log_std)
    torch.testing.assert_close(kl, torch.tensor([expected]))
    # and against torch.distributions
    means = torch.randn(5, 3), torch.randn(5, 3)
    log_stds = torch.randn(3), torch.randn(3)
    reference = torch.distributions.kl_divergence(
        torch.distributions.Normal(means[0], log_stds[0].exp()),
        torch.distributions.Normal(means[1], log_stds[1].exp()),
    )
    torch.testing.assert_close(
        ppo_continuous.gaussian_kl(means[0], log_stds[0], means[1], log_stds[1]), reference.sum(-1)
    )


# ratios 1.5, 0.5, 1.1, 0.5 and 1.3 with advantages 1, -1, 2, 1, -1; clip 0.2
RATIOS = torch.tensor([1.5, 0.5, 1.1, 0.5, 1.3])
ADVANTAGES = torch.tensor([1.0, -1.0, 2.0, 1.0, -1.0])


def scored(ppo, objective, **kwargs):
    new = torch.log(RATIOS).requires_grad_()
    loss, _ = ppo.policy_loss(new, torch.zeros(5), ADVANTAGES, objective, clip_coef=0.2, **kwargs)
    loss.backward()
    return loss.item(), new.grad


@SCRIPTS
def test_unclipped_and_kl_penalty_objectives_by_hand(ppo):
    surrogate = -(RATIOS * ADVANTAGES).mean().item()
    loss, grad = scored(ppo, "none")
    assert loss == pytest.approx(surrogate, abs=1e-6)
    torch.testing.assert_close(grad, -RATIOS * ADVANTAGES / 5)  # d(-r A / 5) / d log r
    loss, _ = scored(ppo, "kl-fixed", kl=torch.tensor(0.25), kl_beta=3.0)
    assert loss == pytest.approx(surrogate + 3.0 * 0.25, abs=1e-6)


@SCRIPTS
def test_ppog_by_hand_and_its_gradient_is_the_clipped_gradient_divided_by_the_ratio(ppo):
    # stopped (ratio left [0.8, 1.2] in the advantage's direction): sample 0 (r 1.5, A > 0) and 1 (r 0.5, A <
    # 0); sample 3 (r 0.5, A > 0) and 4 (r 1.3, A < 0) left it against the advantage: they keep their gradient
    log_pi = torch.log(RATIOS)  # old log-prob 0, so log pi = log r
    loss, ppog_grad = scored(ppo, "ppog")
    kept = torch.tensor([0.0, 0.0, 1.0, 1.0, 1.0])
    assert loss == pytest.approx((-(ADVANTAGES * log_pi) * kept).mean().item(), abs=1e-6)
    torch.testing.assert_close(ppog_grad, -ADVANTAGES * kept / 5)
    _, clip_grad = scored(ppo, "clip")
    # equal where the ratio is 1 (the first epoch's start)
    torch.testing.assert_close(clip_grad, RATIOS * ppog_grad)


def test_adapted_kl_beta_follows_the_paper():
    for ppo in [ppo_discrete, ppo_continuous, ppo_atari]:
        assert ppo.adapted_kl_beta(1.0, 0.01 / 1.6, 0.01) == 0.5
        assert ppo.adapted_kl_beta(1.0, 0.01 * 1.6, 0.01) == 2.0
        assert ppo.adapted_kl_beta(1.0, 0.01, 0.01) == 1.0
        assert (
            ppo.adapted_kl_beta(1.0, 0.01 / 1.4, 0.01) == 1.0 and ppo.adapted_kl_beta(1.0, 0.014, 0.01) == 1.0
        )


@SCRIPTS
def test_entropy_coefficient_decays_to_its_floor(ppo):
    args = ppo.Args(ent_coef=0.01, ent_coef_decay=0.5, ent_coef_min=0.002)
    expected = [0.01, 0.005, 0.0025, 0.002, 0.002]
    assert [ppo.iteration_schedule(i, 10, args, 0.0).ent_coef for i in range(1, 6)] == pytest.approx(expected)
    assert ppo.iteration_schedule(7, 10, ppo.Args(ent_coef=0.01), 0.0).ent_coef == 0.01  # no decay by default


@SCRIPTS
def test_adaptive_kl_beta_clip_annealing_and_entropy_decay_are_logged(ppo):
    args = ppo.Args(**{**TINY[ppo], "total_timesteps": 2 * TINY[ppo]["total_timesteps"]},  # 4 iterations
                    objective="kl-adaptive", kl_beta=1.0, kl_target=0.003, anneal_clip=True,
                    ent_coef=0.01, ent_coef_decay=0.5)
    events = read_events(ppo.train(args)["run_dir"])
    kls = [e.value for e in events.Scalars("losses/kl")]
    betas = [e.value for e in events.Scalars("charts/kl_beta")]
    assert len(betas) == len(kls) >= 3 and betas[0] == 1.0
    for i in range(len(betas) - 1):  # the beta of each update follows from the KL of the one before
        factor = 0.5 if kls[i] < 0.003 / 1.5 else 2.0 if kls[i] > 0.003 * 1.5 else 1.0  # the paper's rule
        assert betas[i + 1] == pytest.approx(betas[i] * factor)
    num_iterations = len(betas)
    clip_coefs = [e.value for e in events.Scalars("charts/clip_coef")]
    assert clip_coefs == pytest.approx(
        [args.clip_coef * (1 - i / num_iterations) for i in range(num_iterations)]
    )
    ent_coefs = [e.value for e in events.Scalars("charts/ent_coef")]
    assert ent_coefs == pytest.approx([0.01 * 0.5**i for i in range(num_iterations)])


@SCRIPTS
@pytest.mark.parametrize("objective", ["clip", "kl-fixed", "kl-adaptive", "none", "ppog"])
def test_every_objective_makes_the_favoured_actions_more_likely(ppo, objective):
    """One update: the log-probability of every action with advantage +1 rises on average, of those with -1
    falls (a sign error, or an objective that does not reach the loss, fails)."""
    agent, batch, advantages = agent_and_its_own_batch(ppo)
    args = ppo.Args(objective=objective, num_minibatches=2, update_epochs=4, ent_coef=0.0)
    optimizer = torch.optim.Adam(agent.parameters(), lr=1e-3)
    schedule = ppo.Schedule(1.0, 0.2, 0.0, 1.0)
    ppo.update(agent, optimizer, batch, args, np.random.default_rng(0), ppo.ppo_loss, schedule)
    change = ppo.ppo_loss(agent, batch, args, schedule)[2]  # log pi(a) - log pi_old(a) of each sample
    assert change[advantages > 0].mean() > 0 > change[advantages < 0].mean()


def test_masked_log_probs_give_illegal_actions_zero_probability_and_zero_gradient():
    logits = torch.tensor([[1.0, 2.0, 3.0, 4.0], [0.5, 0.5, 0.5, 0.5]], requires_grad=True)
    masks = torch.tensor([[True, False, True, False], [False, True, True, False]])
    log_probs = ppo_discrete.masked_log_probs(logits, masks, [4])
    probs = log_probs.exp()
    assert (probs[~masks] == 0).all()
    torch.testing.assert_close(probs[0, [0, 2]], torch.softmax(torch.tensor([1.0, 3.0]), 0))
    entropy = -(probs * log_probs).sum(-1)  # as in update(): counts the legal actions only
    assert entropy[1].item() == pytest.approx(math.log(2))
    legal = torch.softmax(torch.tensor([1.0, 3.0]), 0)
    assert entropy[0].item() == pytest.approx(-(legal * legal.log()).sum().item())
    (entropy.sum() + log_probs[masks].sum()).backward()
    assert (logits.grad[~masks] == 0).all() and (logits.grad[masks] != 0).any()
    kl = ppo_discrete.categorical_kl(
        log_probs.detach(), ppo_discrete.masked_log_probs(logits.detach() * 2, masks, [4])
    )
    assert torch.isfinite(kl).all()


@pytest.mark.parametrize("env_id", ["MaskedTrading-v0", "MaskedTradingDict-v0"])
def test_masked_env_learns_and_never_takes_an_illegal_action(env_id):
    # the env raises on an illegal action, so finishing is the proof; random legal play scores about 0, the
    # best 20
    args = ppo_discrete.Args(
        env_id=env_id, total_timesteps=20480, learning_rate=1e-3, eval_episodes=5, eval_greedy=False
    )
    summary = ppo_discrete.train(args)
    returns = [value for _, value in episode_curve(summary["run_dir"])]
    assert np.mean(returns[:20]) < 5 and np.mean(returns[-20:]) >= 18
    assert np.mean(summary["eval_returns"]) >= 18  # evaluation (sampling) masks too


@pytest.mark.parametrize("env_id", ["MaskedTrading-v0", "MaskedTradingDict-v0"])
def test_the_step_that_checks_an_env_takes_a_legal_action(env_id):
    # at reset, selling is illegal (the env raises): check_env's random step must never sell, whatever the seed
    env = ppo_discrete.make_env(ppo_discrete.Args(env_id=env_id))()
    for seed in range(100):
        obs, info = env.reset(seed=seed)
        assert ppo_discrete.random_action(env, obs, info, seed) in (0, 1)
    ppo_discrete.check_env(ppo_discrete.Args(env_id=env_id))


@SCRIPTS
@pytest.mark.parametrize("flags,message", [
    (dict(kl_target=0.0), "--kl-target must be > 0"),
    (dict(kl_beta=-1.0), "--kl-beta must be >= 0"),
    (dict(ent_coef_decay=1.5), "--ent-coef-decay must be in (0, 1]"),
    (dict(ent_coef_decay=0.0), "--ent-coef-decay must be in (0, 1]"),
    (dict(ent_coef=0.01, ent_coef_min=0.1), "the floor must be lower"),
    (dict(vf_coef=-0.5), "--vf-coef must be >= 0"),
])
def test_bad_variant_flags_are_one_line_errors(ppo, flags, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        ppo.check_args(ppo.Args(**flags))
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
