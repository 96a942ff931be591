"""PPO for Atari from pixels (Breakout, Pong, ...) in one file; flags and defaults as CleanRL's ppo_atari.py.
The envs run in CleanRL's Atari wrappers, in CleanRL's order (FIRE after every lost life, too).
charts/episodic_return is the raw score of a whole game. The algorithm comes first, in its order, down to
train(); the harness (checks, run directory, logs, checkpoints and resume, torchrun's process group, stop
signals, evaluation, export) follows the line "Operational parts", and train() reaches it through one object,
the Run.
Under torchrun, each of N processes steps num_envs/N envs; the update averages their gradients.

    python ppo_atari.py                                            # ALE/Breakout-v5, 10M steps, logs to runs/
    python ppo_atari.py --env-id ALE/SpaceInvaders-v5 --help        # every flag, with its meaning
    python ppo_atari.py --load-model runs/RUN/ppo_atari.model --eval-episodes 3 --capture-video
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
import multiprocessing
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

import ale_py
import gymnasium as gym
import numpy as np
import torch
import torch._dynamo  # noqa: F401  (torch.optim imports it: imported after torchrun starts, it outlives it)
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
import tyro
from stable_baselines3.common.atari_wrappers import EpisodicLifeEnv, FireResetEnv  # CleanRL's own

CHECKPOINT_FORMAT = "ppo_atari/5"  # written into every checkpoint and saved model, checked on load
NETWORK_FLAGS = ["precision"]  # the flags that shape the Agent
# Ctrl-C, kill, and where the system has it (not Windows) SIGHUP: the terminal was closed
STOP_SIGNALS = [getattr(signal, name) for name in ["SIGINT", "SIGTERM", "SIGHUP"] if hasattr(signal, name)]
MAX_FRAMES_PER_GAME = 108_000  # 30 minutes of play: the standard time limit, reached as a truncation

@dataclass
class Args:
    exp_name: str = os.path.basename(__file__)[: -len(".py")]
    """the name of this experiment (part of the run name)"""
    seed: int = 1
    """seed of the experiment (python, numpy, torch and the envs)"""
    torch_deterministic: bool = True
    """if toggled, CUDA runs are deterministic, as CPU runs are (a warning names an op that cannot be)"""
    tf32: bool = False
    """if toggled, CUDA float32 matmuls and convolutions may run in TF32 (faster on Ampere+)"""
    cuda: bool = True
    """if toggled, trains on the GPU, one a process under torchrun (none usable: the CPU, with a note)"""
    compile: bool = False
    """if toggled, runs the agent and the loss through torch.compile (compiling takes a while at the start)"""
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    """the CNN trunk's arithmetic (bf16: under autocast, the rest float32); auto: bf16 on GPUs from sm_80"""
    track: bool = False
    """if toggled, logs the run to Weights and Biases (WANDB_MODE=offline works without network)"""
    wandb_project_name: str = "cleanRL"
    """the Weights and Biases project name"""
    wandb_entity: Optional[str] = None
    """the Weights and Biases entity (team)"""
    capture_video: bool = False
    """if toggled, records MP4s of whole games in videos/{run_name}/ (evaluation's: {run_name}-eval/)"""

    env_id: str = "ALE/Breakout-v5"
    """the Atari game (ALE/Breakout-v5 or BreakoutNoFrameskip-v4: the same); the flags set the protocol"""
    env_kwargs: dict[str, Union[bool, int, float, None, str]] = field(default_factory=dict)
    """more arguments of the game (gym.make's), as names and values: --env-kwargs mode 4 difficulty 1"""
    total_timesteps: int = 10000000
    """total environment steps of the training, summed over all envs, in whole batches (rounded down)"""
    learning_rate: float = 2.5e-4
    """the learning rate of the optimizer"""
    num_envs: int = 8
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
    clip_coef: float = 0.1
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

    sticky_actions: bool = False
    """if toggled, repeats the previous action with probability 0.25 (ALE v5's protocol); off in CleanRL"""
    async_envs: Literal["auto", "on", "off"] = "auto"
    """steps the envs in worker processes (AsyncVectorEnv); auto: where each env and learner has a core"""
    noop_max: int = 30
    """1 to this many no-op frames (0: none) at the start of each game"""
    episodic_life: bool = True
    """if toggled, a lost life ends the training episode (no bootstrapping across it) but not the game"""
    clip_rewards: bool = True
    """if toggled, trains on the sign of each reward; logged returns stay the raw game scores"""
    bootstrap_truncation: bool = True
    """if toggled, the 108,000-frame truncation bootstraps from V(final obs); off: a termination (CleanRL)"""
    torch_threads: int = 0
    """CPU threads for torch (0: one per core)"""
    save_model: bool = False
    """if toggled, saves the trained agent to `runs/{run_name}/{exp_name}.model`"""
    eval_episodes: int = 0
    """evaluates this many games after training (--load-model: 10 unless named); eval/episodic_return"""
    eval_greedy: bool = False
    """if toggled, evaluation takes the most likely action; by default it samples (greedy ones can stall)"""
    export_onnx: Optional[str] = None
    """after training (or with --load-model), writes the greedy policy to this path as one ONNX graph"""
    load_model: Optional[str] = None
    """path of a saved model: evaluates it (and records it with --capture-video) without training"""
    checkpoint_every: int = 100_000
    """every this many steps (and when stopped), saves runs/{run_name}/checkpoint.pt, atomically; 0: never"""
    resume: Optional[str] = None
    """path of a checkpoint.pt: continues that run with its own flags, logs and run directory (new games)"""

class EnvError(Exception):
    """An env gave something the algorithm cannot use: the run stops with this one line (exit 2)."""

def make_env(args: Args, video_dir: Optional[str] = None):
    """A thunk for one Atari env (args.env_id, made with args.env_kwargs) in CleanRL's wrappers and order: the
    raw score of each whole game in info["episode"]; 1 to noop_max no-op frames at a game's start, frame skip
    4 (the max of the last two frames), 84x84 grayscale; a lost life ends the episode but not the game; FIRE
    and action 2 after each reset; the last 4 frames, the first repeated at an episode's start. With
    video_dir, records games."""

    def thunk():
        if multiprocessing.parent_process() is not None:  # in an env worker: the learner takes stop signals
            for signum in STOP_SIGNALS:
                signal.signal(signum, signal.SIG_IGN)
        env = gym.make(args.env_id, frameskip=1, full_action_space=False,
                       repeat_action_probability=0.25 if args.sticky_actions else 0.0,
                       max_num_frames_per_episode=MAX_FRAMES_PER_GAME,
                       render_mode="rgb_array" if video_dir else None, **args.env_kwargs)
        if video_dir is not None:
            env = gym.wrappers.RecordVideo(env, video_dir, episode_trigger=lambda game: True)
        env = gym.wrappers.RecordEpisodeStatistics(env)
        env = gym.wrappers.AtariPreprocessing(env, noop_max=args.noop_max, frame_skip=4, screen_size=84)
        env = EpisodicLifeEnv(env) if args.episodic_life else env
        env = FireResetEnv(env) if "FIRE" in env.unwrapped.get_action_meanings() else env
        return gym.wrappers.FrameStackObservation(env, 4, padding_type="reset")

    return thunk

def make_envs(args: Args, video_dir: Optional[str] = None) -> gym.vector.VectorEnv:
    """This process's num_envs/processes envs (torchrun's WORLD_SIZE processes; 1 without) in one vector env
    (SAME_STEP autoreset): (num_envs, 4, 84, 84) uint8 observations. With video_dir, the first records.
    --async-envs: each in a worker process."""
    processes = int(os.environ.get("WORLD_SIZE", "1"))
    video_dirs = [video_dir] + [None] * (args.num_envs // processes - 1)
    thunks = [make_env(args, video) for video in video_dirs]
    cores_for_all = os.cpu_count() >= args.num_envs + processes
    if args.async_envs == "on" or (args.async_envs == "auto" and cores_for_all):
        return EnvWorkers(thunks, autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    return gym.vector.SyncVectorEnv(thunks, autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)

class EnvWorkers(gym.vector.AsyncVectorEnv):
    """gymnasium's AsyncVectorEnv, whose worker's error stops the run in one line (EnvError) instead of its
    traceback printed by gymnasium and the error raised again."""

    def _raise_if_errors(self, successes):
        failed = [self.error_queue.get() for success in successes if not success]
        for index, *_ in failed:  # as gymnasium does: a failed worker is gone
            self.parent_pipes[index].close()
            self.parent_pipes[index] = None
        if failed:
            self._state = gym.vector.async_vector_env.AsyncState.DEFAULT
            index, kind, value, _ = min(failed, key=lambda error: error[0])
            raise EnvError(f"env {index} failed in its worker process: {kind.__name__}: {value}")

def layer_init(layer: nn.Module, gain: float = np.sqrt(2), bias: float = 0.0) -> nn.Module:
    nn.init.orthogonal_(layer.weight, gain)
    nn.init.constant_(layer.bias, bias)
    return layer

class Agent(nn.Module):
    """The Nature-DQN CNN trunk, shared by a policy head and a value head; pixels scaled to [0, 1]."""

    def __init__(self, n_actions: int, bf16: bool = False):
        super().__init__()
        self.bf16 = bf16  # the trunk under bfloat16 autocast
        self.trunk = nn.Sequential(
            layer_init(nn.Conv2d(4, 32, 8, stride=4)), nn.ReLU(),
            layer_init(nn.Conv2d(32, 64, 4, stride=2)), nn.ReLU(),
            layer_init(nn.Conv2d(64, 64, 3, stride=1)), nn.ReLU(),
            nn.Flatten(),
            layer_init(nn.Linear(64 * 7 * 7, 512)), nn.ReLU(),
        )
        self.actor_head = layer_init(nn.Linear(512, n_actions), gain=0.01)
        self.critic_head = layer_init(nn.Linear(512, 1), gain=1.0)

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(batch, 4, 84, 84) uint8 -> logits (batch, n_actions), values (batch,)"""
        # channels-last (NHWC) is the layout oneDNN's CPU convolutions run fastest on: ~1.4x for this CNN
        pixels = obs.contiguous(memory_format=torch.channels_last).float() / 255.0
        with torch.autocast(pixels.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            features = self.trunk(pixels)
        features = features.float()  # the heads in float32: log-probs precise enough for the ratio
        return self.actor_head(features), self.critic_head(features).squeeze(-1)

def use_bf16(precision: str, device: torch.device) -> bool:
    """Whether --precision runs the trunk in bfloat16 on this device."""
    if precision == "auto":  # not on CPUs: oneDNN's bf16 weight gradient spins in a barrier on shared cores
        return device.type == "cuda" and torch.cuda.get_device_capability(device) >= (8, 0)  # bf16 convs
    return precision == "bf16"

def make_agent(args: Args, action_space: gym.Space, device: torch.device) -> Agent:
    agent = Agent(int(action_space.n), use_bf16(args.precision, device))
    return agent.to(device, memory_format=torch.channels_last)

@dataclass
class EnvState:
    """What one rollout hands to the next in this process."""
    obs: np.ndarray  # (num_envs, 4, 84, 84) uint8

class Episode(NamedTuple):
    """An episode that ended during a rollout, at step `step` of env `env`."""
    step: int
    env: int
    episode_return: float
    length: int

class Rollout(NamedTuple):
    """num_steps steps of every env: (num_steps, num_envs, ...) arrays."""
    obs: np.ndarray
    actions: np.ndarray
    logits: torch.Tensor  # (num_steps, num_envs, n_actions): the policy that acted
    values: np.ndarray
    rewards: np.ndarray  # clipped; a truncated step's reward holds + gamma * V(final obs)
    dones: np.ndarray  # a lost life too, with episodic life
    next_value: np.ndarray  # (num_envs,) V of the observation after the last step

class Batch(NamedTuple):
    """A rollout flattened to (num_steps * num_envs, ...) tensors, with its advantages, for the update."""
    obs: torch.Tensor
    actions: torch.Tensor
    policy_log_probs: torch.Tensor  # (batch, n_actions) log pi_old of every action, for the exact KL
    logprobs: torch.Tensor  # (batch,) log pi_old of the action taken
    values: torch.Tensor
    advantages: torch.Tensor
    returns: torch.Tensor

    def take(self, index) -> "Batch":
        """The samples at index (a permutation or a slice), in every field."""
        return Batch(*(tensor[index] for tensor in self))

def restart_episodes(envs, args: Args, seed: int, state: Optional[EnvState] = None) -> EnvState:
    """Resets the envs to new games, into state or a new EnvState."""
    obs, _ = envs.reset(seed=seed)
    state = state or EnvState(obs)
    state.obs = obs
    return state

def sample_actions(logits: torch.Tensor, rng: np.random.Generator) -> np.ndarray:
    """One sample of softmax(logits) over the last axis (Gumbel-max): (..., n_actions) -> (...)."""
    return np.argmax(logits.cpu().numpy() + rng.gumbel(size=tuple(logits.shape)), axis=-1)

def collect_rollout(envs, agent: nn.Module, state: EnvState, args: Args, rng: np.random.Generator,
                    device: torch.device) -> tuple[Rollout, list[Episode]]:
    """Runs the policy num_steps steps in every env, updating state. Returns the rollout and the games that
    ended, as (step, env, raw score, length in frames). Rewards are clipped to their sign for training."""
    num_steps = args.num_steps
    num_envs = envs.num_envs
    obs = np.empty((num_steps, *state.obs.shape), dtype=np.uint8)  # (num_steps, num_envs, 4, 84, 84)
    actions = np.empty((num_steps, num_envs), dtype=np.int64)
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
            actions[step] = sample_actions(step_logits, rng)
            state.obs, reward, terminated, truncated, info = envs.step(actions[step])
            rewards[step] = np.sign(reward) if args.clip_rewards else reward
            dones[step] = terminated | truncated  # with episodic life, a lost life terminates
            games = info.get("final_info", {})  # the steps of the envs that ended an episode
            for env in np.flatnonzero(games.get("_episode", [])):  # the whole game ended
                finished.append(Episode(step, env, games["episode"]["r"][env], games["episode"]["l"][env]))
            if args.bootstrap_truncation:
                for env in np.flatnonzero(truncated & ~terminated):
                    truncated_at.append((step, env))
                    final_obs.append(info["final_obs"][env])
        # V(next obs), and V(final obs) of the truncated games, in one forward pass
        final_obs = np.array(final_obs, dtype=np.uint8).reshape(-1, *state.obs.shape[1:])
        _, bootstrap = agent(torch.as_tensor(np.concatenate([state.obs, final_obs]), device=device))
    if not np.isfinite(rewards).all():  # before V(final obs) joins them
        raise EnvError("the env gave a reward that is nan or inf: fix the env")
    bootstrap = bootstrap.cpu().numpy()
    for (step, env), final_value in zip(truncated_at, bootstrap[num_envs:]):
        rewards[step, env] += args.gamma * final_value
    values = torch.stack(values).cpu().numpy()
    return Rollout(obs, actions, torch.stack(logits), values, rewards, dones, bootstrap[:num_envs]), finished

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

    actions = flat(rollout.actions)
    policy_log_probs = F.log_softmax(rollout.logits.flatten(0, 1), dim=-1)
    logprobs = policy_log_probs.gather(1, actions[:, None]).squeeze(1)
    return Batch(flat(rollout.obs), actions, policy_log_probs, logprobs, flat(rollout.values),
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
    log_probs = F.log_softmax(logits, dim=-1)
    new_logprob = log_probs.gather(1, minibatch.actions[:, None]).squeeze(1)
    entropy = -(log_probs.exp() * log_probs).sum(-1).mean()
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
    """The exact KL[pi_old || pi] of the whole update, averaged over the batch (and the processes)."""
    with torch.no_grad():
        new_log_probs = F.log_softmax(agent(batch.obs)[0], dim=-1)
    return mean_over_processes(categorical_kl(batch.policy_log_probs, new_log_probs).mean()).item()

def mean_over_processes(tensor: torch.Tensor) -> torch.Tensor:
    """Under torchrun: replaces tensor, in place, by its mean over all processes. Without: as it is."""
    if dist.is_initialized():
        dist.all_reduce(tensor)
        tensor /= dist.get_world_size()
    return tensor

def average_gradients(agent: nn.Module):
    """Under torchrun: each parameter's gradient becomes its mean over the processes (one all-reduce)."""
    if not dist.is_initialized():
        return
    parameters = list(agent.parameters())
    grads = mean_over_processes(torch.cat([parameter.grad.flatten() for parameter in parameters]))
    for parameter, grad in zip(parameters, grads.split([parameter.numel() for parameter in parameters])):
        parameter.grad.copy_(grad.view_as(parameter))

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
            if args.target_kl is not None:  # the approximate KL (estimator k3) of all processes
                if mean_over_processes(((logratio.exp() - 1) - logratio).mean()) > args.target_kl:
                    break  # over the target: no step on this minibatch, nor on any later one
            optimizer.zero_grad()
            loss.backward()
            average_gradients(agent)
            grad_norms.append(nn.utils.clip_grad_norm_(agent.parameters(), args.max_grad_norm))
            optimizer.step()
        else:
            continue
        break  # target_kl reached: stop the whole update, not just this epoch
    logratio = torch.stack(logratios)  # (minibatches, minibatch_size)
    ratio = logratio.exp()
    stats = {name: total / len(logratios) for name, total in totals.items()}
    stats.update(old_approx_kl=(-logratio).mean(), approx_kl=((ratio - 1) - logratio).mean(),
                 clipfrac=((ratio - 1.0).abs() > schedule.clip_coef).float().mean(),
                 grad_norm=torch.stack(grad_norms).mean() if grad_norms else logratio.new_zeros(()))
    means = mean_over_processes(torch.stack(list(stats.values()))).tolist()  # one all-reduce for them all
    return dict(zip(stats, means), gradient_steps=len(grad_norms))

def training_device(args: Args) -> torch.device:
    """With --cuda where torch can use a GPU, this torchrun process's GPU (LOCAL_RANK; 0 without torchrun),
    else the CPU."""
    if args.cuda and torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")

def train(args: Args, given: Optional[set] = None) -> dict:
    """Trains (or, with --resume, goes on training); returns what happened. given: the flags named on the
    command line (by default: those that differ from their defaults)."""
    with Run.start(args, given) as run:
        args = run.args
        device = training_device(args)
        rank = dist.get_rank() if dist.is_initialized() else 0  # this torchrun process's number
        rng = np.random.default_rng(np.random.SeedSequence(args.seed, spawn_key=(rank,) if rank else ()))
        envs = make_envs(args, run.video_dir)
        state = restart_episodes(envs, args, args.seed + rank * envs.num_envs)
        agent = make_agent(args, envs.single_action_space, device)
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
            batch = make_batch(rollout, advantages, returns, device)
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

class Failed(SystemExit):
    """The exit of fail(), whose line is printed already."""

def fail(message: str, code: int = 2):
    """One line on stderr (rank 0's under torchrun), then the exit code (2: bad input; say what to change)."""
    if os.environ.get("RANK", "0") == "0":
        print(f"error: {message}", file=sys.stderr)
    raise Failed(code)

NO_LOGS = SimpleNamespace(add_scalar=lambda *args: None, flush=lambda: None, close=lambda: None)  # rank > 0

class Run:
    """One process's harness: its flags (with --resume or --load-model, the file's), place under torchrun,
    directory, logs, checkpoints and stop signals. Around the training loop (`with Run.start(args) as run:`),
    Ctrl-C and SIGTERM stop the run after the iteration (a signal to one process stops all), and an error
    keeps the checkpoint of the last iteration done."""

    def __init__(self, args: Args, checkpoint: Optional[dict], run_dir: str, device: torch.device, rank: int,
                 world_size: int, spaces: list[str]):
        self.args = args
        self.checkpoint = checkpoint
        self.dir = run_dir
        self.name = os.path.basename(run_dir)
        self.device = device
        self.rank = rank
        self.world_size = world_size
        self.spaces = spaces  # the env's own, which saved files hold and a loaded file must match
        self.lock = None  # rank 0's, on the run directory
        self.video_dir = None  # training's videos; evaluation's go to video_dir + "-eval"
        if args.capture_video and rank == 0:
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
        """Joins torchrun's process group; checks the flags (with --resume or --load-model: the file and its
        flags) and the env; makes the run directory, opens the logs, sets the seeds."""
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        device = run_device(args, given)
        if world_size > 1:  # under torchrun: NCCL between GPUs, one process each; gloo between CPUs
            if device.type == "cuda":
                if int(os.environ["LOCAL_WORLD_SIZE"]) > torch.cuda.device_count():
                    fail(f"torchrun starts {os.environ['LOCAL_WORLD_SIZE']} processes on a node with "
                         f"{torch.cuda.device_count()} GPU(s): NCCL takes one GPU a process; start as many "
                         "(--nproc_per_node), or train on the CPUs with --no-cuda")
                torch.cuda.set_device(device)
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        rank = dist.get_rank() if world_size > 1 else 0
        if args.load_model and world_size > 1:
            fail(f"--load-model evaluates in one process: run it with python {os.path.basename(__file__)}")
        checkpoint = None
        if args.resume or args.load_model:
            checkpoint = gather_from_ranks([load_data_file(args) if rank == 0 else None])[0]
            args = resumed_args(args, checkpoint, given)
            check_saved(args, checkpoint)
            if args.resume and len(checkpoint["ranks"]) != world_size:
                fail(f"--resume {args.resume!r} was written by {len(checkpoint['ranks'])} process(es): "
                     f"resume it with as many (torchrun --nproc_per_node), not {world_size}")
        check_args(args, world_size)
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
            name = f"{re.sub('[/:]', '-', args.env_id)}__{args.exp_name}{suffix}__{args.seed}"
            run_dir = gather_from_ranks([new_run_dir(name) if rank == 0 else None])[0]
        run = cls(args, checkpoint, run_dir, device, rank, world_size, spaces)
        if rank == 0:
            run.lock = lock_run_dir(run_dir)
            run.writer = start_logging(run)
        random.seed(args.seed)  # the same on every rank: the same initial network
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
        if error is not None and self.lock:  # the run directory is free again, for --resume
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
        own = saved["ranks"][self.rank]  # this process's generators
        self.load_agent(agent)
        check_optimizer(self.path, saved["optimizer"], optimizer)
        try:
            optimizer.load_state_dict(saved["optimizer"]["state_dict"])
            for parameter in agent.parameters():  # the optimizer's state must fit its parameters
                for value in optimizer.state[parameter].values():
                    if value.dim() and value.shape != parameter.shape:
                        raise ValueError(f"optimizer state {tuple(value.shape)} for {tuple(parameter.shape)}")
            rng.bit_generator.state = own["generator"]
            torch.set_rng_state(own["torch"])
        except (KeyError, IndexError, TypeError, ValueError, RuntimeError, AttributeError) as error:
            fail(f"{self.path!r} does not fit this run: {type(error).__name__}: {first_line(error)}")
        self.start_step = self.global_step
        self.start_time = time.time()
        self.recent_returns.extend(saved["recent_returns"])
        seed = self.args.seed + self.rank * envs.num_envs + self.global_step
        restart_episodes(envs, self.args, seed, state)
        if self.rank == 0:  # the emulators' state is not saved: new games
            print(f"resuming {self.name} at step {self.global_step:,} (iteration {self.iteration + 1}); "
                  f"{self.args.env_id} cannot save its state: new episodes start")
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
        self.snapshot, signals = self.checkpoint_data()
        stopping = bool(signals)
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
        finished = sorted(gather_from_ranks(finished), key=lambda episode: episode.step)  # every process's
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
        if self.rank == 0 and (time.time() - self.last_print > 10 or self.iteration == self.num_iterations):
            self.last_print = time.time()
            ended = "no episode has ended yet"
            if self.recent_returns:
                count = len(self.recent_returns)
                ended = f"mean return of the last {count} episodes: {np.mean(self.recent_returns):.2f}"
            trained = self.num_iterations * self.batch_size  # --total-timesteps in whole batches
            print(f"step {step:,} of {trained:,}, {sps:,} steps/s, {ended}", flush=True)

    def checkpoint_data(self) -> tuple[Optional[dict], list]:
        """A copy of all the run needs to go on from the iteration just done, with every process's generators
        (on rank 0; None on the others), and every process's stop signals: one gather."""
        own = dict(generator=self.rng.bit_generator.state, torch=torch.get_rng_state(),
                   signals=self.received[:1])
        ranks = gather_from_ranks([own])
        signals = [signum for process in ranks for signum in process.pop("signals")]
        counters = dict(global_step=self.global_step, iteration=self.iteration, kl_beta=self.kl_beta)
        optimizer = dict(kind=type(self.optimizer).__name__, state_dict=self.optimizer.state_dict())
        data = dict(format=CHECKPOINT_FORMAT, args=vars(self.args), counters=counters, ranks=ranks,
                    recent_returns=list(self.recent_returns), agent=self.agent.state_dict(),
                    optimizer=optimizer, spaces=self.spaces, wandb_id=self.wandb_id)
        return None if self.rank else as_data(data), signals

    def write(self, data: dict, name: str):
        """Rank 0 writes data into a synced temporary file renamed over the old: a kill leaves one whole."""
        if self.rank != 0:
            return
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
            if self.rank == 0:
                print(f"model saved to {model_path}")
        launcher = "python" if self.world_size == 1 else f"torchrun --nproc_per_node {self.world_size} ..."
        if stopped and self.rank == 0:
            checkpoint = os.path.join(self.dir, "checkpoint.pt")
            script = os.path.basename(__file__)
            then = f"continue with: {launcher} {script} --resume {checkpoint}"
            if self.iteration == self.num_iterations:  # the evaluation and export were left: --load-model
                then = f"the training is done; evaluate with: python {script} --load-model {checkpoint}"
            print(f"stopped at step {self.global_step:,}; {then}", file=sys.stderr)
        elif self.rank == 0:
            with self:  # a stop signal ends the evaluation after its game, and is said
                if args.eval_episodes:
                    eval_returns = evaluate(self, self.agent, self.state)
                if args.export_onnx and not self.received:
                    export_onnx(self, self.agent, self.state)
            if self.received:
                stopped = signal.Signals(self.received[0])
                print(f"{stopped.name}: stopped after {len(eval_returns)} evaluation games", file=sys.stderr)
        with self.logs_may_fail():
            self.writer.close()
        if self.lock:
            self.lock.close()
        if args.track and self.rank == 0:
            import wandb

            send_videos(self)
            wandb.finish()
        if self.world_size > 1:
            dist.destroy_process_group()
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
    trunk = "bf16" if use_bf16(args.precision, run.device) else "fp32"
    config = {**vars(args), "processes": run.world_size, "device": str(run.device), "trunk": trunk}
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
    parts = dict(args=dict, counters=dict, ranks=list, recent_returns=list, agent=dict, optimizer=dict,
                 spaces=list)
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
    loss read, (num_envs, actions) and (num_envs,) (outputs after them are the user's): an edit of the network
    that breaks them (a value head left (batch, 1)) is a one-line error, not a silent broadcast."""
    agent.eval()  # batch norm's statistics left as they are, no dropout's random draw
    try:
        with torch.inference_mode():
            outputs = agent(torch.as_tensor(obs, device=device))
    except Exception:  # a forward pass that fails is left to the rollout, whose traceback shows where
        return
    finally:
        agent.train()
    shapes = [tuple(output.shape) for output in outputs[:2]]
    wanted = [(envs.num_envs, int(envs.single_action_space.n)), (envs.num_envs,)]
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

def gather_from_ranks(items: list) -> list:
    """The items of every process, rank 0's first (an all-gather under torchrun; items itself without)."""
    if not dist.is_initialized():
        return items
    per_rank = [None] * dist.get_world_size()
    dist.all_gather_object(per_rank, items)
    return [item for rank_items in per_rank for item in rank_items]

def check_memory(flags: str, needed: int, purpose: str = ""):
    """A size this machine's memory cannot hold (needed, in bytes) is refused before it is built (where os
    tells the memory's size: not on Windows)."""
    if not hasattr(os, "sysconf"):
        return
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    if needed > memory:
        fail(f"{flags} would need over {needed / 2**30:.0f} GiB{purpose}; this machine has "
             f"{memory / 2**30:.0f}")

def check_args(args: Args, world_size: int = 1):
    rules = [("a positive integer", lambda value: value > 0,
              ["total_timesteps", "num_envs", "num_steps", "num_minibatches", "update_epochs"]),
             ("in [0, 1]", lambda value: 0 <= value <= 1, ["gamma", "gae_lambda"]),
             ("> 0", lambda value: value > 0, ["learning_rate", "clip_coef", "max_grad_norm", "kl_target"]),
             (">= 0", lambda value: value >= 0,
              ["kl_beta", "ent_coef", "ent_coef_min", "vf_coef", "eval_episodes", "torch_threads",
               "checkpoint_every", "noop_max"]),
             ("in (0, 1]", lambda value: 0 < value <= 1, ["ent_coef_decay"]),
             ("at most 4096 per process", lambda value: value <= 4096 * world_size, ["num_envs"]),
             ("in [0, 2**32)", lambda value: 0 <= value < 2**32, ["seed"]),
             ("> 0 (or left out)", lambda value: value is None or value > 0, ["target_kl"])]
    for name, value in vars(args).items():  # nan and inf would pass some of the rules below
        if isinstance(value, float) and not math.isfinite(value):
            fail(f"{flag_name(name)} must be a finite number, got {value}")
    for rule, holds, names in rules:
        for name in names:
            if not holds(getattr(args, name)):
                fail(f"{flag_name(name)} must be {rule}, got {getattr(args, name)}")
    frames = 2 * 4 * 84 * 84 + 100  # a step's bytes: its frames and their shuffled copy
    check_memory("--num-envs * --num-steps", frames * args.num_envs * args.num_steps)
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

def check_atari_id(env_id: str):
    """A one-line error unless env_id names an ALE game ("ALE/Breakout-v5", "BreakoutNoFrameskip-v4")."""
    gym.register_envs(ale_py)
    try:
        spec = gym.spec(env_id)
    except gym.error.Error as error:
        fail(f"cannot make --env-id {env_id!r}: {first_line(error, 2)} (Atari: ALE/Breakout-v5, ...)")
    if not str(spec.entry_point).startswith("ale_py"):
        fail(f"{env_id} is not an Atari game: use ppo_discrete.py or ppo_continuous.py, which take vector "
             f"(not image) observations")

def check_env(args: Args) -> list[str]:
    """Makes one env and resets it: a game that cannot be made is a one-line error. Returns its spaces."""
    check_atari_id(args.env_id)
    try:
        env = make_env(args)()
        env.reset(seed=args.seed)
    except Exception as error:  # a ROM that fails to load, ...
        fail(f"cannot make --env-id {args.env_id!r}: {type(error).__name__}: {first_line(error)}")
    env.close()
    return [str(env.unwrapped.observation_space), str(env.unwrapped.action_space)]  # before wrappers

def evaluate(run: Run, agent: Agent, state: EnvState) -> list[float]:
    """Plays eval_episodes whole games in a fresh env with the training's protocol (recorded with
    --capture-video); logs, prints and returns their raw scores."""
    args = run.args
    agent.eval()  # dropout off, batch norm from its running statistics
    video_dir = f"{run.video_dir}-eval" if args.capture_video else None
    env = make_env(args, video_dir)()
    rng = np.random.default_rng(args.seed)
    returns = []
    obs, _ = env.reset(seed=args.seed + 100_000)
    while len(returns) < args.eval_episodes:
        with torch.inference_mode():
            logits = agent(torch.as_tensor(np.asarray(obs)[None], device=run.device))[0]
        action = int(logits.argmax(-1)[0] if args.eval_greedy else sample_actions(logits, rng)[0])
        obs, _, terminated, truncated, info = env.step(action)
        if "episode" in info:  # the game is over
            returns.append(float(info["episode"]["r"]))
            with run.logs_may_fail():
                run.writer.add_scalar("eval/episodic_return", returns[-1], len(returns) - 1)
            print(f"eval game {len(returns)} of {args.eval_episodes}: score {returns[-1]:.0f}", flush=True)
            if run.received:  # a stop signal: the games done are kept
                break
        if (terminated or truncated) and len(returns) < args.eval_episodes:  # a lost life, or a game over
            obs, _ = env.reset()
    env.close()
    print(f"eval ({'greedy' if args.eval_greedy else 'sampled'}, {len(returns)} games): mean return "
          f"{np.mean(returns):.2f} +- {np.std(returns):.2f}" + (f", videos in {video_dir}" * bool(video_dir)))
    return returns

class GreedyPolicy(nn.Module):
    """Greedy play as one module: the preprocessed stack (batch, 4, 84, 84) uint8 that the wrappers give,
    not the raw screen -> actions (batch,) int64. The trunk runs in float32."""

    def __init__(self, agent: Agent):
        super().__init__()
        self.agent = agent

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.agent(obs)[0].argmax(-1)

def export_onnx(run: Run, agent: Agent, state: Optional[EnvState] = None):
    """--export-onnx: the greedy policy on preprocessed stacks of 4 frames, its trunk in float32."""
    agent.bf16 = False
    obs, _ = make_env(run.args)().reset(seed=run.args.seed)
    write_onnx(run, GreedyPolicy(agent), (torch.as_tensor(np.asarray(obs)[None].repeat(2, 0)),), ["obs"])

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
    """--load-model: evaluates the saved agent with its Atari protocol (and exports it with --export-onnx),
    without training."""
    run = Run.start(args, given)
    env = make_env(run.args)()
    agent = make_agent(run.args, env.action_space, run.device)
    run.load_agent(agent)
    env.close()
    return run.finish()

def main():
    signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl-C raises KeyboardInterrupt again
    try:
        named = {arg[2:].split("=")[0].replace("-", "_") for arg in sys.argv[1:] if arg.startswith("--")}
        given = {name for name in named | {name[3:] for name in named} if name in Args.__dataclass_fields__}
        args = tyro.cli(Args)
        summary = evaluate_saved_model(args, given) if args.load_model else train(args, given)
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        raise SystemExit(130) from None
    if summary["stopped"]:
        raise SystemExit(128 + summary["stopped"])  # 130 for Ctrl-C, 143 for SIGTERM

if __name__ == "__main__":
    main()
