"""ppo_discrete.py's numpy_loss_gradient against autograd's gradient of the same loss, for every objective
and option, and the check that stops a run whose loss no longer matches its derivative."""

import dataclasses
import functools

import numpy as np
import pytest
import torch

import ppo_discrete as ppo
from tests.test_scripts import in_tmp_dir, read_events  # noqa: F401  (in_tmp_dir: autouse fixture)

OBJECTIVES = ["clip", "kl-adaptive", "kl-fixed", "none", "ppog"]
OPTIONS = {
    "default": dict(),
    "shared relu body": dict(shared_body=True, activation="relu"),
    "action masks": dict(masks=True),
    "unclipped value loss": dict(clip_vloss=False),
}


def moved_agent_and_minibatch(shared_body=False, activation="tanh", masks=False, n=64, seed=0):
    """An agent and a minibatch recorded by a different policy and value (as after some gradient steps), so that
    ratios leave the clip range both ways and predictions leave the value clip range."""
    torch.manual_seed(seed)
    agent = ppo.Agent(4, 3, (16, 16), activation, shared_body)
    optimizer = ppo.make_optimizer(agent, 1e-3)
    obs = torch.randn(n, 4)
    legal = torch.rand(n, 3) > 0.3 if masks else None
    if masks:
        legal[:, 0] = True
    with torch.no_grad():
        old_logits, new_values = agent(obs)
        old_logits = old_logits + torch.randn(n, 3)
        old_log_probs = ppo.masked_log_probs(old_logits, legal)
    actions = torch.distributions.Categorical(logits=old_log_probs).sample()
    minibatch = dict(obs=obs, actions=actions, log_probs=old_log_probs,
                     logprobs=old_log_probs.gather(1, actions[:, None]).squeeze(1), advantages=torch.randn(n),
                     values=new_values + 0.5 * torch.randn(n), returns=new_values + torch.randn(n))
    if masks:
        minibatch["masks"] = legal
    return agent, optimizer, minibatch


def gradients(loss_gradient, optimizer, minibatch, args):
    optimizer["grads"].fill_(123.0)  # whatever was there before must not leak in
    losses, logratio = loss_gradient(minibatch, args, 0.2, 0.01, 0.7)
    return optimizer["grads"].clone(), losses, logratio


@pytest.mark.parametrize("option", OPTIONS)
@pytest.mark.parametrize("objective", OBJECTIVES)
def test_numpy_gradient_equals_autograd(objective, option):
    options = dict(OPTIONS[option])
    agent, optimizer, minibatch = moved_agent_and_minibatch(
        options.pop("shared_body", False), options.pop("activation", "tanh"), options.pop("masks", False))
    args = ppo.Args(objective=objective, **options)
    expected = gradients(functools.partial(ppo.autograd_loss_gradient, agent, optimizer["grads"]), optimizer, minibatch, args)
    computed = gradients(ppo.numpy_loss_gradient(agent), optimizer, minibatch, args)
    for name, value, reference in zip(["gradient", "losses", "log ratio"], computed, expected):
        torch.testing.assert_close(value, reference, rtol=1e-5, atol=1e-6, msg=name)

    # the minibatch reaches every branch: samples that the clip stops and samples it keeps, both value errors
    with torch.no_grad():
        _, new_values = agent(minibatch["obs"])
    stopped = ppo.clip_stops(expected[2].exp(), minibatch["advantages"], 0.2)  # from autograd's log ratio
    assert 0 < stopped.sum() < len(stopped)
    clipped_values = torch.clamp(new_values, minibatch["values"] - 0.2, minibatch["values"] + 0.2)
    clipped_larger = (clipped_values - minibatch["returns"]).abs() > (new_values - minibatch["returns"]).abs()
    assert 0 < clipped_larger.sum() < len(clipped_larger)


def loss_edits(ppo):
    """Edits a user might make to the loss without changing numpy_loss_gradient: name -> (function, replacement)."""
    value_loss, policy_loss = ppo.value_loss, ppo.policy_loss
    return {
        "value loss doubled": ("value_loss", lambda *a, **k: 2 * value_loss(*a, **k)),
        # acts only on samples whose ratio is off 1 (between 1.2 and 1.3 or 0.7 and 0.8)
        "clip range 0.3 in the loss": ("policy_loss", lambda new, old, adv, objective, clip_coef, *a: policy_loss(
            new, old, adv, objective, 0.3, *a)),
    }


@pytest.mark.parametrize("edit", ["value loss doubled", "clip range 0.3 in the loss"])
def test_the_check_stops_a_run_whose_loss_was_edited(edit, monkeypatch, capsys):
    agent, optimizer, minibatch = moved_agent_and_minibatch()
    args = ppo.Args()
    ppo.check_numpy_gradient(agent, optimizer, minibatch, args, 0.2, 0.01, 0.0)  # the script as it is: passes

    monkeypatch.setattr(ppo, *loss_edits(ppo)[edit])
    with pytest.raises(SystemExit) as stop:
        ppo.check_numpy_gradient(agent, optimizer, minibatch, args, 0.2, 0.01, 0.0)
    assert stop.value.code != 0
    error = capsys.readouterr().err
    assert "numpy_loss_gradient differs from autograd" in error and "--no-numpy-gradient" in error


def test_an_edited_loss_stops_training_after_the_first_update_unless_autograd_computes_the_gradient(monkeypatch, capsys):
    monkeypatch.setattr(ppo, *loss_edits(ppo)["value loss doubled"])
    args = ppo.Args(total_timesteps=1024, checkpoint_every=0)
    with pytest.raises(SystemExit):
        ppo.train(args)
    assert "numpy_loss_gradient differs from autograd" in capsys.readouterr().err
    summary = ppo.train(dataclasses.replace(args, numpy_gradient=False))
    assert len(summary["episodes"]) > 0


def test_training_with_either_gradient_gives_the_same_agent_and_logs():
    runs = []
    for numpy_gradient in (True, False):
        args = ppo.Args(total_timesteps=2048, numpy_gradient=numpy_gradient, checkpoint_every=0)
        runs.append(ppo.train(args))
    agents = [run["agent"].state_dict() for run in runs]
    for name, tensor in agents[0].items():  # 64 gradient steps; the two differ only by float rounding
        torch.testing.assert_close(tensor, agents[1][name], rtol=1e-4, atol=1e-5, msg=name)
    for tag in ["losses/policy_loss", "losses/value_loss", "losses/entropy", "losses/approx_kl"]:
        logged = [[event.value for event in read_events(run["run_dir"]).Scalars(tag)] for run in runs]
        assert len(logged[0]) == 4
        np.testing.assert_allclose(logged[0], logged[1], rtol=1e-3, atol=1e-6, err_msg=tag)
