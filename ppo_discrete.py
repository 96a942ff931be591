"""PPO for discrete actions (CartPole, Acrobot, LunarLander, MultiDiscrete games...) in one file; flags and
defaults as CleanRL's ppo.py. The algorithm comes first, in its order; input checks, checkpoints, torchrun,
logging and evaluation follow the line "Operational parts". Under torchrun, each of N processes steps
num_envs/N envs.

    python ppo_discrete.py                                   # CartPole-v1, logs to runs/
    python ppo_discrete.py --env-id LunarLander-v3 --help     # every flag, with its meaning
    python ppo_discrete.py --load-model runs/RUN/ppo_discrete.model --eval-episodes 5 --capture-video
"""

import os
import signal

signal.signal(signal.SIGINT, signal.SIG_DFL)  # Ctrl-C while importing: stop quietly
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # idle torch threads sleep: runs side by side share cores

import contextlib
import importlib.util
import logging
import math
import random
import sys
import threading
import time
import warnings
import zipfile
from collections import deque
from dataclasses import dataclass, field, is_dataclass
from types import SimpleNamespace
from typing import Literal, NamedTuple, Optional

import gymnasium as gym
import numpy as np
import torch
import torch._dynamo  # noqa: F401  (torch.optim imports it: imported after torchrun starts, it outlives it)
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
import tyro
from gymnasium.envs.classic_control import AcrobotEnv, CartPoleEnv, MountainCarEnv

CHECKPOINT_FORMAT = "ppo_discrete/4"  # written into every checkpoint and saved model, checked on load
MASKED_LOGIT = -1e8  # the logit of an illegal action: its probability exp(-1e8 - ...) is exactly 0 in float32

@dataclass
class Args:
    exp_name: str = os.path.basename(__file__)[: -len(".py")]
    """the name of this experiment (part of the run name)"""
    seed: int = 1
    """seed of the experiment (python, numpy, torch and the envs)"""
    torch_deterministic: bool = True
    """if toggled, sets `torch.backends.cudnn.deterministic=True`"""
    cuda: bool = True
    """if toggled, uses CUDA when it is available (the small default networks are faster on CPU)"""
    compile: bool = False
    """if toggled, runs the agent and the loss through torch.compile (compiling takes a while at the start)"""
    track: bool = False
    """if toggled, logs the run to Weights and Biases (WANDB_MODE=offline works without network)"""
    wandb_project_name: str = "cleanRL"
    """the Weights and Biases project name"""
    wandb_entity: Optional[str] = None
    """the Weights and Biases entity (team)"""
    capture_video: bool = False
    """if toggled, records MP4 videos of the agent under `videos/{run_name}/`"""

    env_id: str = "CartPole-v1"
    """the gymnasium env id (Box or Dict-of-Box observations, Discrete or MultiDiscrete actions)"""
    total_timesteps: int = 500000
    """total environment steps of the training, summed over all envs"""
    learning_rate: float = 2.5e-4
    """the learning rate of the optimizer"""
    num_envs: int = 4
    """the number of parallel environments in all (under torchrun, each of N processes steps num_envs/N)"""
    num_steps: int = 128
    """the number of steps run in each environment per rollout (batch = num_envs * num_steps)"""
    anneal_lr: bool = True
    """if toggled, the learning rate decays linearly to 0 over the training"""
    gamma: float = 0.99
    """the discount factor gamma"""
    gae_lambda: float = 0.95
    """the lambda of generalized advantage estimation"""
    num_minibatches: int = 4
    """the number of minibatches each batch is split into (under torchrun, each process takes 1/N of each)"""
    update_epochs: int = 4
    """the number of passes over the batch in each policy update"""
    norm_adv: bool = True
    """if toggled, normalizes advantages within each minibatch (under torchrun: each process's share)"""
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
    """the policy objective (PPO paper, sections 3-4): clip: the clipped surrogate; none: the plain surrogate
    r*A; kl-adaptive: r*A - beta*KL[pi_old||pi], beta adapted to --kl-target; kl-fixed: a fixed --kl-beta;
    ppog: A*log(pi) without the samples the clip stops ("PPO Gilad version", from slides on PPO for Atari)"""
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
    activation: Literal["tanh", "relu"] = "tanh"
    """the activation of the hidden layers"""
    torch_threads: int = 1
    """CPU threads for torch (1: fastest for small networks, and lets runs side by side share the cores)"""
    save_model: bool = False
    """if toggled, saves the trained agent to `runs/{run_name}/{exp_name}.model`"""
    eval_episodes: int = 0
    """after training (or with --load-model), evaluates this many episodes and logs eval/episodic_return"""
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

class MaskInInfo(gym.Wrapper):
    """Moves a Dict observation's "action_mask" into info, where the rollout reads the legal actions."""

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        return obs, {**info, "action_mask": obs["action_mask"]}

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        return obs, reward, terminated, truncated, {**info, "action_mask": obs["action_mask"]}

def make_env(env_id: str, video_dir: Optional[str] = None, every_episode: bool = False):
    """A thunk for one env, its spaces checked; a Dict observation becomes one vector (its Box values,
    flattened in the space's key order; an "action_mask" goes to info). With video_dir, records MP4s there
    (episodes 0, 1, 8, 27, ... or all)."""

    def thunk():
        env = gym.make(env_id) if video_dir is None else gym.make(env_id, render_mode="rgb_array")
        if video_dir is not None:
            trigger = (lambda episode: True) if every_episode else None
            env = gym.wrappers.RecordVideo(env, video_dir, episode_trigger=trigger)
        check_spaces(env_id, env.observation_space, env.action_space)
        if isinstance(env.observation_space, gym.spaces.Dict):
            inputs = [key for key in env.observation_space if key != "action_mask"]
            env = MaskInInfo(env) if "action_mask" in env.observation_space.keys() else env
            env = gym.wrappers.FlattenObservation(gym.wrappers.FilterObservation(env, inputs))
        return env
    return thunk

def make_envs(args: Args, run_name: str, rank: int = 0, world_size: int = 1) -> gym.vector.SyncVectorEnv:
    """This process's num_envs/world_size envs. SAME_STEP autoreset: a done step returns the next episode's
    first observation and the true last one in info["final_obs"], so every stored step is a real one."""
    if args.capture_video and rank == 0:
        check_video_support()
    thunks = [make_env(args.env_id, f"videos/{run_name}" if args.capture_video and rank == i == 0 else None)
              for i in range(args.num_envs // world_size)]
    try:  # copy=False: step returns the envs' own buffer (the rollout copies it before the next step)
        envs = gym.vector.SyncVectorEnv(thunks, copy=False, autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
        envs.reset(seed=args.seed)  # an observation that does not fit the declared space fails here
    except Exception as error:  # unknown id, a module that does not import, a constructor that raises, ...
        hint = "; Atari games: use ppo_atari.py" if args.env_id.startswith("ALE/") else \
            "; --capture-video needs an env that renders rgb_array frames" if args.capture_video else ""
        message = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
        fail(f"cannot make --env-id {args.env_id!r}: {message}{hint}")
    return envs

def layer_init(layer: nn.Module, gain: float = np.sqrt(2), bias: float = 0.0) -> nn.Module:
    nn.init.orthogonal_(layer.weight, gain)
    nn.init.constant_(layer.bias, bias)
    return layer

class Agent(nn.Module):
    """Actor (logits) and critic (value): two MLPs by default, or one shared body with two heads. nvec: the
    number of actions of each component (MultiDiscrete; Discrete(n) is [n])."""

    def __init__(self, obs_dim, nvec, hidden_sizes=(64, 64), activation="tanh", shared_body=False):
        super().__init__()
        sizes, act = [obs_dim, *hidden_sizes], {"tanh": nn.Tanh, "relu": nn.ReLU}[activation]

        def body():  # (Linear, activation) for each hidden layer
            return nn.Sequential(*(module for n_in, n_out in zip(sizes, sizes[1:])
                                   for module in (layer_init(nn.Linear(n_in, n_out)), act())))

        self.actor_body = body()
        self.critic_body = self.actor_body if shared_body else body()
        self.actor_head = layer_init(nn.Linear(sizes[-1], sum(nvec)), gain=0.01)
        self.critic_head = layer_init(nn.Linear(sizes[-1], 1), gain=1.0)
        self.register_buffer("layout", torch.as_tensor(action_layout(nvec)), persistent=False)
        self.padded = len(set(nvec)) > 1

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(batch, obs_dim) -> logits (batch, components, max(nvec)), values (batch,)"""
        actor_features = self.actor_body(obs)
        critic_features = actor_features if self.critic_body is self.actor_body else self.critic_body(obs)
        logits = self.actor_head(actor_features)  # (batch, sum(nvec))
        if self.padded:  # components of different sizes: an impossible action fills the shorter ones' rows
            logits = torch.cat([logits, torch.full_like(logits[:, :1], MASKED_LOGIT)], 1)[:, self.layout]
        return logits.view(-1, *self.layout.shape), self.critic_head(critic_features).squeeze(-1)

def action_layout(nvec) -> np.ndarray:
    """Which of the sum(nvec) logits is each component's each action: (components, max(nvec)); sum(nvec)
    (the impossible action) where a component has fewer."""
    starts = np.cumsum([0, *nvec[:-1]])
    return np.array([[start + a if a < n else sum(nvec) for a in range(max(nvec))]
                     for start, n in zip(starts, nvec)])

@dataclass
class EnvState:
    """What one rollout hands to the next in this process, as (num_envs, ...) arrays."""
    obs: np.ndarray
    mask: Optional[np.ndarray]  # (num_envs, components, max(nvec)) True = legal; None: the env gives none
    episode_returns: np.ndarray  # the raw return and length of each running episode
    episode_lengths: np.ndarray

class Rollout(NamedTuple):
    """num_steps steps of every env: (num_steps, num_envs, ...) arrays."""
    obs: np.ndarray
    actions: np.ndarray  # (num_steps, num_envs, components)
    masks: Optional[np.ndarray]
    logits: torch.Tensor  # (num_steps, num_envs, components, max(nvec)): the policy that acted
    values: np.ndarray
    rewards: np.ndarray  # a truncated step's reward holds + gamma * V(final obs)
    dones: np.ndarray
    next_value: np.ndarray  # (num_envs,) V of the observation after the last step

class Batch(NamedTuple):
    """A rollout flattened to (num_steps * num_envs, ...) tensors, with its advantages, for the update."""
    obs: torch.Tensor
    actions: torch.Tensor
    masks: Optional[torch.Tensor]
    log_probs: torch.Tensor  # (batch, components, max(nvec)) log pi_old of every action, for the exact KL
    logprobs: torch.Tensor  # (batch,) log pi_old of the action taken
    values: torch.Tensor
    advantages: torch.Tensor
    returns: torch.Tensor

def restart_episodes(envs, args: Args, seed: int, state: Optional[EnvState] = None) -> EnvState:
    """Resets the envs to new episodes, into state or a new EnvState."""
    obs, info = envs.reset(seed=seed)
    state = state or EnvState(None, None, np.zeros(envs.num_envs), np.zeros(envs.num_envs, dtype=np.int64))
    layout = action_layout(action_nvec(envs.single_action_space))
    state.obs, state.mask = observation_and_mask(obs, info, layout)
    state.episode_returns[:], state.episode_lengths[:] = 0, 0
    return state

def sample_actions(logits: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One sample of softmax(logits) over the last axis (Gumbel-max): (..., n_actions) -> (...)."""
    return np.argmax(logits + rng.gumbel(size=logits.shape), axis=-1)

def collect_rollout(envs, agent: nn.Module, state: EnvState, args: Args, rng: np.random.Generator,
                    device: torch.device) -> tuple[Rollout, list]:
    """num_steps steps of the policy in every env, and each ended episode's (step, env, return, length)."""
    num_steps, num_envs, space = args.num_steps, envs.num_envs, envs.single_action_space
    layout = action_layout(action_nvec(space))  # (components, max(nvec)): where the masks' flags go
    obs = np.empty((num_steps, *state.obs.shape), dtype=np.float32)  # (num_steps, num_envs, obs_dim)
    actions = np.empty((num_steps, num_envs, len(layout)), dtype=np.int64)
    masks = None if state.mask is None else np.empty((num_steps, *state.mask.shape), dtype=bool)
    rewards = np.empty((num_steps, num_envs), dtype=np.float32)
    dones = np.empty((num_steps, num_envs), dtype=np.float32)
    logits, values, truncations, finished = [], [], [], []  # truncations: (step, env, final obs)
    with torch.inference_mode():
        for step in range(num_steps):
            obs[step] = state.obs
            step_logits, step_values = agent(torch.as_tensor(state.obs, device=device))
            logits.append(step_logits)
            values.append(step_values)
            if masks is not None:
                masks[step] = state.mask
            actions[step] = sample_actions(mask_logits(step_logits, state.mask).cpu().numpy(), rng)
            next_obs, reward, terminated, truncated, info = envs.step(env_actions(actions[step], space))
            state.obs, state.mask = observation_and_mask(next_obs, info, layout, masks is not None)
            rewards[step], dones[step] = reward, terminated | truncated
            state.episode_returns += reward
            state.episode_lengths += 1
            for env in np.flatnonzero(dones[step]):
                finished.append((step, env, state.episode_returns[env], state.episode_lengths[env]))
                state.episode_returns[env], state.episode_lengths[env] = 0.0, 0
                if args.bootstrap_truncation and truncated[env] and not terminated[env]:
                    truncations.append((step, env, np.asarray(info["final_obs"][env], np.float32)))
        # V(next obs), and V(final obs) of the truncated episodes, in one forward pass
        final_obs = np.array([o for _, _, o in truncations], dtype=np.float32).reshape(-1, state.obs.shape[1])
        _, bootstrap = agent(torch.as_tensor(np.concatenate([state.obs, final_obs]), device=device))
    bootstrap = bootstrap.cpu().numpy()
    for (step, env, _), final_value in zip(truncations, bootstrap[num_envs:]):
        rewards[step, env] += args.gamma * final_value
    values, next_value = torch.stack(values).cpu().numpy(), bootstrap[:num_envs]
    return Rollout(obs, actions, masks, torch.stack(logits), values, rewards, dones, next_value), finished

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

def make_batch(rollout: Rollout, advantages: np.ndarray, returns: np.ndarray, device: torch.device) -> Batch:
    def flat(array):  # (num_steps, num_envs, ...) -> (num_steps * num_envs, ...) tensor on the device
        return torch.from_numpy(array.reshape(-1, *array.shape[2:])).to(device)

    masks, actions = None if rollout.masks is None else flat(rollout.masks), flat(rollout.actions)
    log_probs = masked_log_probs(rollout.logits.flatten(0, 1), masks)
    logprobs = log_probs.gather(-1, actions[..., None]).sum((-2, -1))  # the components' log-probs summed
    return Batch(flat(rollout.obs), actions, masks, log_probs, logprobs, flat(rollout.values),
                 flat(advantages), flat(returns))

def mask_logits(logits: torch.Tensor, masks) -> torch.Tensor:
    """The logits with MASKED_LOGIT for each illegal action (masks: True = legal, a tensor or an array of the
    logits' shape; None: every action is legal)."""
    return logits if masks is None else torch.where(torch.as_tensor(masks, device=logits.device), logits,
                                                    MASKED_LOGIT)

def masked_log_probs(logits: torch.Tensor, masks: Optional[torch.Tensor]) -> torch.Tensor:
    """log softmax of each component over its legal actions: an illegal action gets probability exactly 0,
    adds exactly 0 to the entropy and to the KL, and no gradient."""
    return F.log_softmax(mask_logits(logits, masks), dim=-1)

def categorical_kl(old_log_probs: torch.Tensor, new_log_probs: torch.Tensor) -> torch.Tensor:
    """The exact KL[pi_old || pi] of each state: sum_a pi_old(a) (log pi_old(a) - log pi(a)), summed over
    independent components if there are several; (batch,)."""
    return (old_log_probs.exp() * (old_log_probs - new_log_probs)).flatten(1).sum(-1)

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

def ppo_loss(agent: nn.Module, minibatch: Batch, args: Args, clip_coef: float, ent_coef: float, kl_beta):
    """The loss of a minibatch: policy loss - ent_coef * entropy + vf_coef * value loss. Returns it, the
    terms to log (detached), and the detached log ratio of each sample."""
    logits, new_values = agent(minibatch.obs)
    log_probs = masked_log_probs(logits, minibatch.masks)  # (batch, components, max(nvec))
    new_logprob = log_probs.gather(-1, minibatch.actions[..., None]).sum((-2, -1))
    entropy = -(log_probs.exp() * log_probs).sum((-2, -1)).mean()  # the components' entropies summed
    kl = categorical_kl(minibatch.log_probs, log_probs).mean() if args.objective.startswith("kl") else None
    pg_loss, logratio = policy_loss(new_logprob, minibatch.logprobs, minibatch.advantages, args.objective,
                                    clip_coef, kl, kl_beta)
    v_loss = value_loss(new_values, minibatch.values, minibatch.returns, clip_coef, args.clip_vloss)
    loss = pg_loss - ent_coef * entropy + args.vf_coef * v_loss
    logs = dict(policy_loss=pg_loss, value_loss=v_loss, entropy=entropy)  # what the update logs, averaged
    return loss, {name: value.detach() for name, value in logs.items()}, logratio.detach()

def update(agent: nn.Module, optimizer: torch.optim.Optimizer, batch, args: Args, rng: np.random.Generator,
           loss_fn, clip_coef: float, ent_coef: float, kl_beta: float) -> dict:
    """update_epochs passes of minibatch steps on loss_fn (until target_kl); returns the mean diagnostics."""
    batch_size = batch.obs.shape[0]
    minibatch_size = batch_size // args.num_minibatches
    totals, logratios, grad_norms, parameters = {}, [], [], list(agent.parameters())
    for epoch in range(args.update_epochs):
        order = torch.from_numpy(rng.permutation(batch_size)).to(batch.obs.device)
        shuffled = type(batch)(*(None if tensor is None else tensor[order] for tensor in batch))
        if args.norm_adv:  # each minibatch's advantages to mean 0 and std 1, all minibatches at once
            advantages = shuffled.advantages.view(args.num_minibatches, minibatch_size)
            advantages = (advantages - advantages.mean(1, True)) / (advantages.std(1, keepdim=True) + 1e-8)
            shuffled = shuffled._replace(advantages=advantages.view(-1))
        for start in range(0, batch_size, minibatch_size):
            rows = slice(start, start + minibatch_size)
            minibatch = type(batch)(*(None if tensor is None else tensor[rows] for tensor in shuffled))
            loss, logs, logratio = loss_fn(agent, minibatch, args, clip_coef, ent_coef, kl_beta)
            totals = {name: totals.get(name, 0.0) + value for name, value in logs.items()}
            logratios.append(logratio)
            if args.target_kl is not None:  # approximate KL by the low-variance estimator k3
                if mean_over_ranks_(((logratio.exp() - 1) - logratio).mean()).item() > args.target_kl:
                    break  # no step on this minibatch, nor on any later one
            optimizer.zero_grad()
            loss.backward()
            if dist.is_initialized():  # under torchrun: the whole minibatch's gradient, in one all-reduce
                grads = mean_over_ranks_(torch.cat([parameter.grad.flatten() for parameter in parameters]))
                for parameter, grad in zip(parameters, grads.split([p.numel() for p in parameters])):
                    parameter.grad.copy_(grad.view_as(parameter))
            grad_norms.append(nn.utils.clip_grad_norm_(parameters, args.max_grad_norm))
            optimizer.step()
        else:
            continue
        break  # target_kl reached: stop the whole update, not just this epoch
    logratio = torch.stack(logratios)  # (minibatches, minibatch_size)
    ratio = logratio.exp()
    stats = {name: total / len(logratios) for name, total in totals.items()}
    stats.update(old_approx_kl=(-logratio).mean(), approx_kl=((ratio - 1) - logratio).mean(),  # KL estimators
                 clipfrac=((ratio - 1.0).abs() > clip_coef).float().mean(),
                 grad_norm=torch.stack(grad_norms).mean() if grad_norms else torch.zeros(()))
    means = mean_over_ranks_(torch.stack(list(stats.values()))).tolist()  # one all-reduce for them all
    return dict(zip(stats, means), gradient_steps=len(grad_norms))

def linear_decay(iteration: int, num_iterations: int, initial: float) -> float:
    """The learning rate (and clip) schedule: initial at iteration 1, initial / num_iterations at the last."""
    return initial * (1.0 - (iteration - 1.0) / num_iterations)

def decayed_ent_coef(iteration: int, args: Args) -> float:
    """The entropy coefficient: multiplied by ent_coef_decay after each update, down to ent_coef_min."""
    return max(args.ent_coef_min, args.ent_coef * args.ent_coef_decay ** (iteration - 1))

def adapted_kl_beta(kl_beta: float, kl: float, kl_target: float) -> float:
    """The PPO paper's rule after each update: halve beta if KL < d_targ / 1.5, double it if > 1.5 d_targ."""
    return kl_beta / 2 if kl < kl_target / 1.5 else kl_beta * 2 if kl > kl_target * 1.5 else kl_beta

def train(args: Args, given: Optional[set] = None) -> dict:
    """Trains, goes on training (--resume) or evaluates (--load-model); returns what happened. given: the
    flags named on the command line (by default: those that differ from their defaults)."""
    run = start_run(args, given)  # torchrun, flags, run directory, seeds, logs; with --resume, the checkpoint
    args, device = run.args, run.device
    rng = np.random.default_rng(np.random.SeedSequence(args.seed, spawn_key=(run.rank,) if run.rank else ()))
    envs = make_envs(args, run.name, run.rank, run.world_size)
    state = restart_episodes(envs, args, args.seed + run.rank * envs.num_envs)  # N processes: one's seeds
    nvec = action_nvec(envs.single_action_space)  # [n] for Discrete(n)
    agent = Agent(state.obs.shape[1], nvec, args.hidden_sizes, args.activation, args.shared_body).to(device)
    optimizer = torch.optim.Adam(agent.parameters(), lr=args.learning_rate, eps=1e-5, fused=True)
    policy, loss_fn = (torch.compile(agent), torch.compile(ppo_loss)) if args.compile else (agent, ppo_loss)
    if run.checkpoint:
        restore_checkpoint(run, agent, optimizer, rng, envs, state)
    num_iterations = run.iteration if args.load_model else args.total_timesteps // run.batch_size
    received, stopping, snapshot = [], [], None  # the stop signals this process got, the one that stops all
    previous_handlers = catch_stop_signals(received)
    try:
        for iteration in range(run.iteration + 1, num_iterations + 1):
            if args.anneal_lr:
                optimizer.param_groups[0]["lr"] = linear_decay(iteration, num_iterations, args.learning_rate)
            clip_coef = linear_decay(iteration, num_iterations, args.clip_coef) if args.anneal_clip \
                else args.clip_coef
            ent_coef = decayed_ent_coef(iteration, args)

            # 1. Rollout
            rollout, finished = collect_rollout(envs, policy, state, args, rng, device)
            run.global_step += run.batch_size

            # 2. Advantages
            advantages, returns = compute_gae(rollout.rewards, rollout.values, rollout.dones,
                                              rollout.next_value, args.gamma, args.gae_lambda)

            # 3. Update
            batch = make_batch(rollout, advantages, returns, device)
            stats = update(agent, optimizer, batch, args, rng, loss_fn, clip_coef, ent_coef, run.kl_beta)
            if args.objective == "kl-adaptive":  # the exact KL of the whole update sets the next beta
                with torch.no_grad():
                    new_log_probs = masked_log_probs(agent(batch.obs)[0], batch.masks)
                stats["kl"] = mean_over_ranks_(categorical_kl(batch.log_probs, new_log_probs).mean()).item()

            # 4. Log; checkpoint every checkpoint_every steps and on a stop signal
            stats["explained_variance"] = explained_variance(rollout.values, returns)
            log_iteration(run, agent, finished, stats, optimizer.param_groups[0]["lr"], clip_coef, ent_coef)
            if args.objective == "kl-adaptive":
                run.kl_beta = adapted_kl_beta(run.kl_beta, stats["kl"], args.kl_target)
            run.iteration = iteration
            # what a checkpoint holds, and the signals of every process: one to any process stops all
            snapshot, stopping = checkpoint_data(run, agent, optimizer, rng, envs, state, received[:1])
            every = args.checkpoint_every
            crossed = every > 0 and run.global_step // every > (run.global_step - run.batch_size) // every
            if stopping or (crossed and iteration < num_iterations):
                write_checkpoint(run, snapshot, "checkpoint.pt")
            if args.save_model and iteration == num_iterations:  # the saved model is the last checkpoint
                write_checkpoint(run, snapshot, f"{args.exp_name}.model")
            if stopping:
                break
    except (Exception, KeyboardInterrupt) as error:  # an env or an edit that raises, Ctrl-C twice
        stopped_by(run, error, snapshot)
        raise
    finally:
        for signum, handler in previous_handlers.items():
            signal.signal(signum, handler)
        envs.close()
        with logs_may_fail(run):  # an error or Ctrl-C keeps every point logged so far
            run.writer.flush()
    return finish_run(run, stopping, agent, state)  # evaluate, close the logs


# ======================================== Operational parts ========================================
# Input checks, torchrun, checkpoints and resume, logging, evaluation, saving and loading, main().

def fail(message: str, code: int = 2):
    """One line on stderr (rank 0's under torchrun), then the exit code (2: bad input; say what to change)."""
    if os.environ.get("RANK", "0") == "0":
        print(f"error: {message}", file=sys.stderr)
    raise SystemExit(code)

def check_args(args: Args, world_size: int = 1):
    rules = [("a positive integer", lambda value: value > 0,
              ["total_timesteps", "num_envs", "num_steps", "num_minibatches", "update_epochs"]),
             ("in [0, 1]", lambda value: 0 <= value <= 1, ["gamma", "gae_lambda"]),
             ("> 0", lambda value: value > 0,
              ["learning_rate", "clip_coef", "max_grad_norm", "kl_target", "clip_obs", "clip_reward"]),
             (">= 0", lambda value: value >= 0,
              ["kl_beta", "ent_coef", "ent_coef_min", "vf_coef", "eval_episodes", "torch_threads",
               "checkpoint_every", "noop_max"]),
             ("in (0, 1]", lambda value: 0 < value <= 1, ["ent_coef_decay"]),
             (f"at most {os.cpu_count()}, the cores here", lambda value: value <= os.cpu_count(),
              ["torch_threads"]),
             ("at most 4096 per process", lambda value: value <= 4096 * world_size, ["num_envs"]),
             ("in [0, 2**32)", lambda value: 0 <= value < 2**32, ["seed"]),
             ("> 0 (or left out)", lambda value: value is None or value > 0, ["target_kl"]),
             ("one or more positive integers", lambda sizes: sizes and min(sizes) > 0, ["hidden_sizes"])]
    for name, value in vars(args).items():  # nan and inf would pass some of the rules below
        if isinstance(value, float) and not math.isfinite(value):
            fail(f"--{name.replace('_', '-')} must be a finite number, got {value}")
    for rule, holds, names in rules:
        for name in names:
            if hasattr(args, name) and not holds(getattr(args, name)):
                fail(f"--{name.replace('_', '-')} must be {rule}, got {getattr(args, name)}")
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")  # bytes
    sizes = getattr(args, "hidden_sizes", ())
    needs = [("--num-envs * --num-steps", 100 * args.num_envs * args.num_steps),  # over 100 bytes a step
             ("--hidden-sizes", 56 * sum(a * b for a, b in zip(sizes, sizes[1:])))]  # 2 MLPs: 14 floats each
    for flags, needed in needs:
        if needed > memory:
            fail(f"{flags} would need over {needed / 2**30:.0f} GiB; this machine has {memory / 2**30:.0f}")
    if args.ent_coef_min > args.ent_coef:
        fail(f"--ent-coef-min {args.ent_coef_min} > --ent-coef {args.ent_coef}: the floor must be lower")
    if not args.exp_name or os.sep in args.exp_name:
        fail(f"--exp-name must be a non-empty name without {os.sep!r}, got {args.exp_name!r}")
    if args.export_onnx and not all(map(importlib.util.find_spec, ["onnx", "onnxscript"])):
        fail("--export-onnx needs onnx and onnxscript: pip install onnx onnxscript, or drop --export-onnx")
    if args.load_model is not None and args.resume is not None:
        fail("--load-model evaluates a saved model and --resume continues a training: give one of them")
    process_batch = args.num_envs * args.num_steps // world_size  # each torchrun process's share
    if args.num_envs % world_size != 0:
        fail(f"--num-envs {args.num_envs} does not split evenly over {world_size} torchrun processes")
    if process_batch % args.num_minibatches != 0:
        fail(f"--num-minibatches {args.num_minibatches} does not divide the batch of {process_batch} samples"
             f"{' per process' if world_size > 1 else ''} (num_envs * num_steps); pick a divisor")
    if args.norm_adv and process_batch // args.num_minibatches < 2:
        fail("minibatches of 1 sample cannot normalize advantages: lower --num-minibatches or --no-norm-adv")
    if args.total_timesteps < args.num_envs * args.num_steps:
        fail(f"--total-timesteps {args.total_timesteps} is smaller than one batch of num_envs * num_steps = "
             f"{args.num_envs * args.num_steps}; raise it or shrink the batch")

def check_spaces(env_id: str, observation_space: gym.Space, action_space: gym.Space):
    actions = f"{env_id} has {action_space} actions; ppo_discrete.py takes"
    if isinstance(action_space, gym.spaces.Box):
        fail(f"{actions} discrete ones: use ppo_continuous.py")
    discrete = isinstance(action_space, (gym.spaces.Discrete, gym.spaces.MultiDiscrete))
    if not discrete or action_space.shape[1:]:
        fail(f"{actions} Discrete or MultiDiscrete (a vector) ones; no script here takes others")
    is_dict = isinstance(observation_space, gym.spaces.Dict)
    if is_dict and all(isinstance(value, gym.spaces.Box) for value in observation_space.values()):
        return
    if is_dict or not isinstance(observation_space, gym.spaces.Box) or len(observation_space.shape) != 1:
        hint = ": use ppo_atari.py for pixels" if len(observation_space.shape or ()) == 3 else ""
        fail(f"{env_id} has {observation_space} observations; ppo_discrete.py takes a flat Box vector or a "
             f"Dict of Box arrays{hint}")

def check_video_support():
    try:
        import moviepy  # noqa: F401  (RecordVideo writes MP4s with it)
    except ImportError:
        fail("--capture-video needs moviepy: pip install moviepy, or drop --capture-video")
    os.environ.setdefault("SDL_VIDEODRIVER", "dummy")  # render off-screen, no display needed
    os.environ.setdefault("MUJOCO_GL", "egl")  # MuJoCo's headless OpenGL

def action_nvec(action_space: gym.Space) -> list[int]:
    """The number of actions of each component: [n] for Discrete(n), nvec for MultiDiscrete."""
    return [int(action_space.n)] if isinstance(action_space, gym.spaces.Discrete) else list(action_space.nvec)

def env_actions(actions: np.ndarray, action_space: gym.Space) -> np.ndarray:
    """Each env's (components,) action indices as the env takes them (a number for Discrete; plus start)."""
    return actions[..., 0] + action_space.start if isinstance(action_space, gym.spaces.Discrete) \
        else actions + action_space.start

def observation_and_mask(obs, info: dict, layout: np.ndarray, needs_mask: bool = False):
    """The observation as float32, and info["action_mask"] placed by legal_actions (None if it has none)."""
    if needs_mask and "action_mask" not in info:
        fail("the env gave an action mask at reset but not after a step: give one with every observation")
    if "action_mask" not in info:
        return np.asarray(obs, dtype=np.float32), None
    mask = legal_actions(np.asarray(info["action_mask"], dtype=bool), layout)
    if not mask.any(-1).all():
        fail("the env's action mask leaves an action component with no legal action: allow at least one")
    return np.asarray(obs, dtype=np.float32), mask

def legal_actions(flags, layout):
    """The env's action_mask, the flags of the sum(nvec) actions (..., sum(nvec)), placed as action_layout
    says: (..., components, max(nvec)), False where a component has fewer actions. Arrays or tensors."""
    return flags[..., layout.clip(max=flags.shape[-1] - 1)] & (layout < flags.shape[-1])

def explained_variance(predicted: np.ndarray, target: np.ndarray) -> float:
    """1 - Var(target - predicted) / Var(target); nan when the target is constant."""
    target_variance = np.var(target)
    return np.nan if target_variance == 0 else float(1 - np.var(target - predicted) / target_variance)

@dataclass
class Run:
    """This process's flags, place under torchrun, directory, logs, checkpoint, and the counters it saves."""
    args: Args
    rank: int
    world_size: int
    device: torch.device
    dir: str
    checkpoint: Optional[dict] = None
    name: str = ""
    batch_size: int = 0  # num_envs * num_steps, over all processes
    writer: object = None  # TensorBoard's SummaryWriter on rank 0
    kl_beta: float = 0.0
    global_step: int = 0
    iteration: int = 0  # the last one done
    recent_returns: deque = field(default_factory=lambda: deque(maxlen=100))
    start: tuple = field(default_factory=lambda: (0, time.time()))  # the step and time this process began
    last_print: float = 0.0

def start_run(args: Args, given: Optional[set]) -> Run:
    """torchrun's group; the checkpoint and flags (--resume, --load-model); checks; run dir, logs, seeds."""
    world_size, use_cuda = int(os.environ.get("WORLD_SIZE", "1")), args.cuda and torch.cuda.is_available()
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0"))) if use_cuda else torch.device("cpu")
    if world_size > 1:  # under torchrun: NCCL between GPUs, gloo between CPUs
        if use_cuda:
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if use_cuda else "gloo")
    rank = dist.get_rank() if world_size > 1 else 0
    if args.load_model and world_size > 1:
        fail(f"--load-model evaluates in one process: run it with python {os.path.basename(__file__)}")
    flag, path = ("--resume", args.resume) if args.resume else ("--load-model", args.load_model)
    checkpoint = path and gather_from_ranks([load_data_file(path, flag) if rank == 0 else None])[0]
    if checkpoint:
        args = resumed_args(args, checkpoint, given)
        args.eval_episodes = args.eval_episodes or (10 if args.load_model else 0)
        if args.resume and len(checkpoint["ranks"]) != world_size:
            fail(f"--resume {args.resume!r} was written by {len(checkpoint['ranks'])} process(es): "
                 f"resume it with as many (torchrun --nproc_per_node), not {world_size}")
    check_args(args, world_size)
    if args.resume and not os.access(os.path.dirname(os.path.abspath(args.resume)), os.W_OK):
        fail(f"--resume goes on in the checkpoint's directory, which is not writable: make it so, or copy it")
    name = f"{args.env_id.replace('/', '-')}__{args.exp_name}{'-eval' * bool(args.load_model)}__{args.seed}"
    run_dir = os.path.dirname(os.path.abspath(args.resume)) if args.resume else \
        gather_from_ranks([new_run_dir(f"{name}__{int(time.time())}") if rank == 0 else None])[0]
    run = Run(args, rank, world_size, device, run_dir, checkpoint or None, os.path.basename(run_dir),
              args.num_envs * args.num_steps, kl_beta=args.kl_beta)
    run.writer = start_logging(run) if rank == 0 else NO_LOGS
    random.seed(args.seed)  # the same on every rank: the same initial network
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    torch.backends.cudnn.deterministic = args.torch_deterministic
    if args.torch_threads > 0:
        torch.set_num_threads(args.torch_threads)
    return run

def new_run_dir(name: str) -> str:
    """Creates runs/{name}; a second run started in the same second gets a suffix, never the same dir."""
    for suffix in range(1, 1000):
        path = os.path.join("runs", name if suffix == 1 else f"{name}_{suffix}")
        try:
            os.makedirs(path)
            return path
        except FileExistsError:
            continue
        except OSError as error:
            fail(f"cannot create the directory {path}: {error.strerror}; run from a writable directory")

def catch_stop_signals(received: list) -> dict:
    """Ctrl-C and SIGTERM append to received (a second Ctrl-C stops at once); returns the old handlers."""

    def handle(signum, frame):
        if received and signum == signal.SIGINT:
            raise KeyboardInterrupt
        received.append(signum)
        print(f"\n{signal.Signals(signum).name}: stopping after this iteration (Ctrl-C again: at once)",
              file=sys.stderr)

    if threading.current_thread() is not threading.main_thread():
        return {}
    return {signum: signal.signal(signum, handle) for signum in (signal.SIGINT, signal.SIGTERM)}

def checkpoint_data(run: Run, agent: nn.Module, optimizer, rng: np.random.Generator, envs, state,
                    signals: list) -> tuple[Optional[dict], list]:
    """A copy of all the run needs to go on from the iteration just done, with every process's generators,
    envs and episodes (on rank 0; None on the others), and every process's stop signals: one gather."""
    own = dict(generator=rng.bit_generator.state, torch=torch.get_rng_state(), envs=env_states(envs),
               state=state, signals=signals)  # state copied once, below, with everything else
    ranks = gather_from_ranks([own])
    signals = [signum for process in ranks for signum in process.pop("signals")]
    counters = {name: getattr(run, name) for name in ["global_step", "iteration", "kl_beta"]}
    data = dict(format=CHECKPOINT_FORMAT, args=vars(run.args), counters=counters, ranks=ranks,
                recent_returns=list(run.recent_returns), agent=agent.state_dict(),
                optimizer=optimizer.state_dict(), spaces=env_spaces(envs))
    return None if run.rank else as_data(data), signals

def write_checkpoint(run: Run, data: Optional[dict], name: str):
    """Rank 0 writes data into a synced temporary file renamed over the old: a kill leaves one whole."""
    if run.rank != 0:
        return
    with logs_may_fail(run):  # every point up to the checkpoint is on disk before it
        run.writer.flush()
    path = os.path.join(run.dir, name)
    try:
        with open(f"{path}.tmp", "wb") as f:
            torch.save(data, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(f"{path}.tmp", path)
    except OSError as error:  # a full disk, a read-only one: stop, keeping the last whole checkpoint
        with contextlib.suppress(OSError):
            os.remove(f"{path}.tmp")
        fail(f"cannot write {path} ({error.strerror or error}); stopped, {last_checkpoint(run)}", 1)

def stopped_by(run: Run, error: BaseException, snapshot: Optional[dict]):
    """An error or a second Ctrl-C in the loop: rank 0 writes the checkpoint of the last iteration done
    (when checkpoints are on); says where the run stands."""
    if snapshot and run.args.checkpoint_every:
        write_checkpoint(run, snapshot, "checkpoint.pt")
    print(f"{type(error).__name__} at step {run.global_step:,}: the logs keep every point so far, "
          f"{last_checkpoint(run)}", file=sys.stderr)

def restore_checkpoint(run: Run, agent: nn.Module, optimizer, rng: np.random.Generator, envs, state):
    """Everything as at the end of the checkpoint's iteration (--load-model: the agent and its statistics);
    a part that does not fit this run is a one-line error."""
    try:
        for kind, saved, now in zip(["observation", "action"], run.checkpoint["spaces"], env_spaces(envs)):
            if saved != now:  # a Dict's keys, their order and shapes too
                raise ValueError(f"the env's {kind} space is not the saved run's: {now} for {saved}")
        agent.load_state_dict(run.checkpoint["agent"])
        own = run.checkpoint["ranks"][run.rank]  # this process's generators, envs and running episodes
        if run.args.load_model:
            return restore_data(state, {name: x for name, x in own["state"].items() if name.endswith("_rms")})
        optimizer.load_state_dict(run.checkpoint["optimizer"])
        for parameter in agent.parameters():  # the optimizer's state must fit the parameters it belongs to
            for value in optimizer.state[parameter].values():
                if value.dim() and value.shape != parameter.shape:
                    raise ValueError(f"optimizer state {tuple(value.shape)} for {tuple(parameter.shape)}")
        rng.bit_generator.state = own["generator"]
        torch.set_rng_state(own["torch"])
        restore_data(state, own["state"])
        if own["envs"] is not None:
            restore_env_states(envs, own["envs"])
    except (KeyError, IndexError, TypeError, ValueError, RuntimeError, AttributeError) as error:
        fail(f"{run.args.resume or run.args.load_model!r} does not fit this run: {type(error).__name__}: "
             f"{str(error).splitlines()[0][:200]}")
    vars(run).update(run.checkpoint["counters"])
    run.start = (run.global_step, time.time())
    run.recent_returns.extend(run.checkpoint["recent_returns"])
    saved_envs = own["envs"] is not None
    if not saved_envs:  # the envs' state could not be saved: new episodes
        restart_episodes(envs, run.args, run.args.seed + run.rank * envs.num_envs + run.global_step, state)
    if run.rank == 0:
        note = "" if saved_envs else f"; {run.args.env_id} cannot save its state: new episodes start"
        print(f"resuming {run.name} at step {run.global_step:,} (iteration {run.iteration + 1}){note}")

def env_spaces(envs) -> list[str]:
    """The observation and action spaces of the env itself (before any wrapper), as text."""
    env = envs.envs[0].unwrapped
    return [str(env.observation_space), str(env.action_space)]

def as_data(value):
    """A copy of value that a checkpoint can hold: numpy arrays as tensors, dataclasses as dicts; the tensors,
    dicts and lists in it copied too (the run goes on changing the originals)."""
    if is_dataclass(value):
        value = vars(value)
    if isinstance(value, dict):
        return {key: as_data(item) for key, item in value.items()}
    if isinstance(value, list):
        return [as_data(item) for item in value]
    if isinstance(value, torch.Tensor):
        return value.clone()
    return torch.from_numpy(np.array(value)) if isinstance(value, (np.ndarray, np.generic)) else value

def restore_data(target, saved: dict):
    """The inverse of as_data, into the dataclass target."""
    for name, value in saved.items():
        if isinstance(value, dict):
            restore_data(getattr(target, name), value)
        else:
            setattr(target, name, value.numpy() if isinstance(value, torch.Tensor) else value)

def env_states(envs: gym.vector.SyncVectorEnv) -> Optional[list[dict]]:
    """Each env's generator, time-limit counter and `state` array, for gymnasium's own classic-control envs
    (known by their class); None if one is any other env, whose whole state the script cannot know."""
    if not all(type(env.unwrapped) in (CartPoleEnv, AcrobotEnv, MountainCarEnv) for env in envs.envs):
        return None
    return [dict(physics=torch.from_numpy(env.unwrapped.state.copy()),
                 random=env.unwrapped.np_random.bit_generator.state,
                 steps_beyond_terminated=getattr(env.unwrapped, "steps_beyond_terminated", None),
                 elapsed_steps=env.get_wrapper_attr("_elapsed_steps")
                 if env.has_wrapper_attr("_elapsed_steps") else None) for env in envs.envs]

def restore_env_states(envs: gym.vector.SyncVectorEnv, states: list[dict]):
    for env, state in zip(envs.envs, states):
        env.unwrapped.state = state["physics"].numpy()
        env.unwrapped.np_random.bit_generator.state = state["random"]
        if isinstance(env.unwrapped, CartPoleEnv):
            env.unwrapped.steps_beyond_terminated = state["steps_beyond_terminated"]
        if state["elapsed_steps"] is not None:
            env.set_wrapper_attr("_elapsed_steps", state["elapsed_steps"])

def load_data_file(path: str, flag: str) -> dict:
    """A checkpoint or model, its records' checksums verified, read with weights_only=True (never code);
    a damaged or foreign file is a one-line error."""
    if not os.path.isfile(path):
        fail(f"{flag} {path!r}: no such file")
    try:
        with zipfile.ZipFile(path) as archive:
            damaged = archive.testzip()  # the first record whose CRC-32 does not match, if any
        if damaged:
            raise ValueError(f"{damaged} fails its checksum")
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # truncated, corrupt, or holding objects other than tensors and plain data
        fail(f"{flag} {path!r} is not a readable checkpoint or model ({type(error).__name__}: "
             f"{str(error).splitlines()[0][:200]})")
    if not isinstance(saved, dict) or saved.get("format") != CHECKPOINT_FORMAT:
        found = saved.get("format") if isinstance(saved, dict) else type(saved).__name__
        fail(f"{flag} {path!r} is not a {os.path.basename(__file__)} checkpoint or model (format {found!r})")
    parts = dict(args=dict, counters=dict, ranks=list, recent_returns=list, agent=dict, optimizer=dict,
                 spaces=list)
    for name, kind in parts.items():
        if not isinstance(saved.get(name), kind):
            fail(f"{flag} {path!r} is damaged: its {name!r} is missing or not a {kind.__name__}")
    return saved

def resumed_args(args: Args, checkpoint: dict, given: Optional[set] = None) -> Args:
    """The checkpoint's flags; a given flag that differs is an error, but for those of --load-model's
    evaluation."""
    saved = checkpoint["args"]
    own = ["resume", "export_onnx"] if args.resume else ["load_model", "eval_episodes", "eval_greedy",
                                                         "capture_video", "seed", "exp_name", "track", "cuda",
                                                         "wandb_project_name", "wandb_entity", "save_model",
                                                         "export_onnx"]
    if given is None:
        given = {key for key, value in vars(args).items() if value != getattr(Args, key, None)}
    for key in sorted(given - set(own)):
        if getattr(args, key) != saved.get(key):
            fail(f"{'--resume continues' if args.resume else '--load-model evaluates'} the saved run with "
                 f"its own flags: drop --{key.replace('_', '-')} (saved: {saved.get(key)!r})")
    try:
        return Args(**{**saved, **{key: getattr(args, key) for key in own}})
    except TypeError as error:
        fail(f"{args.resume or args.load_model!r} holds flags this script does not know ({error})")

def mean_over_ranks_(tensor: torch.Tensor) -> torch.Tensor:
    """Under torchrun: replaces tensor, in place, by its mean over all processes. Without: as it is."""
    if dist.is_initialized():
        dist.all_reduce(tensor)
        tensor /= dist.get_world_size()
    return tensor

def gather_from_ranks(items: list) -> list:
    """The items of every process, rank 0's first (an all-gather under torchrun; items itself without)."""
    if not dist.is_initialized():
        return items
    per_rank = [None] * dist.get_world_size()
    dist.all_gather_object(per_rank, items)
    return [item for rank_items in per_rank for item in rank_items]

def start_logging(run: Run):
    """TensorBoard (W&B too with --track); a resumed run drops the points logged after its checkpoint."""
    args, config = run.args, {**vars(run.args), "processes": run.world_size}
    if args.track:
        try:
            import wandb
        except ImportError:
            fail("--track needs wandb: pip install wandb, or drop --track")
        wandb.init(project=args.wandb_project_name, entity=args.wandb_entity, sync_tensorboard=True,
                   config=config, name=run.name, monitor_gym=True, save_code=True, dir=run.dir)
    from torch.utils.tensorboard import SummaryWriter

    purge_step = run.checkpoint and run.checkpoint["counters"]["global_step"] + 1
    writer = SummaryWriter(run.dir, purge_step=purge_step)
    table = "\n".join(f"|{key}|{value}|" for key, value in config.items())
    writer.add_text("hyperparameters", f"|param|value|\n|-|-|\n{table}")
    return writer

NO_LOGS = SimpleNamespace(add_scalar=lambda *args: None, flush=lambda: None, close=lambda: None)  # rank > 0

@contextlib.contextmanager
def logs_may_fail(run: Run):
    """Runs the block's log writes; if the disk refuses them (full, read-only), says so once and goes on
    training without logs."""
    try:
        yield
    except OSError as error:
        print(f"warning: cannot write the logs in {run.dir} ({error.strerror or error}); the run goes on "
              f"without", file=sys.stderr)
        run.writer = NO_LOGS

def last_checkpoint(run: Run) -> str:
    path = os.path.join(run.dir, "checkpoint.pt")
    return f"the last good checkpoint is {path}" if os.path.exists(path) else "no checkpoint was written"

def log_iteration(run: Run, agent: nn.Module, finished: list, stats: dict, learning_rate: float,
                  clip_coef: float, ent_coef: float):
    """Stops (exit 3) on a nan or inf (all processes alike: they share them); logs every process's ended
    episodes (each at its step), the losses and schedules; prints the progress now and then."""
    bad = [f"{name} ({stats[name]})" for name in ["policy_loss", "value_loss", "entropy", "grad_norm"]
           if not math.isfinite(stats[name])] + ["a network parameter" for p in agent.parameters()
                                                 if not torch.isfinite(p).all()]
    if bad:
        fail(f"{bad[0]} went non-finite in the update ending at step {run.global_step:,}; stopped, "
             f"{last_checkpoint(run)}", 3)
    step, episodes = run.global_step, sorted(gather_from_ranks(finished), key=lambda episode: episode[0])
    run.recent_returns.extend(float(episode_return) for _, _, episode_return, _ in episodes)
    sps = int((step - run.start[0]) / (time.time() - run.start[1]))
    with logs_may_fail(run):
        for end, _, episode_return, length in episodes:
            end = step - run.batch_size + (end + 1) * run.args.num_envs  # the global step it ended at
            run.writer.add_scalar("charts/episodic_return", float(episode_return), end)
            run.writer.add_scalar("charts/episodic_length", int(length), end)
        for name, value in stats.items():
            if name != "gradient_steps":
                run.writer.add_scalar(f"losses/{name}", value, step)
        for name, value in [("learning_rate", learning_rate), ("clip_coef", clip_coef),
                            ("ent_coef", ent_coef), ("kl_beta", run.kl_beta), ("SPS", sps)]:
            run.writer.add_scalar(f"charts/{name}", value, step)
    last = step + run.batch_size > run.args.total_timesteps  # the last iteration
    if run.rank == 0 and (time.time() - run.last_print > 10 or last):
        run.last_print, returns = time.time(), run.recent_returns
        print(f"step {step:,} of {run.args.total_timesteps:,}, {sps:,} steps/s, mean return of the last "
              f"{len(returns)} episodes: {np.mean(returns) if returns else float('nan'):.2f}", flush=True)

def finish_run(run: Run, stopping: list, agent: nn.Module, state) -> dict:
    """Evaluates and exports the agent, or says how to continue a stopped run; closes the logs and the
    process group; returns the run's summary."""
    last = run.args.total_timesteps // run.batch_size  # train() writes the model at the last iteration
    saved = run.args.save_model and not run.args.load_model and run.iteration == last
    model_path, eval_returns = os.path.join(run.dir, f"{run.args.exp_name}.model") if saved else None, []
    if run.rank == 0:
        if model_path:
            print(f"model saved to {model_path}")
        if stopping:
            launcher = "python" if run.world_size == 1 else f"torchrun --nproc_per_node {run.world_size} ..."
            script, checkpoint = os.path.basename(__file__), os.path.join(run.dir, "checkpoint.pt")
            print(f"stopped at step {run.global_step:,}; continue with: {launcher} {script} --resume "
                  f"{checkpoint}", file=sys.stderr)
        eval_returns = evaluate(run, agent, state) if run.args.eval_episodes and not stopping else []
        if run.args.export_onnx and not stopping:
            export_onnx(run, agent, state)
        with logs_may_fail(run):
            run.writer.close()
        if run.args.track:
            import wandb

            wandb.finish()
    if run.world_size > 1:
        dist.destroy_process_group()
    stopped = signal.Signals(stopping[0]) if stopping else None
    return dict(agent=agent, model_path=model_path, eval_returns=eval_returns, run_dir=run.dir,
                recent_returns=list(run.recent_returns), stopped=stopped)

def evaluate(run: Run, agent: Agent, state: EnvState) -> list[float]:
    """Plays eval_episodes whole episodes in a fresh env (recorded with --capture-video); their returns."""
    args, video_dir = run.args, f"videos/{run.name}-eval" if run.args.capture_video else None
    if video_dir:
        check_video_support()
    env, rng, returns = make_env(args.env_id, video_dir, True)(), np.random.default_rng(args.seed), []
    layout = action_layout(action_nvec(env.action_space))
    for episode in range(args.eval_episodes):
        (obs, info), done = env.reset(seed=args.seed + 100_000 + episode), False
        returns.append(0.0)
        while not done:
            obs, mask = observation_and_mask(obs, info, layout)
            with torch.inference_mode():
                logits = agent(torch.as_tensor(obs, device=run.device)[None])[0][0]  # (components, max(nvec))
                logits = mask_logits(logits, mask).cpu().numpy()
            actions = np.argmax(logits, axis=-1) if args.eval_greedy else sample_actions(logits, rng)
            obs, reward, terminated, truncated, info = env.step(env_actions(actions, env.action_space))
            returns[-1], done = returns[-1] + float(reward), terminated or truncated
        with logs_may_fail(run):
            run.writer.add_scalar("eval/episodic_return", returns[-1], episode)
    env.close()
    print(f"eval ({'greedy' if args.eval_greedy else 'sampled'}, {len(returns)} episodes): mean return "
          f"{np.mean(returns):.2f} +- {np.std(returns):.2f}" + (f", videos in {video_dir}" * bool(video_dir)))
    return returns

class GreedyPolicy(nn.Module):
    """Greedy evaluation's choice as one module: observations (batch, obs_dim) float32 (a Dict's values
    flattened as in training), and where the env gives masks its action_mask (batch, sum(nvec)) bool ->
    actions: (batch,) for Discrete, (batch, components) for MultiDiscrete, as the env takes them."""

    def __init__(self, agent: Agent, action_space: gym.Space):
        super().__init__()
        self.agent, self.discrete = agent, isinstance(action_space, gym.spaces.Discrete)
        self.register_buffer("start", torch.as_tensor(action_space.start))

    def forward(self, obs: torch.Tensor, action_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        legal = None if action_mask is None else legal_actions(action_mask, self.agent.layout)
        actions = mask_logits(self.agent(obs)[0], legal).argmax(-1) + self.start
        return actions[:, 0] if self.discrete else actions

def export_onnx(run: Run, agent: Agent, state: EnvState):
    """--export-onnx: the greedy policy, with an action_mask input where the env gives masks."""
    env = make_env(run.args.env_id)()
    action_space = env.action_space
    env.close()
    inputs = (torch.as_tensor(state.obs[[0, 0]]).cpu(),)
    if state.mask is not None:
        inputs += (torch.ones(2, sum(action_nvec(action_space)), dtype=torch.bool),)
    write_onnx(run, GreedyPolicy(agent, action_space), inputs, ["obs", "action_mask"][:len(inputs)])

def write_onnx(run: Run, policy: nn.Module, inputs: tuple, names: list[str]):
    """Exports policy(*inputs) to --export-onnx as one graph whose batch size is free."""
    batch = torch.export.Dim("batch")
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)  # the exporter's notes on what it does not use
    with warnings.catch_warnings(action="ignore"):
        torch.onnx.export(policy.cpu().eval(), inputs, run.args.export_onnx, input_names=names,
                          output_names=["action"], dynamic_shapes=[{0: batch}] * len(inputs), dynamo=True,
                          verbose=False)
    print(f"greedy policy exported to {run.args.export_onnx}: inputs {', '.join(names)}, output action")

def main():
    signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl-C raises KeyboardInterrupt again
    try:
        named = {arg[2:].split("=")[0].replace("-", "_") for arg in sys.argv[1:] if arg.startswith("--")}
        given = {name for name in named | {name[3:] for name in named} if name in Args.__dataclass_fields__}
        summary = train(tyro.cli(Args), given)
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        raise SystemExit(130) from None
    if summary["stopped"]:
        raise SystemExit(128 + summary["stopped"])  # 130 for Ctrl-C, 143 for SIGTERM

if __name__ == "__main__":
    main()
