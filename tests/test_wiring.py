"""Every flag of the algorithm reaches the code: set alone to another value, it changes the weights of a short
training run (two iterations, the same seed). The formula tests say what a flag does; this says that it does
something, so a flag the code ignores, or reads as a fixed default, fails here. Runs with one seed are the
same to the bit on a CPU, so an unchanged flag gives equal weights."""

import functools

import pytest
import torch

import ppo_atari
import ppo_continuous
import ppo_discrete
from tests.test_scripts import TINY, in_tmp_dir  # noqa: F401  (in_tmp_dir: an autouse fixture)

# flag: (another value, the flags it needs to act); a schedule shows in the second of the two iterations
COMMON = {
    "learning_rate": (1e-3, {}),
    "anneal_lr": (False, {}),
    "gamma": (0.5, {}),
    "gae_lambda": (0.5, {}),
    "num_minibatches": (2, {}),
    "update_epochs": (3, {}),
    "norm_adv": (False, {}),
    "clip_coef": (0.01, {}),
    "clip_vloss": (False, {}),
    "ent_coef": (0.5, {}),
    "vf_coef": (2.0, {}),
    "max_grad_norm": (0.01, {}),
    "target_kl": (1e-9, {}),
    "objective": ("ppog", {}),  # "none" is "clip" until a ratio leaves the clip range
    "kl_beta": (5.0, {"objective": "kl-fixed"}),
    "kl_target": (1e-9, {"objective": "kl-adaptive"}),
    "ent_coef_decay": (0.5, {"ent_coef": 0.5}),
    "ent_coef_min": (0.4, {"ent_coef": 0.5, "ent_coef_decay": 0.5}),
    "anneal_clip": (True, {"clip_coef": 0.002, "update_epochs": 2}),  # a clip that binds
}
OWN = {
    ppo_discrete: {"shared_body": (True, {}), "hidden_sizes": ((32,), {}), "activation": ("ReLU", {})},
    ppo_continuous: {"hidden_sizes": ((32,), {}), "activation": ("ReLU", {}), "log_std_init": (-1.0, {}),
                     "norm_obs": (False, {}), "clip_obs": (0.5, {}), "norm_reward": (False, {}),
                     "clip_reward": (0.1, {}),
                     "bootstrap_truncation": (False, {})},  # Pendulum's episodes are cut at 200 steps
    ppo_atari: {"noop_max": (0, {}), "episodic_life": (False, {}),
                "clip_rewards": (False, {"env_id": "ALE/SpaceInvaders-v5"}),  # Breakout's first rewards are 1
                "sticky_actions": (True, {})},
}
CASES = [(ppo, flag, value, needs) for ppo in OWN for flag, (value, needs) in {**COMMON, **OWN[ppo]}.items()]


@functools.lru_cache(maxsize=None)
def trained(ppo, flags: tuple) -> dict:
    """The weights after TINY[ppo] (two iterations) with flags, a tuple of (name, value) pairs."""
    args = ppo.Args(**{**TINY[ppo], "checkpoint_every": 0, **dict(flags)})
    return {name: weight.clone() for name, weight in ppo.train(args)["agent"].state_dict().items()}


@pytest.mark.parametrize("ppo,flag,value,needs", CASES,
                         ids=[f"{ppo.__name__}-{flag}" for ppo, flag, _, _ in CASES])
def test_every_algorithm_flag_changes_the_trained_weights(ppo, flag, value, needs):
    assert getattr(ppo.Args(), flag) != value and TINY[ppo]["total_timesteps"] == 2 * (
        TINY[ppo]["num_envs"] * TINY[ppo]["num_steps"])
    before = trained(ppo, tuple(sorted(needs.items())))
    after = trained(ppo, tuple(sorted({**needs, flag: value}.items())))
    changed = [name for name in before if name not in after or before[name].shape != after[name].shape
               or not torch.equal(before[name], after[name])]
    assert changed or before.keys() != after.keys(), (
        f"--{flag.replace('_', '-')} {value} trains the weights of {getattr(ppo.Args(), flag)}")
