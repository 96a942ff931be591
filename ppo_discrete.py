"""PPO for discrete actions (CartPole, Acrobot, LunarLander, MultiDiscrete games...) in one file; flags and
defaults as CleanRL's ppo.py. The algorithm comes first, in its order, down to train(); the harness (checks,
run directory, logs, checkpoints and resume, stop signals, evaluation, export) follows the line "Operational
parts", and train() reaches it through one object, the Run.

    python ppo_discrete.py                                   # CartPole-v1, logs to runs/
    python ppo_discrete.py --env-id LunarLander-v3 --help     # every flag, with its meaning
    python ppo_discrete.py --load-model runs/RUN/ppo_discrete.model --eval-episodes 5 --capture-video
"""

import os
import signal

if __name__ == "__main__":  # Ctrl-C while importing stops quietly; a program importing this keeps its own
    signal.signal(signal.SIGINT, signal.SIG_DFL)
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # idle torch threads sleep: runs side by side share cores

import contextlib
import glob
import importlib.util
import io
import logging
import math
import random
import re
import sys
import threading
import time
import warnings
import zipfile
from collections import deque
from dataclasses import dataclass, field, is_dataclass
from types import SimpleNamespace
from typing import Literal, NamedTuple, Optional, Union

try:  # the run directory's lock (lock_run_dir): fcntl on Linux and macOS, msvcrt on Windows
    import fcntl
except ImportError:
    fcntl = None

import gymnasium as gym
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import tyro
from gymnasium.envs.classic_control import AcrobotEnv, CartPoleEnv, MountainCarEnv

CHECKPOINT_FORMAT = "ppo_discrete/5"  # written into every checkpoint and saved model, checked on load
NETWORK_FLAGS = ["hidden_sizes", "activation", "shared_body"]  # the flags that shape the Agent
MASKED_LOGIT = -1e8  # the logit of an illegal action: its probability exp(-1e8 - ...) is exactly 0 in float32

# --preset NAME: where its values come from, and the flags it sets; the flags given override them.
# rl-zoo3's PPO (hyperparams/ppo.yml, SB3) adapted: a constant learning rate, no value clipping, batch_size as
# num_minibatches = num_envs * num_steps / batch_size; without rl-zoo3's observation normalization.
# lunarlander is the setting measured before presets existed (its learning rate annealed).
PRESETS = {
    "lunarlander": ("rl-zoo3's LunarLander-v2, wider layers", dict(
        env_id="LunarLander-v3", total_timesteps=1_000_000, num_envs=16, num_steps=1024, num_minibatches=256,
        update_epochs=4, gamma=0.999, gae_lambda=0.98, learning_rate=3e-4, clip_vloss=False,
        hidden_sizes=(256, 256))),
    "acrobot": ("rl-zoo3's Acrobot-v1", dict(
        anneal_lr=False, clip_vloss=False, env_id="Acrobot-v1", total_timesteps=1_000_000, num_envs=16,
        num_steps=256, num_minibatches=64, gae_lambda=0.94, ent_coef=0.0, learning_rate=3e-4)),
}


@dataclass
class Args:
    exp_name: str = os.path.basename(__file__)[: -len(".py")]
    """the name of this experiment (part of the run name)"""
    preset: Optional[Literal[tuple(PRESETS)]] = None
    """named flags for one env (PRESETS, above Args; listed atop --help); the flags given override them"""
    seed: int = 1
    """seed of the experiment (python, numpy, torch and the envs)"""
    torch_deterministic: bool = True
    """if toggled, CUDA runs are deterministic, as CPU runs are (a warning names an op that cannot be)"""
    tf32: bool = False
    """if toggled, CUDA float32 matmuls and convolutions may run in TF32 (faster on Ampere+)"""
    cuda: bool = True
    """if toggled, trains on the GPU (where none is usable: on the CPU with a note, or an error if named)"""
    compile: bool = False
    """if toggled, runs the agent and the loss through torch.compile (compiling takes a while at the start)"""
    track: bool = False
    """if toggled, logs the run to Weights and Biases (WANDB_MODE=offline works without network)"""
    wandb_project_name: str = "cleanRL"
    """the Weights and Biases project name"""
    wandb_entity: Optional[str] = None
    """the Weights and Biases entity (team)"""
    capture_video: bool = False
    """if toggled, records MP4s of the agent in videos/{run_name}/ (evaluation's: {run_name}-eval/)"""

    env_id: str = "CartPole-v1"
    """the gymnasium env id (Discrete, MultiDiscrete, MultiBinary actions); my_envs:Env-v0 imports my_envs"""
    env_kwargs: dict[str, Union[bool, int, float, None, str]] = field(default_factory=dict)
    """arguments of the env (gym.make's), as names and values: --env-kwargs map_name 8x8 is_slippery False"""
    total_timesteps: int = 500000
    """total environment steps of the training, summed over all envs, in whole batches (rounded down)"""
    learning_rate: float = 2.5e-4
    """the learning rate of the optimizer"""
    num_envs: int = 4
    """the number of parallel environments"""
    num_steps: int = 128
    """the number of steps run in each environment per rollout (batch = num_envs * num_steps)"""
    anneal_lr: bool = True
    """if toggled, the learning rate decays linearly to 0 over the training"""
    gamma: float = 0.99
    """the discount factor gamma"""
    gae_lambda: float = 0.95
    """the lambda of generalized advantage estimation"""
    num_minibatches: int = 4
    """the number of minibatches each batch is split into"""
    update_epochs: int = 4
    """the number of passes over the batch in each policy update"""
    norm_adv: bool = True
    """if toggled, normalizes advantages within each minibatch"""
    clip_coef: float = 0.2
    """the surrogate clipping coefficient epsilon (also clips the value loss)"""
    clip_vloss: bool = True
    """if toggled, uses the clipped value loss of the PPO paper's code"""
    ent_coef: float = 0.01
    """the coefficient of the entropy bonus"""
    vf_coef: float = 0.5
    """the coefficient of the value loss"""
    max_grad_norm: float = 0.5
    """the maximum global norm of the gradient"""
    target_kl: Optional[float] = None
    """if set, the update stops at the first minibatch whose approximate KL exceeds it"""

    objective: Literal["clip", "kl-adaptive", "kl-fixed", "none", "ppog"] = "clip"
    """the policy objective: clip, none (r*A), kl-adaptive or kl-fixed (r*A - beta*KL), ppog (README)"""
    kl_beta: float = 1.0
    """the KL penalty coefficient beta: fixed (kl-fixed) or initial (kl-adaptive)"""
    kl_target: float = 0.01
    """d_targ of kl-adaptive: after each update beta halves if the KL < d_targ/1.5, doubles if > 1.5 d_targ"""
    ent_coef_decay: float = 1.0
    """multiplies the entropy coefficient after each update (1.0: constant)"""
    ent_coef_min: float = 0.0
    """the floor that the decaying entropy coefficient stops at"""
    anneal_clip: bool = False
    """if toggled, the clip coefficient decays linearly to 0 over the training, as the learning rate does"""

    bootstrap_truncation: bool = True
    """if toggled, a time-limit truncation bootstraps from V(final obs); off: a termination, as in CleanRL"""
    shared_body: bool = False
    """if toggled, actor and critic share one body with two heads (default: two separate MLPs)"""
    hidden_sizes: tuple[int, ...] = (64, 64)
    """the hidden layer sizes of each MLP"""
    activation: str = "Tanh"
    """the activation of the hidden layers: any torch.nn activation by name (Tanh, ReLU, ELU, GELU, ...)"""
    torch_threads: int = 1
    """CPU threads for torch (1: fastest for small networks, and lets runs side by side share the cores)"""
    save_model: bool = False
    """if toggled, saves the trained agent to `runs/{run_name}/{exp_name}.model`"""
    eval_episodes: int = 0
    """evaluates this many episodes after training (--load-model: 10 unless named); eval/episodic_return"""
    eval_greedy: bool = True
    """if toggled, evaluation takes the most likely action; --no-eval-greedy samples from the policy"""
    export_onnx: Optional[str] = None
    """after training (or with --load-model), writes the greedy policy to this path as one ONNX graph"""
    load_model: Optional[str] = None
    """path of a saved model: evaluates it (and records it with --capture-video) without training"""
    checkpoint_every: int = 100_000
    """every this many steps (and when stopped), saves runs/{run_name}/checkpoint.pt, atomically; 0: never"""
    resume: Optional[str] = None
    """path of a checkpoint.pt: continues that run with its own flags, logs and run directory"""


class EnvError(Exception):
    """An env gave something the algorithm cannot use: the run stops with this one line (exit 2)."""

class MaskInInfo(gym.Wrapper):
    """Moves a Dict observation's "action_mask" into info, where the rollout reads the legal actions."""

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        return obs, {**info, "action_mask": obs["action_mask"]}

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        return obs, reward, terminated, truncated, {**info, "action_mask": obs["action_mask"]}

def make_env(args: Args, video_dir: Optional[str] = None, every_episode: bool = False):
    """A thunk for one env (args.env_id, made with args.env_kwargs) whose observations are one vector: a Box
    of other than one dimension, a Dict (its values in the space's key order; an "action_mask" goes to info),
    a Tuple, a Discrete (one-hot), ... are flattened. With video_dir, records MP4s there (episodes 0, 1, 8,
    27, ..., or all)."""

    def thunk():
        render = {} if video_dir is None else {"render_mode": "rgb_array"}
        env = gym.make(args.env_id, **render, **args.env_kwargs)
        if video_dir is not None:
            trigger = (lambda episode: True) if every_episode else None
            env = gym.wrappers.RecordVideo(env, video_dir, episode_trigger=trigger)
        if isinstance(env.observation_space, gym.spaces.Dict):
            inputs = [key for key in env.observation_space if key != "action_mask"]
            if "action_mask" in env.observation_space.keys():
                env = MaskInInfo(env)
            env = gym.wrappers.FilterObservation(env, inputs)
        if not (isinstance(env.observation_space, gym.spaces.Box) and len(env.observation_space.shape) == 1):
            env = gym.wrappers.FlattenObservation(env)
        return env
    return thunk

def make_envs(args: Args, video_dir: Optional[str] = None) -> gym.vector.SyncVectorEnv:
    """num_envs envs, the first recording to video_dir. SAME_STEP autoreset: a done step returns the next
    episode's first observation (the last one in info["final_obs"]), so every stored step is a real one."""
    thunks = [make_env(args, video_dir if i == 0 else None) for i in range(args.num_envs)]
    return gym.vector.SyncVectorEnv(thunks, copy=False, autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)

def action_nvec(action_space: gym.Space) -> list[int]:
    """The number of actions of each component: [n] for Discrete(n), nvec for MultiDiscrete, 2 for each of
    MultiBinary's."""
    if isinstance(action_space, gym.spaces.Discrete):
        return [int(action_space.n)]
    if isinstance(action_space, gym.spaces.MultiBinary):
        return [2] * action_space.shape[0]
    return [int(n) for n in action_space.nvec]

def env_actions(actions: np.ndarray, action_space: gym.Space) -> np.ndarray:
    """Each env's (components,) action indices as the env takes them (a number for Discrete; plus start)."""
    if isinstance(action_space, gym.spaces.Discrete):
        return actions[..., 0] + action_space.start
    return actions + getattr(action_space, "start", 0)  # MultiBinary has no start: its actions are 0 and 1

def layer_init(layer: nn.Module, gain: float = np.sqrt(2), bias: float = 0.0) -> nn.Module:
    nn.init.orthogonal_(layer.weight, gain)
    nn.init.constant_(layer.bias, bias)
    return layer

def mlp(in_size: int, hidden_sizes, activation: str) -> nn.Sequential:
    """The hidden layers: a Linear and the activation for each size."""
    layers = []
    for size in hidden_sizes:
        layers += [layer_init(nn.Linear(in_size, size)), getattr(nn, activation)()]
        in_size = size
    return nn.Sequential(*layers)

class Agent(nn.Module):
    """Actor (the logits of every action of every component, side by side) and critic (value): two MLPs by
    default, or one shared body with two heads. nvec: the number of actions of each component."""

    def __init__(self, obs_dim: int, nvec: list[int], hidden_sizes=(64, 64), activation="Tanh",
                 shared_body=False):
        super().__init__()
        self.nvec = list(nvec)
        self.actor_body = mlp(obs_dim, hidden_sizes, activation)
        self.critic_body = self.actor_body if shared_body else mlp(obs_dim, hidden_sizes, activation)
        self.actor_head = layer_init(nn.Linear(hidden_sizes[-1], sum(nvec)), gain=0.01)
        self.critic_head = layer_init(nn.Linear(hidden_sizes[-1], 1), gain=1.0)

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(batch, obs_dim) -> logits (batch, sum(nvec)), values (batch,)"""
        actor_features = self.actor_body(obs)
        critic_features = actor_features if self.critic_body is self.actor_body else self.critic_body(obs)
        return self.actor_head(actor_features), self.critic_head(critic_features).squeeze(-1)

def make_agent(args: Args, observation_space: gym.Space, action_space: gym.Space) -> Agent:
    return Agent(observation_space.shape[0], action_nvec(action_space), args.hidden_sizes, args.activation,
                 args.shared_body)

@dataclass
class EnvState:
    """What one rollout hands to the next, as (num_envs, ...) arrays."""
    obs: np.ndarray
    mask: Optional[np.ndarray]  # (num_envs, sum(nvec)) True = legal; None: the env gives no masks
    episode_returns: np.ndarray  # the raw return and length of each running episode
    episode_lengths: np.ndarray

class Episode(NamedTuple):
    """An episode that ended during a rollout, at step `step` of env `env`."""
    step: int
    env: int
    episode_return: float
    length: int

class Rollout(NamedTuple):
    """num_steps steps of every env: (num_steps, num_envs, ...) arrays."""
    obs: np.ndarray
    actions: np.ndarray  # (num_steps, num_envs, components)
    masks: Optional[np.ndarray]
    logits: torch.Tensor  # (num_steps, num_envs, sum(nvec)): the policy that acted
    values: np.ndarray
    rewards: np.ndarray  # a truncated step's reward holds + gamma * V(final obs)
    dones: np.ndarray
    next_value: np.ndarray  # (num_envs,) V of the observation after the last step

class Batch(NamedTuple):
    """A rollout flattened to (num_steps * num_envs, ...) tensors, with its advantages, for the update."""
    obs: torch.Tensor
    actions: torch.Tensor  # (batch, components): each component's action, an index into the logits
    masks: Optional[torch.Tensor]
    policy_log_probs: torch.Tensor  # (batch, sum(nvec)) log pi_old of every action, for the exact KL
    logprobs: torch.Tensor  # (batch,) log pi_old of the actions taken
    values: torch.Tensor
    advantages: torch.Tensor
    returns: torch.Tensor

    def take(self, index) -> "Batch":
        """The samples at index (a permutation or a slice), in every field."""
        return Batch(*(None if tensor is None else tensor[index] for tensor in self))  # masks may be None

def restart_episodes(envs, args: Args, seed: int, state: Optional[EnvState] = None) -> EnvState:
    """Resets the envs to new episodes, into state or a new EnvState."""
    obs, info = envs.reset(seed=seed)
    if state is None:
        state = EnvState(None, None, np.zeros(envs.num_envs), np.zeros(envs.num_envs, dtype=np.int64))
    state.obs, state.mask = observation_and_mask(obs, info, action_nvec(envs.single_action_space))
    state.episode_returns[:] = 0
    state.episode_lengths[:] = 0
    return state

def observation_and_mask(obs, info: dict, nvec: list[int], needs_mask: bool = False):
    """The observation as float32, and info["action_mask"] as (..., sum(nvec)) bool (None if it has none)."""
    if "action_mask" not in info:
        if needs_mask:
            raise EnvError("the env gave an action mask at reset but not after a step: give one every step")
        return np.asarray(obs, dtype=np.float32), None
    mask = np.asarray(info["action_mask"], dtype=bool)
    if mask.shape[-1] != sum(nvec):
        raise EnvError(f"the env's action mask has {mask.shape[-1]} flags; its actions need {sum(nvec)}")
    if not all(part.any(-1).all() for part in np.split(mask, np.cumsum(nvec)[:-1], axis=-1)):
        raise EnvError("the env's action mask leaves an action component with no legal action: allow one")
    return np.asarray(obs, dtype=np.float32), mask

def component_argmax(scores: np.ndarray, nvec: list[int]) -> np.ndarray:
    """The best action of each component: (..., sum(nvec)) -> (..., components)."""
    return np.stack([part.argmax(-1) for part in np.split(scores, np.cumsum(nvec)[:-1], axis=-1)], -1)

def sample_actions(logits: torch.Tensor, nvec: list[int], rng: np.random.Generator) -> np.ndarray:
    """One sample of each component's softmax(logits) (Gumbel-max): (..., sum(nvec)) -> (..., components)."""
    return component_argmax(logits.cpu().numpy() + rng.gumbel(size=tuple(logits.shape)), nvec)

def mask_logits(logits: torch.Tensor, masks) -> torch.Tensor:
    """The logits with MASKED_LOGIT for each illegal action (masks: True = legal, a tensor or an array of the
    logits' shape; None: every action is legal)."""
    if masks is None:
        return logits
    return torch.where(torch.as_tensor(masks, device=logits.device), logits, MASKED_LOGIT)

def masked_log_probs(logits: torch.Tensor, masks: Optional[torch.Tensor], nvec: list[int]) -> torch.Tensor:
    """Each component's log softmax over its legal actions, side by side (batch, sum(nvec)): an illegal action
    gets probability exactly 0, adds exactly 0 to the entropy and to the KL, and no gradient."""
    logits = mask_logits(logits, masks)
    return torch.cat([F.log_softmax(part, dim=-1) for part in logits.split(nvec, -1)], -1)

def collect_rollout(envs, agent: nn.Module, state: EnvState, args: Args, rng: np.random.Generator,
                    device: torch.device) -> tuple[Rollout, list[Episode]]:
    """num_steps steps of the policy in every env, and the episodes that ended."""
    num_steps = args.num_steps
    num_envs = envs.num_envs
    space = envs.single_action_space
    nvec = action_nvec(space)
    obs = np.empty((num_steps, *state.obs.shape), dtype=np.float32)  # (num_steps, num_envs, obs_dim)
    actions = np.empty((num_steps, num_envs, len(nvec)), dtype=np.int64)
    masks = None if state.mask is None else np.empty((num_steps, *state.mask.shape), dtype=bool)
    rewards = np.empty((num_steps, num_envs), dtype=np.float32)
    dones = np.empty((num_steps, num_envs), dtype=np.float32)
    logits = []
    values = []
    finished = []
    truncated_at = []
    final_obs = []
    with torch.inference_mode():
        for step in range(num_steps):
            obs[step] = state.obs
            step_logits, step_values = agent(torch.as_tensor(state.obs, device=device))
            logits.append(step_logits)
            values.append(step_values)
            if masks is not None:
                masks[step] = state.mask
            actions[step] = sample_actions(mask_logits(step_logits, state.mask), nvec, rng)
            next_obs, reward, terminated, truncated, info = envs.step(env_actions(actions[step], space))
            state.obs, state.mask = observation_and_mask(next_obs, info, nvec, masks is not None)
            rewards[step] = reward
            dones[step] = terminated | truncated
            state.episode_returns += reward
            state.episode_lengths += 1
            for env in np.flatnonzero(dones[step]):
                finished.append(Episode(step, env, state.episode_returns[env], state.episode_lengths[env]))
                state.episode_returns[env] = 0.0
                state.episode_lengths[env] = 0
                if args.bootstrap_truncation and truncated[env] and not terminated[env]:
                    truncated_at.append((step, env))
                    final_obs.append(np.asarray(info["final_obs"][env], np.float32))
        # V(next obs), and V(final obs) of the truncated episodes, in one forward pass
        final_obs = np.array(final_obs, dtype=np.float32).reshape(-1, state.obs.shape[1])
        _, bootstrap = agent(torch.as_tensor(np.concatenate([state.obs, final_obs]), device=device))
    for what, array in [("an observation", obs), ("a reward", rewards)]:  # before V(final obs) joins them
        if not np.isfinite(array).all():
            raise EnvError(f"the env gave {what} that is nan or inf: fix the env (or clip it in a wrapper)")
    bootstrap = bootstrap.cpu().numpy()
    for (step, env), final_value in zip(truncated_at, bootstrap[num_envs:]):
        rewards[step, env] += args.gamma * final_value
    values = torch.stack(values).cpu().numpy()
    rollout = Rollout(obs, actions, masks, torch.stack(logits), values, rewards, dones, bootstrap[:num_envs])
    return rollout, finished

def compute_gae(rewards: np.ndarray, values: np.ndarray, dones: np.ndarray, next_value: np.ndarray,
                gamma: float, gae_lambda: float) -> tuple[np.ndarray, np.ndarray]:
    """Generalized advantage estimation over (num_steps, num_envs) arrays. dones[t] is 1 where the episode
    ended with the transition at step t; next_value is V of the observation after the last step.
    Returns (advantages, returns = advantages + values)."""
    not_done = 1.0 - dones
    following_values = np.concatenate([values[1:], next_value[None]])  # V(s_t+1)
    deltas = rewards + gamma * following_values * not_done - values  # TD errors, all steps at once
    advantages = np.empty_like(deltas)
    last_advantage = np.zeros_like(next_value)
    for t in reversed(range(rewards.shape[0])):  # A_t = delta_t + gamma lambda (1 - done_t) A_t+1
        last_advantage = advantages[t] = deltas[t] + gamma * gae_lambda * not_done[t] * last_advantage
    return advantages, advantages + values

def make_batch(rollout: Rollout, advantages: np.ndarray, returns: np.ndarray, nvec: list[int],
               device: torch.device) -> Batch:
    def flat(array):  # (num_steps, num_envs, ...) -> (num_steps * num_envs, ...) tensor on the device
        return torch.from_numpy(array.reshape(-1, *array.shape[2:])).to(device)

    masks = None if rollout.masks is None else flat(rollout.masks)
    actions = flat(rollout.actions + np.cumsum([0, *nvec[:-1]]))  # indices into the side-by-side logits
    policy_log_probs = masked_log_probs(rollout.logits.flatten(0, 1), masks, nvec)
    logprobs = policy_log_probs.gather(-1, actions).sum(-1)  # the components' log-probs summed
    return Batch(flat(rollout.obs), actions, masks, policy_log_probs, logprobs, flat(rollout.values),
                 flat(advantages), flat(returns))

def categorical_kl(old_log_probs: torch.Tensor, new_log_probs: torch.Tensor) -> torch.Tensor:
    """The exact KL[pi_old || pi] of each state: sum_a pi_old(a) (log pi_old(a) - log pi(a)), summed over
    independent components if there are several; (batch,)."""
    return (old_log_probs.exp() * (old_log_probs - new_log_probs)).sum(-1)

def policy_loss(new_logprob: torch.Tensor, old_logprob: torch.Tensor, advantages: torch.Tensor,
                objective: str, clip_coef: float, kl: Optional[torch.Tensor] = None, kl_beta: float = 0.0):
    """The policy objective to minimize, averaged over the minibatch; returns (loss, log ratio). With
    r = pi / pi_old: clip: -min(r A, clip(r, 1-eps, 1+eps) A); none: -r A; kl-fixed, kl-adaptive: -r A +
    beta KL[pi_old||pi]; ppog: -A log pi, but 0 where r left [1-eps, 1+eps] in A's direction (as the clip)."""
    logratio = new_logprob - old_logprob
    ratio = logratio.exp()
    if objective == "clip":
        clipped_ratio = torch.clamp(ratio, 1 - clip_coef, 1 + clip_coef)
        loss = torch.max(-advantages * ratio, -advantages * clipped_ratio).mean()
    elif objective == "ppog":
        stopped = ((advantages > 0) & (ratio > 1 + clip_coef)) | ((advantages < 0) & (ratio < 1 - clip_coef))
        loss = torch.where(stopped, 0.0, -advantages * new_logprob).mean()
    elif objective == "none":
        loss = (-advantages * ratio).mean()
    else:  # kl-fixed, kl-adaptive
        loss = (-advantages * ratio).mean() + kl_beta * kl
    return loss, logratio

def value_loss(new_values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor,
               clip_coef: float, clip: bool) -> torch.Tensor:
    """0.5 * mean squared error; with clip, the max of the plain and the clipped-prediction errors."""
    unclipped = (new_values - returns) ** 2
    if not clip:
        return 0.5 * unclipped.mean()
    clipped_values = old_values + torch.clamp(new_values - old_values, -clip_coef, clip_coef)
    return 0.5 * torch.max(unclipped, (clipped_values - returns) ** 2).mean()

class Schedule(NamedTuple):
    """The coefficients of one iteration."""
    lr_factor: float  # each parameter group's learning rate is its initial one times this
    clip_coef: float
    ent_coef: float
    kl_beta: float

def adapted_kl_beta(kl_beta: float, kl: float, kl_target: float) -> float:
    """The PPO paper's rule after each update: halve beta if KL < d_targ / 1.5, double it if > 1.5 d_targ."""
    if kl < kl_target / 1.5:
        return kl_beta / 2
    if kl > kl_target * 1.5:
        return kl_beta * 2
    return kl_beta

def iteration_schedule(iteration: int, num_iterations: int, args: Args, kl_beta: float) -> Schedule:
    """Where annealed, the learning rate and clip decay linearly: x1 at iteration 1, x1/num_iterations at the
    last. The entropy coefficient is multiplied by ent_coef_decay after each update, down to ent_coef_min."""
    remaining = 1.0 - (iteration - 1.0) / num_iterations
    lr_factor = remaining if args.anneal_lr else 1.0
    clip_coef = args.clip_coef * remaining if args.anneal_clip else args.clip_coef
    ent_coef = max(args.ent_coef_min, args.ent_coef * args.ent_coef_decay ** (iteration - 1))
    return Schedule(lr_factor, clip_coef, ent_coef, kl_beta)

def ppo_loss(agent: nn.Module, minibatch: Batch, args: Args, schedule: Schedule):
    """The loss of a minibatch: policy loss - ent_coef * entropy + vf_coef * value loss. Returns it, the
    terms to log (detached), and the detached log ratio of each sample."""
    logits, new_values = agent(minibatch.obs)
    log_probs = masked_log_probs(logits, minibatch.masks, agent.nvec)  # (batch, sum(nvec))
    new_logprob = log_probs.gather(-1, minibatch.actions).sum(-1)
    entropy = -(log_probs.exp() * log_probs).sum(-1).mean()  # the components' entropies summed
    kl = None
    if args.objective.startswith("kl"):
        kl = categorical_kl(minibatch.policy_log_probs, log_probs).mean()
    pg_loss, logratio = policy_loss(new_logprob, minibatch.logprobs, minibatch.advantages, args.objective,
                                    schedule.clip_coef, kl, schedule.kl_beta)
    v_loss = value_loss(new_values, minibatch.values, minibatch.returns, schedule.clip_coef, args.clip_vloss)
    loss = pg_loss - schedule.ent_coef * entropy + args.vf_coef * v_loss
    logs = dict(policy_loss=pg_loss, value_loss=v_loss, entropy=entropy)  # what the update logs, averaged
    return loss, {name: value.detach() for name, value in logs.items()}, logratio.detach()

def policy_kl(agent: nn.Module, batch: Batch) -> float:
    """The exact KL[pi_old || pi] of the whole update, averaged over the batch."""
    with torch.no_grad():
        new_log_probs = masked_log_probs(agent(batch.obs)[0], batch.masks, agent.nvec)
    return categorical_kl(batch.policy_log_probs, new_log_probs).mean().item()

def update(agent: nn.Module, optimizer: torch.optim.Optimizer, batch, args: Args, rng: np.random.Generator,
           loss_fn, schedule: Schedule) -> dict:
    """update_epochs passes of minibatch steps on loss_fn (until target_kl); returns the mean diagnostics."""
    for group in optimizer.param_groups:  # every group, each from its own initial learning rate
        group["lr"] = group.setdefault("initial_lr", group["lr"]) * schedule.lr_factor
    batch_size = batch.obs.shape[0]
    minibatch_size = batch_size // args.num_minibatches
    totals = {}
    logratios = []
    grad_norms = []
    for epoch in range(args.update_epochs):
        order = torch.from_numpy(rng.permutation(batch_size)).to(batch.obs.device)
        shuffled = batch.take(order)
        if args.norm_adv:  # each minibatch's advantages to mean 0 and std 1, all minibatches at once
            advantages = shuffled.advantages.view(args.num_minibatches, minibatch_size)
            advantages = (advantages - advantages.mean(1, True)) / (advantages.std(1, keepdim=True) + 1e-8)
            shuffled = shuffled._replace(advantages=advantages.view(-1))
        for start in range(0, batch_size, minibatch_size):
            rows = slice(start, start + minibatch_size)
            minibatch = shuffled.take(rows)
            loss, logs, logratio = loss_fn(agent, minibatch, args, schedule)
            totals = {name: totals.get(name, 0.0) + value for name, value in logs.items()}
            logratios.append(logratio)
            if args.target_kl is not None and ((logratio.exp() - 1) - logratio).mean() > args.target_kl:
                break  # the approximate KL (estimator k3) over the target: no step on this minibatch or later
            optimizer.zero_grad()
            loss.backward()
            grad_norms.append(nn.utils.clip_grad_norm_(agent.parameters(), args.max_grad_norm))
            optimizer.step()
        else:
            continue
        break  # target_kl reached: stop the whole update, not just this epoch
    logratio = torch.stack(logratios)  # (minibatches, minibatch_size)
    ratio = logratio.exp()
    stats = {name: (total / len(logratios)).item() for name, total in totals.items()}
    stats.update(old_approx_kl=(-logratio).mean().item(), approx_kl=((ratio - 1) - logratio).mean().item(),
                 clipfrac=((ratio - 1.0).abs() > schedule.clip_coef).float().mean().item(),
                 grad_norm=torch.stack(grad_norms).mean().item() if grad_norms else 0.0,
                 gradient_steps=len(grad_norms))
    return stats

def training_device(args: Args) -> torch.device:
    """With --cuda where torch can use a GPU, the GPU; else the CPU."""
    if args.cuda and torch.cuda.is_available():
        return torch.device("cuda", 0)
    return torch.device("cpu")

def train(args: Args, given: Optional[set] = None) -> dict:
    """Trains (or, with --resume, goes on training); returns what happened. given: the flags named on the
    command line (by default: those that differ from their defaults)."""
    with Run.start(args, given) as run:
        args = run.args
        device = training_device(args)
        rng = np.random.default_rng(args.seed)
        envs = make_envs(args, run.video_dir)
        state = restart_episodes(envs, args, args.seed)
        agent = make_agent(args, envs.single_observation_space, envs.single_action_space).to(device)
        optimizer = torch.optim.Adam(agent.parameters(), lr=args.learning_rate, eps=1e-5, fused=True)
        first_iteration, kl_beta = run.restore(agent, optimizer, rng, envs, state)
        loss_fn = torch.compile(ppo_loss) if args.compile else ppo_loss
        if args.compile:
            agent.compile()
        num_iterations = args.total_timesteps // (args.num_envs * args.num_steps)
        for iteration in range(first_iteration, num_iterations + 1):
            schedule = iteration_schedule(iteration, num_iterations, args, kl_beta)

            # 1. Rollout
            rollout, finished = collect_rollout(envs, agent, state, args, rng, device)

            # 2. Advantages
            advantages, returns = compute_gae(rollout.rewards, rollout.values, rollout.dones,
                                              rollout.next_value, args.gamma, args.gae_lambda)

            # 3. Update
            batch = make_batch(rollout, advantages, returns, agent.nvec, device)
            stats = update(agent, optimizer, batch, args, rng, loss_fn, schedule)
            stats["explained_variance"] = explained_variance(rollout.values, returns)
            if args.objective == "kl-adaptive":  # the exact KL of the whole update sets the next beta
                stats["kl"] = policy_kl(agent, batch)
                kl_beta = adapted_kl_beta(kl_beta, stats["kl"], args.kl_target)

            # 4. Log; checkpoint every checkpoint_every steps, at the end and on a stop signal
            if run.end_iteration(iteration, kl_beta, schedule, stats, finished):
                break
    return run.finish()

def explained_variance(predicted: np.ndarray, target: np.ndarray) -> float:
    """1 - Var(target - predicted) / Var(target); nan when the target is constant."""
    target_variance = np.var(target)
    return np.nan if target_variance == 0 else float(1 - np.var(target - predicted) / target_variance)



# ==================================== Operational parts: the harness ====================================
# What a run needs around the algorithm: checks, run directory, logs, checkpoints and resume, stop signals,
# evaluation and export, main(). train() reaches it through the Run alone.

# Ctrl-C, kill, and where the system has it (not Windows) SIGHUP: the terminal was closed
STOP_SIGNALS = [getattr(signal, name) for name in ["SIGINT", "SIGTERM", "SIGHUP"] if hasattr(signal, name)]

class Failed(SystemExit):
    """The exit of fail(), whose line is printed already."""

def fail(message: str, code: int = 2):
    """One line on stderr, then the exit code (2: bad input; say what to change)."""
    print(f"error: {message}", file=sys.stderr)
    raise Failed(code)

NO_LOGS = SimpleNamespace(add_scalar=lambda *args: None, flush=lambda: None, close=lambda: None)

class Run:
    """One run's harness: its flags (with --resume or --load-model, the file's), directory, logs, checkpoints
    and stop signals. Around the training loop (`with Run.start(args) as run:`), Ctrl-C and SIGTERM stop the
    run after the iteration, and an error keeps the checkpoint of the last iteration done."""

    def __init__(self, args: Args, checkpoint: Optional[dict], run_dir: str, device: torch.device,
                 spaces: list[str]):
        self.args = args
        self.checkpoint = checkpoint
        self.spaces = spaces  # the env's observation and action spaces, as text
        self.dir = run_dir
        self.name = os.path.basename(run_dir)
        self.device = device
        self.video_dir = None  # training's videos; evaluation's go to video_dir + "-eval"
        if args.capture_video:
            self.video_dir = f"videos/{self.name}"
        if self.video_dir and args.resume:  # a folder of its own: the videos before the stop stay
            self.video_dir += f"-resumed-at-step-{checkpoint['counters']['global_step']}"
        self.batch_size = args.num_envs * args.num_steps
        self.num_iterations = args.total_timesteps // self.batch_size
        self.iteration = 0  # the last one done
        self.recent_returns = deque(maxlen=100)
        self.received = []  # the stop signals caught
        self.handlers = {}  # the signal handlers to put back at the end
        self.snapshot = None  # the checkpoint of the last iteration done
        self.agent = self.optimizer = self.rng = self.envs = self.state = None  # what train() trains
        self.start_step = 0
        self.start_time = time.time()
        self.last_print = 0.0
        self.writer = NO_LOGS
        self.wandb_id = None  # with --track: the W&B run, which a resumed run goes on in
        self.videos_sent = set()  # with --track and --capture-video: the MP4s sent to W&B

    @property
    def global_step(self) -> int:
        return self.iteration * self.batch_size

    @property
    def path(self) -> Optional[str]:
        """The file of --resume or --load-model."""
        return self.args.resume or self.args.load_model

    @classmethod
    def start(cls, args: Args, given: Optional[set] = None) -> "Run":
        """Checks the flags (with --resume or --load-model: the file and its flags) and the env; makes the run
        directory, opens the logs, sets the seeds."""
        checkpoint = None
        if args.resume or args.load_model:
            checkpoint = load_data_file(args)
            args = resumed_args(args, checkpoint, given)
            check_saved(args, checkpoint)
        check_args(args)
        if args.torch_threads > os.cpu_count():  # this machine's limit, for a saved run's flag too
            fail(f"--torch-threads {args.torch_threads} is over the {os.cpu_count()} cores here: name fewer")
        if args.capture_video:
            check_video_support()
        if args.compile:
            check_compile()
        with warnings.catch_warnings(record=True):  # the check's warnings unsaid: the run's envs say them
            spaces = check_env(args)
        if args.resume:
            run_dir = os.path.dirname(os.path.abspath(args.resume))
            if not os.access(run_dir, os.W_OK):
                fail("--resume goes on in the checkpoint's directory, which is not writable: make it so")
        else:
            suffix = "-eval" if args.load_model else ""
            run_dir = new_run_dir(f"{re.sub('[/:]', '-', args.env_id)}__{args.exp_name}{suffix}__{args.seed}")
        run = cls(args, checkpoint, run_dir, run_device(args, given), spaces)
        run.lock = lock_run_dir(run_dir)
        run.writer = start_logging(run)
        random.seed(args.seed)
        np.random.seed(args.seed)
        torch.manual_seed(args.seed)
        set_numerics(args, run.device)
        if args.torch_threads > 0:
            torch.set_num_threads(args.torch_threads)
        return run

    def __enter__(self) -> "Run":
        if threading.current_thread() is threading.main_thread():
            self.handlers = {signum: signal.signal(signum, self.on_signal) for signum in STOP_SIGNALS}
        return self

    def on_signal(self, signum, frame):
        """Ctrl-C, SIGTERM or SIGHUP: stop after this iteration; a second signal: at once."""
        if self.received:  # a second signal, or an env that hangs: at once
            raise KeyboardInterrupt
        self.received.append(signum)
        with contextlib.suppress(OSError):  # a closed terminal takes no more output
            print(f"\n{signal.Signals(signum).name}: stopping after this iteration (again: at once)",
                  file=sys.stderr)

    def __exit__(self, kind, error, traceback):
        """Puts the signal handlers back, writes out the logs; after an error or a second signal, writes the
        checkpoint of the last iteration done; only then closes the envs (an env that fails to close loses
        neither) and says where the run stands."""
        for signum, handler in self.handlers.items():
            signal.signal(signum, handler)
        with self.logs_may_fail():  # an error or Ctrl-C keeps every point logged so far
            self.writer.flush()
        unexpected = error is not None and not isinstance(error, Failed)  # an env's SystemExit too
        if unexpected and self.snapshot and self.args.checkpoint_every:
            self.write(self.snapshot, "checkpoint.pt")
        if error is not None:  # the run directory is free again, for --resume
            self.lock.close()
        if self.envs is not None:
            self.envs.close()
        if unexpected:
            where = f"at step {self.global_step:,}: the logs keep every point, {self.last_checkpoint()}"
            if isinstance(error, EnvError):
                fail(f"{error}; stopped {where}")
            print(f"{type(error).__name__} {where}", file=sys.stderr)

    def restore(self, agent: nn.Module, optimizer: torch.optim.Optimizer, rng: np.random.Generator, envs,
                state) -> tuple[int, float]:
        """Keeps the training's objects for its checkpoints, once the envs' autoreset and the Agent's outputs
        are checked; with --resume, puts them back as they were at the end of the checkpoint's iteration.
        Returns the first iteration to run and the KL beta."""
        self.agent = agent
        self.optimizer = optimizer
        self.rng = rng
        self.envs = envs
        self.state = state
        check_autoreset(envs)
        check_agent(agent, envs, state.obs, self.device)
        if self.checkpoint is None:
            return 1, self.args.kl_beta
        saved = self.checkpoint
        exact = saved["envs"] is not None and env_states(envs) is not None  # both runs' envs can be saved
        self.load_agent(agent)
        check_optimizer(self.path, saved["optimizer"], optimizer)
        try:
            optimizer.load_state_dict(saved["optimizer"]["state_dict"])
            for parameter in agent.parameters():  # the optimizer's state must fit its parameters
                for value in optimizer.state[parameter].values():
                    if value.dim() and value.shape != parameter.shape:
                        raise ValueError(f"optimizer state {tuple(value.shape)} for {tuple(parameter.shape)}")
            rng.bit_generator.state = saved["generator"]
            torch.set_rng_state(saved["torch"])
            restore_data(state, saved["state"])
            if exact:
                restore_env_states(envs, saved["envs"])
        except (KeyError, IndexError, TypeError, ValueError, RuntimeError, AttributeError) as error:
            fail(f"{self.path!r} does not fit this run: {type(error).__name__}: {first_line(error)}")
        self.start_step = self.global_step
        self.start_time = time.time()
        self.recent_returns.extend(saved["recent_returns"])
        note = ""
        if not exact:  # the envs' state could not be saved, or set: new episodes
            restart_episodes(envs, self.args, self.args.seed + self.global_step, state)
            note = ("; the envs' state cannot be carried over (an env other than gymnasium's own, a "
                    "wrapper of yours, or env workers): new episodes start")
        print(f"resuming {self.name} at step {self.global_step:,} (iteration {self.iteration + 1}){note}")
        return self.iteration + 1, saved["counters"]["kl_beta"]

    def load_agent(self, agent: nn.Module):
        """The saved network's weights into agent, with the file's counters. Another env's spaces, or a
        network that does not fit (one line naming the parameters and the flags that built it), stop."""
        weights = self.checkpoint["agent"]
        own = agent.state_dict()
        for kind, saved, now in zip(["observation", "action"], self.checkpoint["spaces"], self.spaces):
            if saved != now:  # a Dict's keys, their order and shapes too
                fail(f"{self.path!r} is for another env: its {kind} space is {saved}, this env's {now}")
        missing = [name for name in own if name not in weights]
        unexpected = [name for name in weights if name not in own]
        misshaped = [f"{name} {tuple(weights[name].shape)} for {tuple(own[name].shape)}" for name in own
                     if name in weights and weights[name].shape != own[name].shape]
        if missing or unexpected or misshaped:
            built = " ".join(f"{flag_name(name)} {getattr(self.args, name)}" for name in NETWORK_FLAGS)
            fail(f"{self.path!r} does not fit this script's network (saved with {built}): missing "
                 f"{missing or 'none'}, unexpected {unexpected or 'none'}, mis-shaped {misshaped or 'none'}")
        agent.load_state_dict(weights)
        self.agent = agent
        self.iteration = self.checkpoint["counters"]["iteration"]

    def end_iteration(self, iteration: int, kl_beta: float, schedule, stats: dict, finished: list) -> bool:
        """Logs the iteration; keeps a copy of what a checkpoint holds, written every checkpoint_every steps,
        at the end (--save-model: the model) and on a stop signal. True: a signal came, stop."""
        self.iteration = iteration
        self.kl_beta = kl_beta
        self.log(schedule, stats, finished)
        send_videos(self)
        self.snapshot = self.checkpoint_data()
        stopping = bool(self.received)
        every = self.args.checkpoint_every
        step = self.global_step
        crossed = every > 0 and step // every > (step - self.batch_size) // every
        last = iteration == self.num_iterations
        if stopping or (crossed and not last):
            self.write(self.snapshot, "checkpoint.pt")
        if self.args.save_model and last:  # the saved model is the last checkpoint
            self.write(self.snapshot, f"{self.args.exp_name}.model")
        return stopping

    def log(self, schedule, stats: dict, finished: list):
        """Stops (exit 3) on a nan or inf; logs the ended episodes (each at its step), the losses and the
        schedule; prints the progress now and then."""
        bad = [f"{name} ({stats[name]})" for name in ["policy_loss", "value_loss", "entropy", "grad_norm"]
               if not math.isfinite(stats[name])]
        if not all(torch.isfinite(weight).all() for weight in self.agent.parameters()):
            bad.append("a network parameter")
        if bad:
            fail(f"{bad[0]} went non-finite in the update ending at step {self.global_step:,}; stopped, "
                 f"{self.last_checkpoint()}", 3)
        step = self.global_step
        self.recent_returns.extend(float(episode.episode_return) for episode in finished)
        sps = int((step - self.start_step) / (time.time() - self.start_time))
        with self.logs_may_fail():
            for episode in finished:
                end = step - self.batch_size + (episode.step + 1) * self.args.num_envs  # the step it ended at
                self.writer.add_scalar("charts/episodic_return", float(episode.episode_return), end)
                self.writer.add_scalar("charts/episodic_length", int(episode.length), end)
            for name, value in stats.items():
                if name != "gradient_steps":
                    self.writer.add_scalar(f"losses/{name}", value, step)
            charts = dict(learning_rate=self.optimizer.param_groups[0]["lr"], clip_coef=schedule.clip_coef,
                          ent_coef=schedule.ent_coef, kl_beta=schedule.kl_beta, SPS=sps)
            for name, value in charts.items():
                self.writer.add_scalar(f"charts/{name}", value, step)
        if time.time() - self.last_print > 10 or self.iteration == self.num_iterations:
            self.last_print = time.time()
            ended = "no episode has ended yet"
            if self.recent_returns:
                count = len(self.recent_returns)
                ended = f"mean return of the last {count} episodes: {np.mean(self.recent_returns):.2f}"
            trained = self.num_iterations * self.batch_size  # --total-timesteps in whole batches
            print(f"step {step:,} of {trained:,}, {sps:,} steps/s, {ended}", flush=True)

    def checkpoint_data(self) -> dict:
        """A copy of all the run needs to go on from the iteration just done."""
        counters = dict(global_step=self.global_step, iteration=self.iteration, kl_beta=self.kl_beta)
        optimizer = dict(kind=type(self.optimizer).__name__, state_dict=self.optimizer.state_dict())
        return as_data(dict(format=CHECKPOINT_FORMAT, args=vars(self.args), counters=counters,
                            generator=self.rng.bit_generator.state, torch=torch.get_rng_state(),
                            envs=env_states(self.envs), state=self.state,
                            recent_returns=list(self.recent_returns),
                            agent=self.agent.state_dict(), optimizer=optimizer,
                            spaces=self.spaces, wandb_id=self.wandb_id))

    def write(self, data: dict, name: str):
        """Writes data into a synced temporary file renamed over the old: a kill leaves one whole."""
        with self.logs_may_fail():  # every point up to the checkpoint is on disk before it
            self.writer.flush()
        path = os.path.join(self.dir, name)
        serialized = io.BytesIO()
        torch.save(data, serialized)  # in memory first: a disk that fills mid-write is then a plain OSError
        temporary = f"{path}.{os.getpid()}.tmp"
        try:
            with open(temporary, "wb") as f:
                f.write(serialized.getbuffer())
                f.flush()
                os.fsync(f.fileno())
            os.replace(temporary, path)
        except OSError as error:  # a full disk, a read-only one: stop, keeping the last whole checkpoint
            with contextlib.suppress(OSError):
                os.remove(temporary)
            fail(f"cannot write {path} ({error.strerror or error}); stopped, {self.last_checkpoint()}", 1)

    def last_checkpoint(self) -> str:
        path = os.path.join(self.dir, "checkpoint.pt")
        return f"the last good checkpoint is {path}" if os.path.exists(path) else "no checkpoint was written"

    @contextlib.contextmanager
    def logs_may_fail(self):
        """Runs the block's log writes; if the disk refuses them (full, read-only), says so once and goes on
        without logs."""
        try:
            yield
        except OSError as error:
            print(f"warning: cannot write the logs in {self.dir} ({error.strerror or error}); the run goes "
                  f"on without", file=sys.stderr)
            self.writer = NO_LOGS

    def finish(self) -> dict:
        """Says how to go on after a stop; otherwise evaluates and exports the agent. Closes the logs; returns
        the run's summary."""
        args = self.args
        stopped = signal.Signals(self.received[0]) if self.received else None
        model_path = None
        eval_returns = []
        if args.save_model and not args.load_model and self.iteration == self.num_iterations:
            model_path = os.path.join(self.dir, f"{args.exp_name}.model")
            print(f"model saved to {model_path}")
        if stopped:
            checkpoint = os.path.join(self.dir, "checkpoint.pt")
            script = os.path.basename(__file__)
            then = f"continue with: python {script} --resume {checkpoint}"
            if self.iteration == self.num_iterations:  # the evaluation and export were left: --load-model
                then = f"the training is done; evaluate with: python {script} --load-model {checkpoint}"
            print(f"stopped at step {self.global_step:,}; {then}", file=sys.stderr)
        else:
            with self:  # a stop signal ends the evaluation after its episode, and is said
                if args.eval_episodes:
                    eval_returns = evaluate(self, self.agent, self.state)
                if args.export_onnx and not self.received:
                    export_onnx(self, self.agent, self.state)
            if self.received:
                stopped = signal.Signals(self.received[0])
                print(f"{stopped.name}: stopped after {len(eval_returns)} evaluation episodes",
                      file=sys.stderr)
        with self.logs_may_fail():
            self.writer.close()
        self.lock.close()
        if args.track:
            import wandb

            send_videos(self)
            wandb.finish()
        return dict(agent=self.agent, model_path=model_path, eval_returns=eval_returns, run_dir=self.dir,
                    recent_returns=list(self.recent_returns), stopped=stopped)

def flag_name(name: str) -> str:
    return f"--{name.replace('_', '-')}"

def first_line(error: BaseException, sentences: int = 1) -> str:
    """The first sentences of an error's message (of its first line), whole, without terminal colour codes."""
    lines = re.sub(r"\x1b\[[0-9;]*m", "", str(error)).strip().splitlines()
    return " ".join(re.split(r"(?<=\.)\s", lines[0])[:sentences]) if lines else ""

def check_optimizer(path: str, saved: dict, optimizer: torch.optim.Optimizer):
    """A checkpoint goes on only with the optimizer it was trained with: the same class and hyper-parameters
    (the learning rate aside, which the schedule sets); one line names what differs."""
    def settings(kind: str, groups: list[dict]) -> dict:
        named = {"class": kind, "parameter groups": len(groups)}
        for index, group in enumerate(groups):
            named.update({f"group {index}'s {key}": list(value) if isinstance(value, tuple) else value
                          for key, value in group.items() if key not in ("params", "lr", "initial_lr")})
        return named

    before = settings(saved["kind"], saved["state_dict"]["param_groups"])
    now = settings(type(optimizer).__name__, optimizer.state_dict()["param_groups"])
    differ = [f"{key} {before.get(key)!r} (this script: {now.get(key)!r})" for key in {**before, **now}
              if before.get(key) != now.get(key)]
    if [before["class"], before["parameter groups"]] != [now["class"], now["parameter groups"]]:
        differ = differ[:1]  # another class or number of groups: that alone, not each setting it changes
    if differ:
        fail(f"{path!r} was trained with another optimizer: {', '.join(differ)}; resume with the optimizer "
             f"it was trained with")

def new_run_dir(name: str) -> str:
    """Creates runs/{name}__{time}; a second run started in the same second gets a suffix of its own."""
    name = f"{name}__{int(time.time())}"
    for suffix in range(1, 1000):
        path = os.path.join("runs", name if suffix == 1 else f"{name}_{suffix}")
        try:
            os.makedirs(path)
            return path
        except FileExistsError:
            continue
        except OSError as error:
            fail(f"cannot create the directory {path}: {error.strerror}; run from a writable directory")

def lock_run_dir(run_dir: str):
    """Holds run_dir's lock for the run's life (released when the process ends, however it ends): a second run
    in the same directory, two --resume of one checkpoint at once, is refused."""
    try:
        lock = open(os.path.join(run_dir, "run.lock"), "a")
    except OSError as error:
        fail(f"cannot open the run directory's lock file in {run_dir}: {error.strerror}")
    try:
        if fcntl is None:  # Windows: a lock on the file's first byte
            import msvcrt

            msvcrt.locking(lock.fileno(), msvcrt.LK_NBLCK, 1)
        else:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except (BlockingIOError, PermissionError):  # fcntl's and msvcrt's word for a lock another process holds
        fail(f"{run_dir} is in use by another run (two --resume of one checkpoint?): let it end or stop it")
    except OSError as error:
        fail(f"cannot lock the run directory {run_dir}: {error.strerror}")
    return lock

def quiet_log_thread(hook_args):
    """TensorBoard's writer thread dies on a full disk; its error comes back from the writer's next call,
    which logs_may_fail says in one line: no traceback from the thread itself."""
    if type(hook_args.thread).__name__ != "_AsyncWriterThread":
        threading.__excepthook__(hook_args)

def start_logging(run: Run):
    """TensorBoard (W&B too with --track); a resumed run drops the points logged after its checkpoint."""
    args = run.args
    config = {**vars(args), "device": str(run.device)}
    if args.track:
        try:
            import wandb
        except ImportError:
            fail("--track needs wandb: pip install wandb, or drop --track")
        try:
            resumed_id = run.checkpoint.get("wandb_id") if args.resume else None  # goes on in its W&B run
            wandb_run = wandb.init(project=args.wandb_project_name, entity=args.wandb_entity, config=config,
                                   sync_tensorboard=True, name=run.name, save_code=True,
                                   dir=run.dir, id=resumed_id, resume="allow")
            run.wandb_id = wandb_run.id
        except Exception as error:  # a bad project or entity, no network without WANDB_MODE=offline
            fail(f"--track: W&B did not start ({type(error).__name__}: {first_line(error, 2)}); check "
                 f"--wandb-project-name and --wandb-entity, or run with WANDB_MODE=offline, or drop --track")
    from torch.utils.tensorboard import SummaryWriter

    threading.excepthook = quiet_log_thread

    purge_step = run.checkpoint and run.checkpoint["counters"]["global_step"] + 1
    writer = SummaryWriter(run.dir, purge_step=purge_step)
    table = "\n".join(f"|{key}|{value}|" for key, value in config.items())
    writer.add_text("hyperparameters", f"|param|value|\n|-|-|\n{table}")
    return writer

def send_videos(run: Run):
    """With --track and --capture-video: the MP4s recorded since the last call, training's and evaluation's,
    to W&B (videos, eval/videos)."""
    if not (run.args.track and run.video_dir):
        return
    import wandb

    for folder, key in [(run.video_dir, "videos"), (f"{run.video_dir}-eval", "eval/videos")]:
        for path in sorted(glob.glob(os.path.join(folder, "*.mp4")), key=os.path.getmtime):
            if path not in run.videos_sent:
                wandb.log({key: wandb.Video(path, format="mp4")})
                run.videos_sent.add(path)

def as_data(value):
    """A copy of value that a checkpoint can hold: numpy arrays as tensors, dataclasses as dicts; the tensors,
    dicts and lists in it copied too (the run goes on changing the originals)."""
    if is_dataclass(value):
        value = vars(value)
    if isinstance(value, dict):
        return {key: as_data(item) for key, item in value.items()}
    if isinstance(value, list):
        return [as_data(item) for item in value]
    if isinstance(value, torch.Tensor):  # on the CPU: a CUDA error leaves it readable, to be written
        return value.detach().to("cpu", copy=True)
    return torch.from_numpy(np.array(value)) if isinstance(value, (np.ndarray, np.generic)) else value

def restore_data(target, saved: dict):
    """The inverse of as_data, into the dataclass target."""
    for name, value in saved.items():
        if isinstance(value, dict):
            restore_data(getattr(target, name), value)
        else:
            setattr(target, name, value.numpy() if isinstance(value, torch.Tensor) else value)

def load_data_file(args: Args) -> dict:
    """The file of --resume or --load-model, its records' checksums verified, read with weights_only=True
    (never code); a damaged or foreign file is a one-line error."""
    path = args.resume or args.load_model
    flag = "--resume" if args.resume else "--load-model"
    if not os.path.isfile(path):
        fail(f"{flag} {path!r}: {what_is_not_a_file(path)}; give a checkpoint.pt or a .model file")
    try:
        with zipfile.ZipFile(path) as archive:
            damaged = archive.testzip()  # the first record whose CRC-32 does not match, if any
        if damaged:
            raise ValueError(f"{damaged} fails its checksum")
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # truncated, corrupt, or holding objects other than tensors and plain data
        fail(f"{flag} {path!r} is not a readable checkpoint or model ({type(error).__name__}: "
             f"{first_line(error)})")
    if not isinstance(saved, dict) or saved.get("format") != CHECKPOINT_FORMAT:
        found = saved.get("format") if isinstance(saved, dict) else type(saved).__name__
        fail(f"{flag} {path!r} is not a {os.path.basename(__file__)} checkpoint or model (format {found!r}; "
             f"this script reads {CHECKPOINT_FORMAT!r})")
    parts = dict(args=dict, counters=dict, generator=dict, torch=torch.Tensor, state=dict,
                 recent_returns=list, agent=dict, optimizer=dict, spaces=list)
    for name, kind in parts.items():
        if not isinstance(saved.get(name), kind):
            fail(f"{flag} {path!r} is damaged: its {name!r} is missing or not a {kind.__name__}")
    return saved

def what_is_not_a_file(path: str) -> str:
    if os.path.isdir(path):
        return "a directory"
    if os.path.exists(path):
        return "not a regular file (a device, a FIFO or a socket)"
    return "a link that leads nowhere (or in a loop)" if os.path.islink(path) else "no such file"

def check_saved(args: Args, saved: dict):
    """What a checkpoint or model holds beyond its parts' types, before any of it is used: its own flags
    through check_args, counters present and consistent with the flags, recent returns and weights finite."""
    path = args.resume or args.load_model
    message = io.StringIO()
    try:
        with contextlib.redirect_stderr(message):
            check_args(Args(**saved["args"]))  # as saved: the flags given now are checked as flags
    except SystemExit:
        reason = message.getvalue().strip().removeprefix("error: ")
        fail(f"{path!r} holds flags this run cannot take: {reason}")
    counters = saved["counters"]
    batch_size = args.num_envs * args.num_steps
    iteration = counters.get("iteration")
    kl_beta = counters.get("kl_beta")
    if not (type(iteration) is int and 0 <= iteration <= args.total_timesteps // batch_size
            and counters.get("global_step") == iteration * batch_size
            and isinstance(kl_beta, float) and math.isfinite(kl_beta) and kl_beta >= 0):
        fail(f"{path!r} is damaged: its counters {counters} do not fit its flags")
    if args.resume and iteration == args.total_timesteps // batch_size:
        fail(f"--resume {path!r}: the run is complete (step {iteration * batch_size:,}), nothing is left to "
             f"train; evaluate its model with --load-model")
    returns = saved["recent_returns"]
    if len(returns) > 100 or not all(type(value) in (int, float) and math.isfinite(value)
                                     for value in returns):
        fail(f"{path!r} is damaged: its recent returns are not up to 100 finite numbers")
    if not isinstance(saved.get("wandb_id"), (str, type(None))):
        fail(f"{path!r} is damaged: its W&B run id {saved['wandb_id']!r} is not text")
    for name, weight in saved["agent"].items():
        if not (isinstance(weight, torch.Tensor) and torch.isfinite(weight).all()):
            fail(f"{path!r} is damaged: its weight {name!r} is not a tensor of finite numbers")

def resumed_args(args: Args, checkpoint: dict, given: Optional[set] = None) -> Args:
    """The checkpoint's flags; a given flag that differs is an error, but for those of --load-model's
    evaluation and those below."""
    saved = checkpoint["args"]
    own = ["resume", "export_onnx", "cuda"]  # a run may go on on another device
    if args.load_model:
        own = ["load_model", "resume", "eval_episodes", "eval_greedy", "capture_video", "seed", "exp_name",
               "track", "cuda", "wandb_project_name", "wandb_entity", "save_model", "export_onnx"]
    if given is None:
        defaults = vars(Args())
        given = {key for key, value in vars(args).items() if value != defaults[key]}
    # named, these suit the machine (its cores, its packages) or choose what the run leaves, never how it
    # trains; left out, they are the run's own
    own += sorted(given & {"torch_threads", "capture_video", "track", "save_model", "eval_episodes",
                           "eval_greedy", "checkpoint_every"})
    if args.load_model:  # evaluation in envs of other arguments (of the same spaces), where named
        own += sorted(given & {"env_kwargs"})
    for key in sorted(given - set(own)):
        if getattr(args, key) != saved.get(key):
            action = "--resume continues" if args.resume else "--load-model evaluates"
            fail(f"{action} the saved run with its flags: drop {flag_name(key)} (saved: {saved.get(key)!r})")
    try:
        resumed = Args(**{**saved, **{key: getattr(args, key) for key in own}})
    except TypeError as error:
        fail(f"{args.resume or args.load_model!r} holds flags this script does not know ({error})")
    if args.load_model and "eval_episodes" not in given:  # named, even 0 (to export alone), it holds
        resumed.eval_episodes = 10
    return resumed

def run_device(args: Args, given: Optional[set]) -> torch.device:
    """training_device's choice, said in one line; where --cuda finds no GPU torch can use, a note first (an
    error if --cuda was named on the command line)."""
    device = training_device(args)
    if args.cuda and not torch.cuda.is_available():
        why = "this torch has no CUDA" if torch.version.cuda is None else "no GPU or driver torch can use"
        if "cuda" in (given or set()):
            fail(f"--cuda: {why}; drop --cuda to train on the CPU")
        print(f"note: CUDA is not usable here ({why}): the run goes on {device} (--no-cuda: no note)")
    name = f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""
    print(f"device: {device}{name}")
    return device

def set_numerics(args: Args, device: torch.device):
    """--torch-deterministic and --tf32 on CUDA (torch's defaults run cuDNN's convolutions in TF32)."""
    torch.backends.cudnn.deterministic = args.torch_deterministic
    if device.type != "cuda":
        return
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = args.tf32
    if args.torch_deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # before cuBLAS starts: the first matmul
        torch.use_deterministic_algorithms(True, warn_only=True)

def check_compile():
    """--compile: torch.compile works here (on a CPU it needs a C++ compiler), tried on a small function."""
    try:
        torch.compile(lambda x: x.sin() + 1)(torch.zeros(3))
    except Exception as error:
        fail(f"--compile: torch.compile does not work here ({type(error).__name__}: {first_line(error)}); "
             f"install what it names (a C++ compiler: gcc), or drop --compile")

def check_autoreset(envs: gym.vector.VectorEnv):
    """The rollout reads SAME_STEP autoreset (a done step returns the next episode's first observation):
    vector envs that reset a step late (gymnasium's default, NEXT_STEP) are a one-line error."""
    mode = envs.metadata.get("autoreset_mode")
    if mode != gym.vector.AutoresetMode.SAME_STEP:
        fail(f"make_envs gives vector envs that autoreset with {mode}; the rollout needs "
             f"gym.vector.AutoresetMode.SAME_STEP: pass it as their autoreset_mode")

def check_agent(agent: nn.Module, envs: gym.vector.VectorEnv, obs: np.ndarray, device: torch.device):
    """The Agent's logits and values for the envs' first observations have the shapes the rollout and the
    loss read, (num_envs, sum(nvec)) and (num_envs,) (outputs after them are the user's): an edit of the
    network or of make_env that breaks them (a value head left (batch, 1)) is a one-line error, not a silent
    broadcast."""
    agent.eval()  # batch norm's statistics left as they are, no dropout's random draw
    try:
        with torch.inference_mode():
            outputs = agent(torch.as_tensor(obs, device=device))
    except Exception:  # a forward pass that fails is left to the rollout, whose traceback shows where
        return
    finally:
        agent.train()
    shapes = [tuple(output.shape) for output in outputs[:2]]
    wanted = [(envs.num_envs, sum(action_nvec(envs.single_action_space))), (envs.num_envs,)]
    if shapes != wanted:
        fail(f"the Agent gives outputs of shapes {shapes} for the envs' observations {obs.shape}; the "
             f"rollout and the loss read {wanted}: fix the network (or make_env's observations)")

def check_video_support():
    try:
        import moviepy  # noqa: F401  (RecordVideo writes MP4s with it)
    except ImportError:
        fail("--capture-video needs moviepy: pip install moviepy, or drop --capture-video")
    with contextlib.suppress(OSError):
        os.makedirs("videos", exist_ok=True)
    if not (os.path.isdir("videos") and os.access("videos", os.W_OK)):
        fail("--capture-video writes under videos/, which cannot be written here: run from a writable folder")
    os.environ.setdefault("SDL_VIDEODRIVER", "dummy")  # pygame renders off-screen, no display needed

def check_memory(flags: str, needed: int, purpose: str = ""):
    """A size this machine's memory cannot hold (needed, in bytes) is refused before it is built (where os
    tells the memory's size: not on Windows)."""
    if not hasattr(os, "sysconf"):
        return
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    if needed > memory:
        fail(f"{flags} would need over {needed / 2**30:.0f} GiB{purpose}; this machine has "
             f"{memory / 2**30:.0f}")

def check_args(args: Args):
    rules = [("a positive integer", lambda value: value > 0,
              ["total_timesteps", "num_envs", "num_steps", "num_minibatches", "update_epochs"]),
             ("in [0, 1]", lambda value: 0 <= value <= 1, ["gamma", "gae_lambda"]),
             ("> 0", lambda value: value > 0, ["learning_rate", "clip_coef", "max_grad_norm", "kl_target"]),
             (">= 0", lambda value: value >= 0,
              ["kl_beta", "ent_coef", "ent_coef_min", "vf_coef", "eval_episodes", "torch_threads",
               "checkpoint_every"]),
             ("in (0, 1]", lambda value: 0 < value <= 1, ["ent_coef_decay"]),
             ("at most 4096", lambda value: value <= 4096, ["num_envs"]),
             ("in [0, 2**32)", lambda value: 0 <= value < 2**32, ["seed"]),
             ("> 0 (or left out)", lambda value: value is None or value > 0, ["target_kl"]),
             ("one or more positive integers", lambda sizes: sizes and min(sizes) > 0, ["hidden_sizes"])]
    for name, value in vars(args).items():  # nan and inf would pass some of the rules below
        if isinstance(value, float) and not math.isfinite(value):
            fail(f"{flag_name(name)} must be a finite number, got {value}")
    for rule, holds, names in rules:
        for name in names:
            if not holds(getattr(args, name)):
                fail(f"{flag_name(name)} must be {rule}, got {getattr(args, name)}")
    try:  # a torch.nn module made without arguments that keeps its input's shape (its warnings unsaid)
        with warnings.catch_warnings(action="ignore"):
            works = getattr(nn, args.activation)()(torch.zeros(2, 3)).shape == (2, 3)
    except Exception:
        works = False
    if not works:
        hint = "".join(f": did you mean {name}?" for name in dir(nn)
                       if name.lower() == args.activation.lower() and name != args.activation)
        fail(f"--activation {args.activation!r} is not a torch.nn activation (Tanh, ReLU, ELU, ...){hint}")
    sizes = args.hidden_sizes
    check_memory("--hidden-sizes", 56 * sum(a * b for a, b in zip(sizes, sizes[1:])))  # 2 MLPs, 56 B a weight
    if args.ent_coef_min > args.ent_coef:
        fail(f"--ent-coef-min {args.ent_coef_min} > --ent-coef {args.ent_coef}: the floor must be lower")
    if not args.exp_name or os.sep in args.exp_name:
        fail(f"--exp-name must be a non-empty name without {os.sep!r}, got {args.exp_name!r}")
    if args.export_onnx and not all(map(importlib.util.find_spec, ["onnx", "onnxscript"])):
        fail("--export-onnx needs onnx and onnxscript: pip install onnx onnxscript, or drop --export-onnx")
    folder = os.path.dirname(os.path.abspath(args.export_onnx or "."))
    if args.export_onnx and (os.path.isdir(args.export_onnx) or not os.access(folder, os.W_OK)):
        fail(f"--export-onnx {args.export_onnx!r}: no file can be written there (a directory, or a folder "
             f"that is missing or not writable); name a file in a writable folder")
    if args.load_model is not None and args.resume is not None:
        fail("--load-model evaluates a saved model and --resume continues a training: give one of them")
    if args.load_model and not (args.eval_episodes or args.export_onnx):
        fail("--load-model with --eval-episodes 0 has nothing to do: name episodes to play, or --export-onnx")
    if args.capture_video and "render_mode" in args.env_kwargs:
        fail("--capture-video records the env in render mode rgb_array: drop render_mode from --env-kwargs")
    batch_size = args.num_envs * args.num_steps
    if batch_size % args.num_minibatches != 0:
        fail(f"--num-minibatches {args.num_minibatches} does not divide the batch of {batch_size} samples "
             f"(num_envs * num_steps); pick a divisor")
    if args.norm_adv and batch_size // args.num_minibatches < 2:
        fail("minibatches of 1 sample cannot normalize advantages: lower --num-minibatches or --no-norm-adv")
    if args.total_timesteps < batch_size:
        fail(f"--total-timesteps {args.total_timesteps} is smaller than one batch of num_envs * num_steps = "
             f"{batch_size}; raise it or shrink the batch")

def check_env(args: Args) -> list[str]:
    """Makes one env, resets it and takes one random legal step: an env that cannot be made, whose spaces this
    script does not take, or whose observations or reward do not fit, is a one-line error. Returns its
    spaces."""
    try:
        env = make_env(args)()
        check_spaces(args.env_id, env.unwrapped.observation_space, env.unwrapped.action_space)
        obs, info = env.reset(seed=args.seed)
        step_obs, reward = env.step(random_action(env, obs, info, args.seed))[:2]
        for method, observation in [("reset", obs), ("step", step_obs)]:
            if np.shape(observation) != env.observation_space.shape:
                raise ValueError(f"its {method} returns an observation of shape {np.shape(observation)} for "
                                 f"the space's {env.observation_space.shape}")
        if np.ndim(reward) != 0 or np.asarray(reward).dtype.kind not in "biuf":
            raise ValueError(f"its step returns a reward of type {type(reward).__name__} and shape "
                             f"{np.shape(reward)}: return one number")
        obs_size = gym.spaces.flatdim(env.observation_space)
        action_size = gym.spaces.flatdim(env.action_space)  # the logits of Discrete actions
        env.close()
    except Exception as error:  # unknown id, a module that does not import, a constructor that raises, ...
        hint = ""
        if args.env_id.startswith("ALE/"):
            hint = "; Atari games: use ppo_atari.py"
        message = f"{type(error).__name__}: {first_line(error, 2)}"  # gymnasium's second says what to do
        if re.search(r"values to unpack|reset\(\) got an unexpected keyword", message):  # the old gym API
            message += (" (gymnasium's API: reset(seed=None, options=None) returns (obs, info), step(action) "
                        "(obs, reward, terminated, truncated, info))")
        module = args.env_id.partition(":")[0]  # of an id "module:EnvId", which gymnasium imports first
        missing = getattr(error.__cause__, "name", None)
        if ":" in args.env_id and missing and f"{module}.".startswith(f"{missing}."):
            message = f"{error.__cause__}: put its folder on PYTHONPATH (PYTHONPATH=. from there)"
        fail(f"cannot make --env-id {args.env_id!r}: {message}{hint}")
    if obs_size == 0:
        fail(f"{args.env_id}'s observations hold no values (a space of size 0): give them some")
    render_modes = env.metadata.get("render_modes", [])
    if args.capture_video and "rgb_array" not in render_modes:
        fail(f"--capture-video: {args.env_id} cannot render frames (its render modes: {render_modes}); "
             f"give it an rgb_array render mode, or drop --capture-video")
    if args.capture_video:  # in rgb_array render mode, as the recording env is; one frame rendered
        try:
            recording = gym.make(args.env_id, render_mode="rgb_array", **args.env_kwargs)
            recording.reset(seed=args.seed)
            frame = recording.render()
            recording.close()
        except Exception as error:
            fail(f"--capture-video: {args.env_id} cannot be made to render ({type(error).__name__}: "
                 f"{first_line(error)}); give its constructor a render_mode argument, or drop "
                 f"--capture-video")
        if not (isinstance(frame, np.ndarray) and frame.ndim == 3 and frame.shape[2] == 3):
            fail(f"--capture-video: {args.env_id}'s render() gives {type(frame).__name__} of shape "
                 f"{np.shape(frame)}, not an RGB frame (height, width, 3): fix it, or drop --capture-video")
    # a step's bytes in the rollout, the batch and its shuffled copy: float32 observations and action values
    step = 8 * obs_size + 24 * action_size + 64
    check_memory("--num-envs * --num-steps", step * args.num_envs * args.num_steps,
                 f" for {args.env_id}'s observations and actions")
    return [str(env.unwrapped.observation_space), str(env.unwrapped.action_space)]  # before wrappers

def random_action(env: gym.Env, obs, info: dict, seed: int):
    """A random legal action, as the env takes it."""
    nvec = action_nvec(env.action_space)
    logits = mask_logits(torch.zeros(sum(nvec)), observation_and_mask(obs, info, nvec)[1])
    return env_actions(sample_actions(logits, nvec, np.random.default_rng(seed)), env.action_space)

def check_spaces(env_id: str, observation_space: gym.Space, action_space: gym.Space):
    pixels = len(observation_space.shape or ()) == 3 and observation_space.dtype == np.uint8
    if pixels or not observation_space.is_np_flattenable:
        hint = ": for Atari games, use ppo_atari.py" if pixels else ""
        fail(f"{env_id} has {observation_space} observations; ppo_discrete.py takes what gymnasium flattens "
             f"to one vector (Box, Discrete, Tuple, Dict, ...), not images{hint}")
    actions = f"{env_id} has {action_space} actions; ppo_discrete.py takes"
    if isinstance(action_space, gym.spaces.Box):
        fail(f"{actions} discrete ones: use ppo_continuous.py")
    kinds = (gym.spaces.Discrete, gym.spaces.MultiDiscrete, gym.spaces.MultiBinary)
    if not isinstance(action_space, kinds) or action_space.shape[1:]:
        fail(f"{actions} Discrete, MultiDiscrete or MultiBinary (a vector) ones; no script here takes others")

def env_states(envs: gym.vector.SyncVectorEnv) -> Optional[list[dict]]:
    """Each env's generator, time-limit counter and `state` array, for gymnasium's own classic-control envs
    (known by their class), plainly wrapped, in this process; None if one is any other env, or in a wrapper of
    the user's, whose whole state the script cannot know, or if they run in worker processes."""
    in_process = isinstance(envs, gym.vector.SyncVectorEnv)  # not an AsyncVectorEnv
    if not (in_process and all(type(env.unwrapped) in (CartPoleEnv, AcrobotEnv, MountainCarEnv)
                               and plainly_wrapped(env) for env in envs.envs)):
        return None
    return [dict(physics=torch.from_numpy(np.array(env.unwrapped.state)),
                 random=env.unwrapped.np_random.bit_generator.state,
                 steps_beyond_terminated=getattr(env.unwrapped, "steps_beyond_terminated", None),
                 elapsed_steps=env.get_wrapper_attr("_elapsed_steps")
                 if env.has_wrapper_attr("_elapsed_steps") else None) for env in envs.envs]

def plainly_wrapped(env: gym.Env) -> bool:
    """Whether env's wrappers are only gym.make's and --capture-video's, which hold no state that a resumed
    run needs but the time limit's counter (saved); one of the user's (NormalizeObservation, ...) may."""
    plain = (gym.wrappers.TimeLimit, gym.wrappers.OrderEnforcing, gym.wrappers.PassiveEnvChecker,
             gym.wrappers.RecordVideo)
    while type(env) in plain:
        env = env.env
    return not isinstance(env, gym.Wrapper)

def restore_env_states(envs: gym.vector.SyncVectorEnv, states: list[dict]):
    if len(states) != len(envs.envs):
        raise ValueError(f"{len(states)} env states for {len(envs.envs)} envs")
    for env, state in zip(envs.envs, states):
        physics = state["physics"].numpy()
        shape = np.shape(env.unwrapped.state)
        if physics.shape != shape or not np.isfinite(physics).all():
            raise ValueError(f"an env state of shape {physics.shape} where {shape} finite numbers belong")
        env.unwrapped.state = physics
        env.unwrapped.np_random.bit_generator.state = state["random"]
        if isinstance(env.unwrapped, CartPoleEnv):
            env.unwrapped.steps_beyond_terminated = state["steps_beyond_terminated"]
        if state["elapsed_steps"] is not None:
            env.set_wrapper_attr("_elapsed_steps", state["elapsed_steps"])

def evaluate(run: Run, agent: Agent, state: Optional[EnvState] = None) -> list[float]:
    """Plays eval_episodes whole episodes in a fresh env (recorded with --capture-video); their returns."""
    args = run.args
    agent.eval()  # dropout off, batch norm from its running statistics
    video_dir = f"{run.video_dir}-eval" if args.capture_video else None
    env = make_env(args, video_dir, True)()
    if not env.has_wrapper_attr("_max_episode_steps"):  # no time limit: a policy may never end an episode
        env = gym.wrappers.TimeLimit(env, 10_000)
        print(f"note: {args.env_id} has no time limit: evaluation episodes end at 10,000 steps")
    rng = np.random.default_rng(args.seed)
    returns = []
    for episode in range(args.eval_episodes):
        obs, info = env.reset(seed=args.seed + 100_000 + episode)
        done = False
        returns.append(0.0)
        while not done:
            obs, mask = observation_and_mask(obs, info, agent.nvec)
            with torch.inference_mode():
                logits = mask_logits(agent(torch.as_tensor(obs, device=run.device)[None])[0][0], mask)
            if args.eval_greedy:
                actions = component_argmax(logits.cpu().numpy(), agent.nvec)
            else:
                actions = sample_actions(logits, agent.nvec, rng)
            obs, reward, terminated, truncated, info = env.step(env_actions(actions, env.action_space))
            returns[-1] += float(reward)
            done = terminated or truncated
        with run.logs_may_fail():
            run.writer.add_scalar("eval/episodic_return", returns[-1], episode)
        print(f"eval episode {episode + 1} of {args.eval_episodes}: return {returns[-1]:.2f}", flush=True)
        if run.received:  # a stop signal: the episodes done are kept
            break
    env.close()
    print(f"eval ({'greedy' if args.eval_greedy else 'sampled'}, {len(returns)} episodes): mean return "
          f"{np.mean(returns):.2f} +- {np.std(returns):.2f}" + (f", videos in {video_dir}" * bool(video_dir)))
    return returns

class GreedyPolicy(nn.Module):
    """Greedy evaluation's choice as one module: observations (batch, obs_dim) float32 (flattened as in
    training where they are not a Box vector), and where the env gives masks its action_mask (batch,
    sum(nvec)) bool -> actions as the env takes them: (batch,) for Discrete, (batch, components) for
    MultiDiscrete and MultiBinary."""

    def __init__(self, agent: Agent, action_space: gym.Space):
        super().__init__()
        self.agent = agent
        self.discrete = isinstance(action_space, gym.spaces.Discrete)
        # each component's first action as the env takes it: its start (0 for MultiBinary)
        first = env_actions(np.zeros((1, len(agent.nvec)), np.int64), action_space)[0]
        self.register_buffer("start", torch.as_tensor(first))

    def forward(self, obs: torch.Tensor, action_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        logits = mask_logits(self.agent(obs)[0], action_mask).split(self.agent.nvec, -1)
        actions = torch.stack([component.argmax(-1) for component in logits], -1) + self.start
        return actions[:, 0] if self.discrete else actions

def export_onnx(run: Run, agent: Agent, state: Optional[EnvState] = None):
    """--export-onnx: the greedy policy, with an action_mask input where the env gives masks."""
    env = make_env(run.args)()
    obs, info = env.reset(seed=run.args.seed)
    env.close()
    inputs = (torch.as_tensor(np.asarray(obs, np.float32)[None].repeat(2, 0)),)
    if "action_mask" in info:
        inputs += (torch.ones(2, sum(agent.nvec), dtype=torch.bool),)
    write_onnx(run, GreedyPolicy(agent, env.action_space), inputs, ["obs", "action_mask"][:len(inputs)])

def write_onnx(run: Run, policy: nn.Module, inputs: tuple, names: list[str]):
    """Exports policy(*inputs) to --export-onnx as one graph whose batch size is free."""
    batch = torch.export.Dim("batch")
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)  # the exporter's notes on what it does not use
    with warnings.catch_warnings(action="ignore"):
        torch.onnx.export(policy.cpu().eval(), inputs, run.args.export_onnx, input_names=names,
                          output_names=["action"], dynamic_shapes=[{0: batch}] * len(inputs), dynamo=True,
                          verbose=False)
    print(f"greedy policy exported to {run.args.export_onnx}: inputs {', '.join(names)}, output action")

def evaluate_saved_model(args: Args, given: Optional[set] = None) -> dict:
    """--load-model: evaluates the saved agent (and exports it with --export-onnx), without training."""
    run = Run.start(args, given)
    env = make_env(run.args)()
    agent = make_agent(run.args, env.observation_space, env.action_space).to(run.device)
    run.load_agent(agent)
    env.close()
    return run.finish()

def parse_args() -> Args:
    """The flags given, over the values of the --preset named, over Args' defaults."""
    listing = "; ".join(f"{name}: {source}" for name, (source, _) in PRESETS.items())
    description = f"--preset NAME sets the flags for one env, and the flags given override them. {listing}."
    args = tyro.cli(Args, description=description)
    if args.preset is None:
        return args
    preset = Args(preset=args.preset, **PRESETS[args.preset][1])
    return tyro.cli(Args, description=description, default=preset)

def main():
    signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl-C raises KeyboardInterrupt again
    try:
        named = {arg[2:].split("=")[0].replace("-", "_") for arg in sys.argv[1:] if arg.startswith("--")}
        given = {name for name in named | {name[3:] for name in named} if name in Args.__dataclass_fields__}
        args = parse_args()
        summary = evaluate_saved_model(args, given) if args.load_model else train(args, given)
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        raise SystemExit(130) from None
    if summary["stopped"]:
        raise SystemExit(128 + summary["stopped"])  # 130 for Ctrl-C, 143 for SIGTERM

if __name__ == "__main__":
    main()
