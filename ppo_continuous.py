"""PPO for continuous actions (MuJoCo HalfCheetah, Hopper, Walker2d, Ant, Humanoid, Pendulum, ...), in one file.

    python ppo_continuous.py                                  # HalfCheetah-v5, logs to runs/
    python ppo_continuous.py --env-id Hopper-v5 --help         # every flag, with its meaning
    python ppo_continuous.py --load-model runs/RUN/ppo_continuous.model --eval-episodes 5 --capture-video

The algorithm box: set up envs, networks and running normalization statistics; then each iteration
(1) roll out num_steps in num_envs envs with a Gaussian policy, (2) compute GAE advantages, (3) run
update_epochs of minibatch updates on the clipped surrogate + clipped value loss - entropy bonus,
(4) log to TensorBoard. Flag names and defaults are CleanRL's ppo_continuous_action.py (MuJoCo v5 env).
Observations are normalized and rewards scaled by running statistics shared by all envs, frozen for
evaluation, and saved with the model.
Under `torchrun --nproc_per_node N ppo_continuous.py ...` each process steps num_envs/N of the envs, the
gradient of every minibatch is averaged over the processes and so are the normalization statistics after each
rollout: the flags keep meaning the global totals.
"""

import math
import os
import random
import signal
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Literal, Optional

import gymnasium as gym
import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
import tyro

MODEL_FORMAT = "ppo_continuous/1"  # written into every saved model, checked on load
CHECKPOINT_FORMAT = "ppo_continuous/checkpoint/2"


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
    track: bool = False
    """if toggled, logs the run to Weights and Biases (WANDB_MODE=offline works without network)"""
    wandb_project_name: str = "cleanRL"
    """the Weights and Biases project name"""
    wandb_entity: Optional[str] = None
    """the Weights and Biases entity (team)"""
    capture_video: bool = False
    """if toggled, records MP4 videos of episodes 0, 250, 500, ... under `videos/{run_name}/` (MUJOCO_GL=egl)"""

    env_id: str = "HalfCheetah-v5"
    """the id of the gymnasium environment (Box observations, Box actions)"""
    total_timesteps: int = 1000000
    """total environment steps of the training, summed over all envs"""
    learning_rate: float = 3e-4
    """the learning rate of the Adam optimizer"""
    num_envs: int = 1
    """the number of parallel environments in all (under torchrun, each of the N processes steps num_envs/N)"""
    num_steps: int = 2048
    """the number of steps run in each environment per rollout (batch = num_envs * num_steps, over all processes)"""
    anneal_lr: bool = True
    """if toggled, the learning rate decays linearly to 0 over the training"""
    gamma: float = 0.99
    """the discount factor gamma"""
    gae_lambda: float = 0.95
    """the lambda of generalized advantage estimation"""
    num_minibatches: int = 32
    """the number of minibatches each batch is split into (must divide the batch; under torchrun, each process
    computes the gradient of its 1/N share of every minibatch, and the N gradients are averaged)"""
    update_epochs: int = 10
    """the number of passes over the batch in each policy update"""
    norm_adv: bool = True
    """if toggled, normalizes advantages within each minibatch (under torchrun: within each process's share)"""
    clip_coef: float = 0.2
    """the surrogate clipping coefficient epsilon (also clips the value loss)"""
    clip_vloss: bool = True
    """if toggled, uses the clipped value loss of the PPO paper's code"""
    ent_coef: float = 0.0
    """the coefficient of the entropy bonus"""
    vf_coef: float = 0.5
    """the coefficient of the value loss"""
    max_grad_norm: float = 0.5
    """the maximum global norm of the gradient"""
    target_kl: Optional[float] = None
    """if set, the update stops at the first minibatch whose approximate KL exceeds it"""

    objective: Literal["clip", "kl-adaptive", "kl-fixed", "none", "ppog"] = "clip"
    """the policy objective (PPO paper, sections 3-4):
    clip: the clipped surrogate; none: the plain surrogate r*A;
    kl-adaptive: r*A - beta*KL[pi_old||pi] (exact KL), beta adapted to --kl-target; kl-fixed: a fixed --kl-beta;
    ppog: A*log(pi) without the samples that the clip stops (seed 001's PPOG)"""
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

    norm_obs: bool = True
    """if toggled, normalizes observations by running mean and variance, then clips them to +-clip_obs"""
    clip_obs: float = 10.0
    """the bound of normalized observations"""
    norm_reward: bool = True
    """if toggled, scales rewards by the running std of the discounted return, then clips them to +-clip_reward"""
    clip_reward: float = 10.0
    """the bound of scaled rewards"""
    bootstrap_truncation: bool = True
    """if toggled, a time-limit truncation bootstraps from V(final obs); --no-bootstrap-truncation
    treats it as a termination, as CleanRL does"""
    hidden_sizes: tuple[int, ...] = (64, 64)
    """the hidden layer sizes of each MLP"""
    activation: Literal["tanh", "relu"] = "tanh"
    """the activation of the hidden layers"""
    torch_threads: int = 1
    """CPU threads for torch (1 is fastest for small networks; 0 keeps torch's default)"""
    save_model: bool = False
    """if toggled, saves the trained agent to `runs/{run_name}/{exp_name}.model`"""
    eval_episodes: int = 0
    """after training (or with --load-model), evaluates this many episodes and logs eval/episodic_return"""
    eval_greedy: bool = True
    """if toggled, evaluation takes the mean action; --no-eval-greedy samples from the policy"""
    load_model: Optional[str] = None
    """path of a saved model: evaluates it (and records it with --capture-video) without training"""
    checkpoint_every: int = 100_000
    """every this many steps (and when the run is stopped), saves all it needs to go on to
    runs/{run_name}/checkpoint.pt, atomically; 0: never"""
    resume: Optional[str] = None
    """path of a checkpoint.pt: continues that run with its own flags, in its own run directory and
    TensorBoard curves; bit for bit on CPU when the envs' state can be saved (MuJoCo, classic control)"""


def fail(message: str):
    """Bad input: one line on stderr saying what to change, exit code 2, no traceback."""
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


def check_args(args: Args, world_size: int = 1):
    positive = ["total_timesteps", "num_envs", "num_steps", "num_minibatches", "update_epochs"]
    for name in positive:
        if getattr(args, name) <= 0:
            fail(f"--{name.replace('_', '-')} must be a positive integer, got {getattr(args, name)}")
    for name in ["gamma", "gae_lambda"]:
        if not 0.0 <= getattr(args, name) <= 1.0:
            fail(f"--{name.replace('_', '-')} must be in [0, 1], got {getattr(args, name)}")
    for name in ["learning_rate", "clip_coef", "max_grad_norm", "clip_obs", "clip_reward"]:
        if not getattr(args, name) > 0:
            fail(f"--{name.replace('_', '-')} must be > 0, got {getattr(args, name)}")
    for name in ["kl_beta", "ent_coef", "ent_coef_min", "vf_coef"]:
        if getattr(args, name) < 0:
            fail(f"--{name.replace('_', '-')} must be >= 0, got {getattr(args, name)}")
    if not args.kl_target > 0:
        fail(f"--kl-target must be > 0, got {args.kl_target}")
    if not 0 < args.ent_coef_decay <= 1:
        fail(f"--ent-coef-decay must be in (0, 1], got {args.ent_coef_decay}")
    if args.ent_coef_min > args.ent_coef:
        fail(f"--ent-coef-min {args.ent_coef_min} is above --ent-coef {args.ent_coef}: the floor must be lower")
    if args.eval_episodes < 0:
        fail(f"--eval-episodes must be >= 0, got {args.eval_episodes}")
    if args.checkpoint_every < 0:
        fail(f"--checkpoint-every must be >= 0 (0: no checkpoints), got {args.checkpoint_every}")
    if not args.hidden_sizes or any(size <= 0 for size in args.hidden_sizes):
        fail(f"--hidden-sizes must be one or more positive integers, got {args.hidden_sizes}")
    if not 0 <= args.seed < 2**32:
        fail(f"--seed must be in [0, 2**32), got {args.seed}")
    if args.torch_threads < 0:
        fail(f"--torch-threads must be >= 0 (0: torch's default), got {args.torch_threads}")
    if args.target_kl is not None and not args.target_kl > 0:
        fail(f"--target-kl must be > 0 (or left out), got {args.target_kl}")
    if not args.exp_name or os.sep in args.exp_name:
        fail(f"--exp-name must be a non-empty name without {os.sep!r}, got {args.exp_name!r}")
    if args.load_model is not None and args.resume is not None:
        fail("--load-model evaluates a saved model and --resume continues a training: give one of them")
    if args.load_model is not None:
        return  # evaluation only: the training sizes do not matter
    if args.num_envs % world_size != 0:
        fail(f"--num-envs {args.num_envs} does not split evenly over {world_size} torchrun processes; "
             f"pick a multiple of {world_size}")
    batch_size = args.num_envs * args.num_steps
    process_batch = batch_size // world_size  # each torchrun process's share; the whole batch without torchrun
    if process_batch % args.num_minibatches != 0:
        batch = f"the batch of num_envs*num_steps = {batch_size}" if world_size == 1 else \
            f"each process's batch of num_envs*num_steps/{world_size} = {process_batch}"
        fail(f"--num-minibatches {args.num_minibatches} does not divide {batch}; pick a divisor of {process_batch}")
    if args.norm_adv and process_batch // args.num_minibatches < 2:
        fail("minibatches of 1 sample cannot normalize advantages: lower --num-minibatches or pass --no-norm-adv")
    if args.total_timesteps < batch_size:
        fail(
            f"--total-timesteps {args.total_timesteps} is smaller than one batch of "
            f"num_envs*num_steps = {batch_size}; raise it or shrink the batch"
        )


def make_env(env_id: str, record_video_to: Optional[str] = None, record_every_episode: bool = False):
    """Returns a thunk for the vector env. With record_video_to, records MP4s of this env."""

    def thunk():
        if record_video_to is None:
            return gym.make(env_id)
        # MuJoCo renders in software here: 240x240 frames cost half of the default 480x480
        size = dict(width=240, height=240) if "mujoco" in str(gym.spec(env_id).entry_point) else {}
        env = gym.make(env_id, render_mode="rgb_array", **size)
        # a 1000-step MuJoCo episode takes tens of seconds to render: record every 250th training episode only
        trigger = (lambda episode: True) if record_every_episode else (lambda episode: episode % 250 == 0)
        return gym.wrappers.RecordVideo(env, record_video_to, episode_trigger=trigger)

    return thunk


def make_envs(args: Args, run_name: str, rank: int = 0, world_size: int = 1) -> gym.vector.SyncVectorEnv:
    """This process's num_envs/world_size envs; rank 0's first one records videos with --capture-video.
    SAME_STEP autoreset: a done step returns the next episode's first observation and the true
    final one in info["final_obs"], so no step of the rollout is a reset step with an ignored action."""
    record = args.capture_video and rank == 0
    if record:
        check_video_support()
    try:
        thunks = [
            make_env(args.env_id, f"videos/{run_name}" if record and i == 0 else None)
            for i in range(args.num_envs // world_size)
        ]
        # copy=False: step returns the envs' own observation buffer, not a deep copy (the rollout is done with
        # it before the next step): HalfCheetah rollout 133 -> 128 us per step
        envs = gym.vector.SyncVectorEnv(thunks, copy=False, autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    except gym.error.Error as error:  # unknown id, missing Box2D, ...
        fail(f"cannot make --env-id {args.env_id!r}: {str(error).splitlines()[0]}")
    check_spaces(args.env_id, envs.single_observation_space, envs.single_action_space)
    return envs


def check_spaces(env_id: str, observation_space: gym.Space, action_space: gym.Space):
    if isinstance(action_space, gym.spaces.Discrete):
        fail(f"{env_id} has {action_space} actions; ppo_continuous.py needs Box actions: use ppo_discrete.py")
    if not isinstance(action_space, gym.spaces.Box) or len(action_space.shape) != 1:
        fail(f"{env_id} has {action_space} actions; ppo_continuous.py needs a Box action vector")
    if not isinstance(observation_space, gym.spaces.Box):
        fail(f"{env_id} has {observation_space} observations; ppo_continuous.py needs a Box observation vector")
    if len(observation_space.shape) != 1:
        fail(f"{env_id} has observations of shape {observation_space.shape}; ppo_continuous.py needs a flat vector")


def check_video_support():
    try:
        import moviepy  # noqa: F401  (RecordVideo writes MP4s with it)
    except ImportError:
        fail("--capture-video needs moviepy: pip install moviepy, or drop --capture-video")
    os.environ.setdefault("SDL_VIDEODRIVER", "dummy")  # render off-screen, no display needed
    os.environ.setdefault("MUJOCO_GL", "egl")  # MuJoCo's headless OpenGL


def layer_init(layer: nn.Linear, gain: float = np.sqrt(2), bias: float = 0.0) -> nn.Linear:
    """Orthogonal weights scaled by gain, constant bias."""
    nn.init.orthogonal_(layer.weight, gain)
    nn.init.constant_(layer.bias, bias)
    return layer


def hidden_layers(sizes: list[int]) -> nn.ModuleList:
    """Linear layers for each consecutive pair of sizes, orthogonal init with gain sqrt(2)."""
    return nn.ModuleList(layer_init(nn.Linear(n_in, n_out)) for n_in, n_out in zip(sizes[:-1], sizes[1:]))


class Agent(nn.Module):
    """Gaussian actor (mean from an MLP, state-independent learned log-std) and a separate critic MLP."""

    def __init__(self, obs_dim: int, action_dim: int, hidden_sizes=(64, 64), activation="tanh"):
        super().__init__()
        sizes = [obs_dim, *hidden_sizes]
        self.activation = {"tanh": torch.tanh, "relu": torch.relu}[activation]
        self.actor_body = hidden_layers(sizes)
        self.critic_body = hidden_layers(sizes)
        self.actor_mean = layer_init(nn.Linear(sizes[-1], action_dim), gain=0.01)
        self.actor_logstd = nn.Parameter(torch.zeros(action_dim))
        self.critic_head = layer_init(nn.Linear(sizes[-1], 1), gain=1.0)

    def features(self, body: nn.ModuleList, x: torch.Tensor) -> torch.Tensor:
        # F.linear on the layers' tensors skips nn.Module call overhead: halves the rollout's forward time
        for layer in body:
            x = self.activation(F.linear(x, layer.weight, layer.bias))
        return x

    def action_mean(self, obs: torch.Tensor) -> torch.Tensor:
        return self.actor_mean(self.features(self.actor_body, obs))

    def value(self, obs: torch.Tensor) -> torch.Tensor:
        return self.critic_head(self.features(self.critic_body, obs)).squeeze(-1)

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(batch, obs_dim) -> action means (batch, action_dim), values (batch,)"""
        return self.action_mean(obs), self.value(obs)


def numpy_policy_mean(agent: Agent):
    """The actor's forward pass in numpy, for the rollout on CPU. It reads the weights through views of
    the torch parameters, so it follows every optimizer step. For one step of a few observations,
    torch's per-call overhead dominates: numpy computes the same numbers 4x faster."""
    layers = [(layer.weight.detach().numpy().T, layer.bias.detach().numpy()) for layer in agent.actor_body]
    head_weight, head_bias = agent.actor_mean.weight.detach().numpy().T, agent.actor_mean.bias.detach().numpy()
    activation = np.tanh if agent.activation is torch.tanh else (lambda x: np.maximum(x, 0.0))

    def mean(obs: np.ndarray) -> np.ndarray:
        for weight, bias in layers:
            obs = activation(obs @ weight + bias)
        return obs @ head_weight + head_bias

    return mean


def gaussian_log_prob(actions: torch.Tensor, mean: torch.Tensor, log_std: torch.Tensor) -> torch.Tensor:
    """log N(actions; mean, exp(log_std)^2), summed over the independent action components: (batch,)."""
    z = (actions - mean) * torch.exp(-log_std)
    return (-0.5 * z.pow(2) - log_std - 0.5 * np.log(2 * np.pi)).sum(-1)


def gaussian_entropy(log_std: torch.Tensor) -> torch.Tensor:
    """Entropy of a diagonal Gaussian: sum over components of 0.5 + 0.5 log(2 pi) + log_std."""
    return (0.5 + 0.5 * np.log(2 * np.pi) + log_std).sum(-1)


def gaussian_kl(old_mean: torch.Tensor, old_log_std: torch.Tensor, mean: torch.Tensor,
                log_std: torch.Tensor) -> torch.Tensor:
    """The exact KL[N(old_mean, old_std^2) || N(mean, std^2)] of each state, summed over the components: (batch,)."""
    variance_ratio = torch.exp(2 * (old_log_std - log_std))
    return (log_std - old_log_std + 0.5 * (variance_ratio + (old_mean - mean).pow(2) * torch.exp(-2 * log_std) - 1)).sum(-1)


def sample_actions(mean: np.ndarray, log_std: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """mean + std * N(0, 1), (num_envs, action_dim). Plain numpy: cheaper per step than torch.distributions."""
    return mean + np.exp(log_std) * rng.standard_normal(mean.shape)


class RunningMeanStd:
    """Running mean and variance of a stream of batches (parallel algorithm of Chan et al.), float64.
    One instance serves every env of the vector."""

    def __init__(self, shape=()):
        self.mean = np.zeros(shape)
        self.var = np.ones(shape)
        self.count = 0

    def update(self, batch: np.ndarray):
        """batch: (n, *shape)"""
        batch_count = batch.shape[0]
        batch_mean = batch.sum(axis=0) / batch_count  # sum-based: half the cost of np.mean/np.var on a few numbers
        batch_var = np.square(batch - batch_mean).sum(axis=0) / batch_count
        total = self.count + batch_count
        delta = batch_mean - self.mean
        self.mean = self.mean + delta * batch_count / total
        self.var = (self.var * self.count + batch_var * batch_count + delta**2 * self.count * batch_count / total) / total
        self.count = total


def merge_over_ranks(rms: RunningMeanStd, start: tuple):
    """Under torchrun: folds the samples that every process added to rms since `start` (the count, mean and var
    that all processes shared) into rms, so that all hold the statistics of all envs. Without torchrun: nothing."""
    if not dist.is_initialized():
        return
    start_count, start_mean, start_var = start
    # this process's new samples as count, sum and sum of squares: the moments of rms less those of start
    added = (rms.count - start_count, rms.mean * rms.count - start_mean * start_count,
             (rms.var + rms.mean**2) * rms.count - (start_var + start_mean**2) * start_count)
    count, total, squares = (sum(moments) for moments in zip(*gather_from_ranks([added])))
    rms.count = start_count + count
    rms.mean = (start_mean * start_count + total) / rms.count
    rms.var = np.maximum(((start_var + start_mean**2) * start_count + squares) / rms.count - rms.mean**2, 0.0)


def normalize_obs(obs: np.ndarray, obs_rms: Optional[RunningMeanStd], clip: float) -> np.ndarray:
    """(obs - mean) / sqrt(var + 1e-8), clipped to +-clip, as float32 (identity when obs_rms is None)."""
    if obs_rms is None:
        return np.asarray(obs, dtype=np.float32)
    return np.clip((obs - obs_rms.mean) / np.sqrt(obs_rms.var + 1e-8), -clip, clip).astype(np.float32)


class RewardScaler:
    """Scales rewards by the running std of each env's discounted return (shared statistics), then clips."""

    def __init__(self, num_envs: int, gamma: float, clip: float):
        self.return_rms = RunningMeanStd()
        self.discounted_return = np.zeros(num_envs)  # (num_envs,)
        self.gamma, self.clip = gamma, clip

    def __call__(self, reward: np.ndarray, done: np.ndarray) -> np.ndarray:
        self.discounted_return = self.discounted_return * self.gamma + reward
        self.return_rms.update(self.discounted_return)
        self.discounted_return[done] = 0.0  # the next episode starts a fresh return
        return np.clip(reward / np.sqrt(self.return_rms.var + 1e-8), -self.clip, self.clip)


def collect_rollout(envs, agent: Agent, obs: np.ndarray, num_steps: int, gamma: float,
                    bootstrap_truncation: bool, rng: np.random.Generator, device: torch.device,
                    episode_returns: np.ndarray, episode_lengths: np.ndarray,
                    obs_rms: Optional[RunningMeanStd], clip_obs: float, reward_scaler: Optional[RewardScaler]):
    """Runs the policy num_steps steps in every env.

    obs is the normalized current observation. Returns (rollout, next_obs, finished) where rollout
    holds numpy arrays of shape (num_steps, num_envs, ...) and a torch tensor of log-probs, and finished
    lists each ended episode as (step_index, env_index, raw_return, length). Observations are
    normalized (updating obs_rms), rewards scaled (updating reward_scaler); the action sent to the env
    is clipped to its bounds while the unclipped sample is stored. Truncated steps get
    reward + gamma * V(final_obs), the final observation normalized like the others, when
    bootstrap_truncation is on, so GAE can treat every done as an episode end.
    episode_returns and episode_lengths (num_envs,) carry the running episodes across rollouts."""
    num_envs = envs.num_envs
    low, high = envs.single_action_space.low, envs.single_action_space.high
    action_dim = low.shape[0]
    observations = np.empty((num_steps, *obs.shape), dtype=np.float32)  # (num_steps, num_envs, obs_dim)
    actions = np.empty((num_steps, num_envs, action_dim), dtype=np.float32)
    rewards = np.empty((num_steps, num_envs), dtype=np.float32)
    dones = np.empty((num_steps, num_envs), dtype=np.float32)
    truncations = []  # (step, env, normalized final_obs) of episodes cut by a time limit
    finished = []
    log_std = agent.actor_logstd.detach().cpu().numpy()
    policy_mean = numpy_policy_mean(agent) if device.type == "cpu" else (
        lambda obs: agent.action_mean(torch.from_numpy(obs).to(device)).cpu().numpy())
    with torch.inference_mode():  # one context for the whole loop, not one per step
        for step in range(num_steps):
            observations[step] = obs
            mean = policy_mean(obs)
            actions[step] = sample_actions(mean, log_std, rng)
            raw_obs, reward, terminated, truncated, info = envs.step(np.clip(actions[step], low, high))
            done = terminated | truncated
            if obs_rms is not None:
                obs_rms.update(raw_obs)
            obs = normalize_obs(raw_obs, obs_rms, clip_obs)
            rewards[step] = reward if reward_scaler is None else reward_scaler(reward, done)
            dones[step] = done
            episode_returns += reward
            episode_lengths += 1
            if done.any():
                for env_index in np.flatnonzero(done):
                    finished.append((step, env_index, episode_returns[env_index], episode_lengths[env_index]))
                    if bootstrap_truncation and truncated[env_index] and not terminated[env_index]:
                        final_obs = normalize_obs(info["final_obs"][env_index], obs_rms, clip_obs)
                        truncations.append((step, env_index, final_obs))
                episode_returns[done] = 0.0
                episode_lengths[done] = 0

    # One batched forward pass scores the whole rollout: log-probs, values, V(next obs), V(final obs).
    final_obs = np.array([o for _, _, o in truncations], dtype=np.float32).reshape(-1, obs.shape[1])
    all_obs = np.concatenate([observations.reshape(-1, obs.shape[1]), obs, final_obs])
    with torch.inference_mode():
        all_means, all_values = agent(torch.from_numpy(all_obs).to(device))
    batch_size = num_steps * num_envs
    flat_actions = torch.from_numpy(actions.reshape(batch_size, action_dim)).to(device)
    means = all_means[:batch_size]  # (batch, action_dim), with log_stds the old policy for the exact KL
    log_stds = agent.actor_logstd.detach().clone().expand(batch_size, -1)
    logprobs = gaussian_log_prob(flat_actions, means, log_stds)
    all_values = all_values.cpu().numpy()
    values = all_values[:batch_size].reshape(num_steps, num_envs)
    next_value = all_values[batch_size : batch_size + num_envs]
    for (step, env_index, _), final_value in zip(truncations, all_values[batch_size + num_envs :]):
        rewards[step, env_index] += gamma * final_value
    rollout = dict(obs=observations, actions=actions, rewards=rewards, dones=dones, values=values,
                   next_value=next_value, logprobs=logprobs, means=means, log_stds=log_stds)
    return rollout, obs, finished


def compute_gae(rewards: np.ndarray, values: np.ndarray, dones: np.ndarray, next_value: np.ndarray,
                gamma: float, gae_lambda: float) -> tuple[np.ndarray, np.ndarray]:
    """Generalized advantage estimation over (num_steps, num_envs) arrays.

    dones[t] is 1 where the episode ended with the transition at step t; next_value is V of the
    observation after the last step. Returns (advantages, returns = advantages + values)."""
    not_done = 1.0 - dones
    following_values = np.concatenate([values[1:], next_value[None]])  # V(s_t+1)
    deltas = rewards + gamma * following_values * not_done - values  # TD errors, all steps at once
    discounts = gamma * gae_lambda * not_done
    advantages = np.empty_like(deltas)
    last_advantage = np.zeros_like(next_value)
    for t in reversed(range(rewards.shape[0])):  # A_t = delta_t + gamma lambda (1 - done_t) A_t+1
        last_advantage = advantages[t] = deltas[t] + discounts[t] * last_advantage
    return advantages, advantages + values


def policy_loss(new_logprob: torch.Tensor, old_logprob: torch.Tensor, advantages: torch.Tensor, objective: str,
                clip_coef: float, kl: Optional[torch.Tensor] = None, kl_beta: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """The policy objective to minimize, averaged over the minibatch; returns (loss, log ratio). With r = pi/pi_old:
    clip: -min(r A, clip(r, 1-eps, 1+eps) A); none: -r A; kl-fixed, kl-adaptive: -r A + beta KL[pi_old||pi];
    ppog: -A log pi, but 0 for samples whose r left [1-eps, 1+eps] in A's direction (where the clip stops too)."""
    logratio = new_logprob - old_logprob
    ratio = logratio.exp()
    if objective == "clip":
        loss = torch.max(-advantages * ratio, -advantages * torch.clamp(ratio, 1 - clip_coef, 1 + clip_coef)).mean()
    elif objective == "ppog":
        stopped = ((advantages > 0) & (ratio > 1 + clip_coef)) | ((advantages < 0) & (ratio < 1 - clip_coef))
        loss = torch.where(stopped, 0.0, -advantages * new_logprob).mean()
    elif objective == "none":
        loss = (-advantages * ratio).mean()
    else:  # kl-fixed, kl-adaptive
        loss = (-advantages * ratio).mean() + kl_beta * kl
    return loss, logratio


def adapted_kl_beta(kl_beta: float, kl: float, kl_target: float) -> float:
    """The PPO paper's rule after each policy update: halve beta if the KL < d_targ / 1.5, double it if > 1.5 d_targ."""
    if kl < kl_target / 1.5:
        return kl_beta / 2
    if kl > kl_target * 1.5:
        return kl_beta * 2
    return kl_beta


def value_loss(new_values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor,
               clip_coef: float, clip: bool) -> torch.Tensor:
    """0.5 * mean squared error; with clip, the max of the plain and the clipped-prediction errors."""
    unclipped = (new_values - returns) ** 2
    if not clip:
        return 0.5 * unclipped.mean()
    clipped_values = old_values + torch.clamp(new_values - old_values, -clip_coef, clip_coef)
    return 0.5 * torch.max(unclipped, (clipped_values - returns) ** 2).mean()


def linear_decay(iteration: int, num_iterations: int, initial: float) -> float:
    """The learning rate (and clip coefficient) schedule: initial at iteration 1, initial / num_iterations at the last."""
    return initial * (1.0 - (iteration - 1.0) / num_iterations)


def decayed_ent_coef(iteration: int, args: Args) -> float:
    """The entropy coefficient of an iteration: multiplied by ent_coef_decay after each update, down to ent_coef_min."""
    return max(args.ent_coef_min, args.ent_coef * args.ent_coef_decay ** (iteration - 1))


def make_optimizer(agent: nn.Module, lr: float) -> dict:
    """Adam's state for the agent. The agent's parameters become views of one flat tensor, and their
    gradients views of another, so that zeroing, clipping and the Adam step are a few operations on one
    tensor: minibatch steps ~25% faster than torch.optim.Adam(fused=True) over the separate tensors,
    and no 1.3 s import of torch._dynamo (torch.optim's) at start-up."""
    parameters = list(agent.parameters())
    flat_params = torch.cat([p.detach().reshape(-1) for p in parameters])
    flat_grads = torch.zeros_like(flat_params)
    offset = 0
    for p in parameters:
        p.data = flat_params[offset : offset + p.numel()].view_as(p)
        p.grad = flat_grads[offset : offset + p.numel()].view_as(p)  # backward accumulates into it in place
        offset += p.numel()
    return dict(params=flat_params, grads=flat_grads, exp_avg=torch.zeros_like(flat_params),
                exp_avg_sq=torch.zeros_like(flat_params), step=0, lr=lr)


def adam_step(optimizer: dict, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-5):
    """One Adam step on the flat parameters, in place, with torch.optim.Adam's arithmetic (eps 1e-5 as CleanRL)."""
    grads, exp_avg, exp_avg_sq = optimizer["grads"], optimizer["exp_avg"], optimizer["exp_avg_sq"]
    optimizer["step"] += 1
    exp_avg.lerp_(grads, 1 - beta1)
    exp_avg_sq.mul_(beta2).addcmul_(grads, grads, value=1 - beta2)
    bias_correction1 = 1 - beta1 ** optimizer["step"]
    bias_correction2 = 1 - beta2 ** optimizer["step"]
    denominator = (exp_avg_sq.sqrt() / math.sqrt(bias_correction2)).add_(eps)
    optimizer["params"].addcdiv_(exp_avg, denominator, value=-optimizer["lr"] / bias_correction1)


def clip_grad_norm(grads: torch.Tensor, max_norm: float) -> torch.Tensor:
    """Scales the (flat) gradient so that its L2 norm is at most max_norm, as nn.utils.clip_grad_norm_ does;
    returns the norm before clipping."""
    norm = torch.linalg.vector_norm(grads)
    grads.mul_(torch.clamp(max_norm / (norm + 1e-6), max=1.0))
    return norm


def update(agent: Agent, optimizer: dict, batch: dict, args: Args, rng: np.random.Generator,
           clip_coef: float, ent_coef: float, kl_beta: float) -> dict:
    """Minibatch epochs on the PPO loss. Returns the losses and diagnostics averaged over every
    minibatch of the update (not the last one only), the number of gradient steps taken, and the exact
    KL[pi_old || pi] of the whole batch after the update ("kl").
    With target_kl, the update stops at the first minibatch whose KL (measured before its step) exceeds it."""
    penalized = args.objective in ("kl-fixed", "kl-adaptive")
    batch_size = batch["obs"].shape[0]
    minibatch_size = batch_size // args.num_minibatches
    totals = torch.zeros(3, device=batch["obs"].device)  # summed on the device: no sync per minibatch
    logratios = torch.empty(args.update_epochs * args.num_minibatches, minibatch_size, device=batch["obs"].device)
    minibatches_seen, gradient_steps, grad_norms = 0, 0, torch.zeros((), device=batch["obs"].device)
    for epoch in range(args.update_epochs):
        order = torch.from_numpy(rng.permutation(batch_size))
        shuffled = {key: value[order] for key, value in batch.items()}  # minibatches are then cheap slices
        if args.norm_adv:  # each minibatch's advantages to mean 0 and std 1, every minibatch at once
            advantages = shuffled["advantages"].view(args.num_minibatches, minibatch_size)
            advantages = (advantages - advantages.mean(1, keepdim=True)) / (advantages.std(1, keepdim=True) + 1e-8)
            shuffled["advantages"] = advantages.view(-1)
        for start in range(0, batch_size, minibatch_size):
            minibatch = {key: value[start : start + minibatch_size] for key, value in shuffled.items()}
            new_means, new_values = agent(minibatch["obs"])
            new_logprob = gaussian_log_prob(minibatch["actions"], new_means, agent.actor_logstd)
            entropy = gaussian_entropy(agent.actor_logstd)  # the same for every state
            kl = gaussian_kl(minibatch["means"], minibatch["log_stds"], new_means, agent.actor_logstd).mean() if penalized else None

            pg_loss, logratio = policy_loss(new_logprob, minibatch["logprobs"], minibatch["advantages"], args.objective,
                                            clip_coef, kl, kl_beta)
            v_loss = value_loss(new_values, minibatch["values"], minibatch["returns"], clip_coef, args.clip_vloss)
            loss = pg_loss - ent_coef * entropy + args.vf_coef * v_loss

            with torch.no_grad():
                totals += torch.stack([pg_loss, v_loss, entropy])
                logratios[minibatches_seen] = logratio  # the KL diagnostics come from all of them at the end
            minibatches_seen += 1
            if args.target_kl is not None:
                approx_kl = ((logratio.exp() - 1) - logratio).mean().detach()  # the low-variance estimator, k3
                if mean_over_ranks_(approx_kl).item() > args.target_kl:
                    break  # the policy already moved far enough: no step on this minibatch, nor on any later one

            optimizer["grads"].zero_()
            loss.backward()
            mean_over_ranks_(optimizer["grads"])  # under torchrun: the whole minibatch's gradient, the same on every rank
            grad_norms += clip_grad_norm(optimizer["grads"], args.max_grad_norm)
            adam_step(optimizer)
            gradient_steps += 1
        else:
            continue
        break  # target_kl reached: stop the whole update, not just this epoch
    with torch.no_grad():  # how far the whole update moved the policy (the d of kl-adaptive)
        kl = gaussian_kl(batch["means"], batch["log_stds"], agent.action_mean(batch["obs"]), agent.actor_logstd).mean()
        logratio = logratios[:minibatches_seen]  # every minibatch has the same size: the means are means over minibatches
        ratio = logratio.exp()
        diagnostics = torch.stack([(-logratio).mean(), ((ratio - 1) - logratio).mean(),  # KL estimators k1 and k3
                                   ((ratio - 1.0).abs() > clip_coef).float().mean(), kl])  # clip fraction, exact KL
    averages = mean_over_ranks_(torch.cat([totals / minibatches_seen, diagnostics])).tolist()  # of the whole batch
    names = ["policy_loss", "value_loss", "entropy", "old_approx_kl", "approx_kl", "clipfrac", "kl"]
    grad_norm = (grad_norms / max(gradient_steps, 1)).item()  # before clipping, mean over the steps
    return dict(zip(names, averages), gradient_steps=gradient_steps, grad_norm=grad_norm)


def flat_tensor(array: np.ndarray, device: torch.device) -> torch.Tensor:
    """(num_steps, num_envs, ...) numpy -> (num_steps * num_envs, ...) tensor, sharing memory on CPU."""
    return torch.from_numpy(array.reshape(-1, *array.shape[2:])).to(device)


def explained_variance(predicted: np.ndarray, target: np.ndarray) -> float:
    """1 - Var(target - predicted) / Var(target); nan when the target is constant."""
    target_variance = np.var(target)
    return np.nan if target_variance == 0 else float(1 - np.var(target - predicted) / target_variance)


def save_agent(path: str, agent: Agent, args: Args, obs_dim: int, action_dim: int,
               obs_rms: Optional[RunningMeanStd], reward_scaler: Optional[RewardScaler]):
    """A saved model is data: tensors plus plain metadata, loadable with weights_only=True. It holds the
    normalization statistics, so evaluating it in a fresh process sees observations as training did."""
    stats = {}
    if obs_rms is not None:
        stats.update(obs_mean=torch.from_numpy(obs_rms.mean), obs_var=torch.from_numpy(obs_rms.var), obs_count=obs_rms.count)
    if reward_scaler is not None:
        stats.update(return_var=float(reward_scaler.return_rms.var), return_count=reward_scaler.return_rms.count)
    torch.save(
        {
            "format": MODEL_FORMAT,
            "env_id": args.env_id,
            "obs_dim": obs_dim,
            "action_dim": action_dim,
            "hidden_sizes": list(args.hidden_sizes),
            "activation": args.activation,
            "clip_obs": args.clip_obs,
            "normalization": stats,
            "state_dict": {k: v.cpu().clone() for k, v in agent.state_dict().items()},
        },
        path,
    )


def load_data_file(path: str, flag: str, expected_format: str, kind: str) -> dict:
    """Reads a saved model or checkpoint with weights_only=True: tensors and plain data, never code. A missing,
    unreadable or foreign file gets a one-line error naming the flag that gave it."""
    if not os.path.isfile(path):
        fail(f"{flag} {path!r}: no such file")
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # truncated, corrupt, or holding objects other than tensors and plain data
        fail(f"{flag} {path!r} is not a readable {kind} file ({type(error).__name__}: {str(error).splitlines()[0][:200]})")
    if not isinstance(saved, dict) or saved.get("format") != expected_format:
        found = saved.get("format") if isinstance(saved, dict) else type(saved).__name__
        fail(f"{flag} {path!r} is not a ppo_continuous.py {kind} (format {found!r}, expected {expected_format!r})")
    return saved


def load_agent(path: str) -> tuple[Agent, Optional[RunningMeanStd], dict]:
    """Loads a model written by save_agent, never unpickling code. Bad files get a one-line error.
    Returns the agent, its observation statistics (None if it was trained without), and the metadata."""
    saved = load_data_file(path, "--load-model", MODEL_FORMAT, "model")
    try:
        agent = Agent(saved["obs_dim"], saved["action_dim"], tuple(saved["hidden_sizes"]), saved["activation"])
        agent.load_state_dict(saved["state_dict"])
        obs_rms = None
        if "obs_mean" in saved["normalization"]:
            obs_rms = RunningMeanStd((saved["obs_dim"],))
            obs_rms.mean = saved["normalization"]["obs_mean"].numpy()
            obs_rms.var = saved["normalization"]["obs_var"].numpy()
            obs_rms.count = saved["normalization"]["obs_count"]
            if obs_rms.mean.shape != (saved["obs_dim"],) or obs_rms.var.shape != (saved["obs_dim"],):
                raise ValueError("normalization statistics do not match the observation size")
    except (KeyError, RuntimeError, TypeError, ValueError, AttributeError) as error:
        fail(f"--load-model {path!r} has inconsistent contents ({type(error).__name__}: {str(error).splitlines()[0][:200]})")
    return agent, obs_rms, saved


def time_limit_of(env: gym.Env) -> Optional[gym.wrappers.TimeLimit]:
    while isinstance(env, gym.Wrapper):
        if isinstance(env, gym.wrappers.TimeLimit):
            return env
        env = env.env
    return None


def physics_state(unwrapped: gym.Env) -> Optional[np.ndarray]:
    """The simulation state: MuJoCo's whole integration state (positions, velocities, warm start, time, ...),
    or the `state` array of classic-control envs; None where it cannot be read (Box2D worlds, ...)."""
    if hasattr(unwrapped, "model") and hasattr(unwrapped, "data"):
        import mujoco

        state = np.empty(mujoco.mj_stateSize(unwrapped.model, mujoco.mjtState.mjSTATE_INTEGRATION))
        mujoco.mj_getState(unwrapped.model, unwrapped.data, state, mujoco.mjtState.mjSTATE_INTEGRATION)
        return state
    state = getattr(unwrapped, "state", None)
    return state.copy() if isinstance(state, np.ndarray) else None


def set_physics_state(unwrapped: gym.Env, state: np.ndarray):
    if hasattr(unwrapped, "model") and hasattr(unwrapped, "data"):
        import mujoco

        mujoco.mj_setState(unwrapped.model, unwrapped.data, state, mujoco.mjtState.mjSTATE_INTEGRATION)
    else:
        unwrapped.state = state


def env_states(envs: gym.vector.SyncVectorEnv) -> Optional[list[dict]]:
    """Each env's random generator, time-limit counter and simulation state, as tensors and plain data; None
    when an env's simulation state cannot be read."""
    states = []
    for env in envs.envs:
        unwrapped, time_limit = env.unwrapped, time_limit_of(env)
        physics = physics_state(unwrapped)
        if physics is None:
            return None
        states.append(dict(
            physics=torch.from_numpy(physics),
            steps_beyond_terminated=getattr(unwrapped, "steps_beyond_terminated", None),
            elapsed_steps=time_limit._elapsed_steps if time_limit else None,
            np_random=unwrapped.np_random.bit_generator.state,
        ))
    return states


def restore_env_states(envs: gym.vector.SyncVectorEnv, states: list[dict]):
    for env, state in zip(envs.envs, states):
        unwrapped, time_limit = env.unwrapped, time_limit_of(env)
        set_physics_state(unwrapped, state["physics"].numpy())
        if state["steps_beyond_terminated"] is not None or hasattr(unwrapped, "steps_beyond_terminated"):
            unwrapped.steps_beyond_terminated = state["steps_beyond_terminated"]
        if time_limit:
            time_limit._elapsed_steps = state["elapsed_steps"]
        unwrapped.np_random.bit_generator.state = state["np_random"]


def rng_states(rng: np.random.Generator) -> dict:
    """Every random number generator the run draws from, as tensors and plain data."""
    _, keys, position, has_gauss, cached_gaussian = np.random.get_state()
    return dict(python=random.getstate(), numpy=(torch.from_numpy(keys.astype(np.int64)), position, has_gauss, cached_gaussian),
                torch=torch.get_rng_state(), generator=rng.bit_generator.state)


def restore_rng_states(rng: np.random.Generator, states: dict):
    random.setstate(states["python"])
    keys, position, has_gauss, cached_gaussian = states["numpy"]
    np.random.set_state(("MT19937", keys.numpy().astype(np.uint32), position, has_gauss, cached_gaussian))
    torch.set_rng_state(states["torch"])
    rng.bit_generator.state = states["generator"]


def save_checkpoint(path: str, checkpoint: dict):
    """Writes to a temporary file, syncs it to disk, then renames it over the old checkpoint: a kill at any
    moment leaves either the old or the new checkpoint whole."""
    temporary = f"{path}.tmp"
    with open(temporary, "wb") as f:
        torch.save(checkpoint, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(temporary, path)


def load_checkpoint(path: str) -> dict:
    """Loads a checkpoint written by save_checkpoint, never unpickling code. Bad files get a one-line error."""
    return load_data_file(path, "--resume", CHECKPOINT_FORMAT, "checkpoint")


def resumed_args(args: Args, checkpoint: dict) -> Args:
    """The checkpoint's flags. A flag given with --resume that differs from them is an error, not ignored."""
    saved = {key: tuple(value) if isinstance(value, list) else value for key, value in checkpoint["args"].items()}
    defaults = Args()
    for key, value in vars(args).items():
        if key != "resume" and value != getattr(defaults, key) and value != saved.get(key):
            fail(f"--resume continues the run with its own flags: drop --{key.replace('_', '-')} (saved: {saved.get(key)!r})")
    try:
        return Args(**{**saved, "resume": args.resume})
    except TypeError as error:
        fail(f"--resume {args.resume!r} holds flags this script does not know ({error})")


def evaluate(agent: Agent, env_id: str, episodes: int, seed: int, greedy: bool, obs_rms: Optional[RunningMeanStd],
             clip_obs: float, video_dir: Optional[str] = None, device: torch.device = torch.device("cpu")) -> list[float]:
    """Plays whole episodes in one fresh env with frozen observation statistics; returns their raw returns."""
    env = make_env(env_id, video_dir, record_every_episode=True)()
    rng = np.random.default_rng(seed)
    log_std = agent.actor_logstd.detach().cpu().numpy()
    returns = []
    for episode in range(episodes):
        obs, _ = env.reset(seed=seed + episode)
        episode_return, done = 0.0, False
        while not done:
            normalized = normalize_obs(obs[None], obs_rms, clip_obs)
            with torch.inference_mode():
                mean = agent.action_mean(torch.from_numpy(normalized).to(device)).cpu().numpy()
            action = mean if greedy else sample_actions(mean, log_std, rng)
            obs, reward, terminated, truncated, _ = env.step(np.clip(action[0], env.action_space.low, env.action_space.high))
            episode_return += float(reward)
            done = terminated or truncated
        returns.append(episode_return)
    env.close()
    return returns


def new_run_dir(run_name: str) -> tuple[str, str]:
    """Creates runs/{run_name}; a second run started in the same second gets a suffix, never the same dir."""
    if not os.path.isdir("runs"):
        try:
            os.makedirs("runs")
        except OSError as error:
            fail(f"cannot create the directory runs/: {error.strerror}; run from a writable directory")
    candidate, suffix = run_name, 1
    while True:
        try:
            os.makedirs(os.path.join("runs", candidate))
            return candidate, os.path.join("runs", candidate)
        except FileExistsError:
            suffix += 1
            candidate = f"{run_name}_{suffix}"
        except OSError as error:
            fail(f"cannot create the run directory runs/{candidate}: {error.strerror}; run from a writable directory")


class ScalarWriter:
    """TensorBoard's SummaryWriter, with the scalars handed to it in bursts about once a second. Handing each
    point over as it comes wakes the writer's thread every time, and those GIL hand-offs cost ~17% of a
    CartPole run. Every point keeps the wall time at which it was logged. ScalarWriter(None) logs nothing
    (the processes other than rank 0 under torchrun)."""

    def __init__(self, writer):
        self.writer, self.points, self.last_write = writer, [], time.time()

    def add_scalar(self, tag: str, value: float, step: int):
        if self.writer is None:
            return
        self.points.append((tag, value, step, time.time()))
        if self.points[-1][3] - self.last_write > 1.0:
            self.write_points()

    def write_points(self):
        for tag, value, step, wall_time in self.points:
            self.writer.add_scalar(tag, value, step, walltime=wall_time)
        self.points.clear()
        self.last_write = time.time()

    def flush(self):
        if self.writer is not None:
            self.write_points()
            self.writer.flush()

    def close(self):
        if self.writer is not None:
            self.write_points()
            self.writer.close()


def start_logging(args: Args, run_name: str, run_dir: str, purge_step: Optional[int] = None,
                  processes: int = 1) -> ScalarWriter:
    """TensorBoard writer (and W&B mirroring it with --track). A resumed run passes purge_step, the first step
    after its checkpoint: TensorBoard drops the points that the stopped run logged from there on. The
    hyper-parameters table holds the flags and the number of torchrun processes."""
    config = {**vars(args), "processes": processes}
    if args.track:
        try:
            import wandb
        except ImportError:
            fail("--track needs wandb: pip install wandb, or drop --track")
        wandb.init(project=args.wandb_project_name, entity=args.wandb_entity, sync_tensorboard=True,
                   config=config, name=run_name, save_code=True, dir=run_dir)
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(run_dir, purge_step=purge_step)
    table = "\n".join(f"|{key}|{value}|" for key, value in config.items())
    writer.add_text("hyperparameters", f"|param|value|\n|-|-|\n{table}")
    return ScalarWriter(writer)


def finish_logging(args: Args, writer, run_name: str):
    writer.close()
    if args.track:
        import wandb

        if args.capture_video and os.path.isdir(f"videos/{run_name}"):
            for name in sorted(os.listdir(f"videos/{run_name}")):
                wandb.log({"videos": wandb.Video(os.path.join(f"videos/{run_name}", name))})
        wandb.finish()


def print_progress(global_step: int, total: int, start_time: float, start_step: int, recent_returns: deque, end="\n"):
    elapsed = time.time() - start_time
    sps = (global_step - start_step) / max(elapsed, 1e-9)
    eta = (total - global_step) / max(sps, 1e-9)
    mean_return = f"{np.mean(recent_returns):8.2f}" if recent_returns else "     n/a"
    line = (f"step {global_step:>10,}/{total:,} ({100 * global_step / total:3.0f}%) | {sps:7,.0f} SPS | "
            f"return (last {len(recent_returns)}) {mean_return} | elapsed {elapsed:5.0f}s | ETA {eta:5.0f}s")
    print(("\r" if end == "" else "") + line, end=end, flush=True)


def seed_everything(seed: int, torch_deterministic: bool):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.backends.cudnn.deterministic = torch_deterministic


def normalization_state(obs_rms: Optional[RunningMeanStd], reward_scaler: Optional[RewardScaler]) -> dict:
    """The running statistics and each env's running discounted return, as tensors and plain data."""
    state = {}
    if obs_rms is not None:
        state.update(obs_mean=torch.from_numpy(obs_rms.mean), obs_var=torch.from_numpy(obs_rms.var), obs_count=obs_rms.count)
    if reward_scaler is not None:
        rms = reward_scaler.return_rms
        state.update(return_mean=float(rms.mean), return_var=float(rms.var), return_count=rms.count,
                     discounted_return=torch.from_numpy(reward_scaler.discounted_return.copy()))
    return state


def restore_normalization(obs_rms: Optional[RunningMeanStd], reward_scaler: Optional[RewardScaler], state: dict):
    if obs_rms is not None:
        obs_rms.mean, obs_rms.var, obs_rms.count = state["obs_mean"].numpy(), state["obs_var"].numpy(), state["obs_count"]
    if reward_scaler is not None:
        rms = reward_scaler.return_rms
        rms.mean, rms.var, rms.count = np.float64(state["return_mean"]), np.float64(state["return_var"]), state["return_count"]
        reward_scaler.discounted_return = state["discounted_return"].numpy()


def catch_stop_signals(stop_requests: list) -> dict:
    """From now on, Ctrl-C and SIGTERM append to stop_requests, and the training loop stops cleanly after its
    current iteration; a second Ctrl-C stops at once. Returns the previous handlers, to put back."""

    def request_stop(signum, frame):
        if stop_requests and signum == signal.SIGINT:
            raise KeyboardInterrupt
        stop_requests.append(signum)
        print(f"\n{signal.Signals(signum).name}: stopping after this iteration (Ctrl-C again: at once)", file=sys.stderr)

    if threading.current_thread() is not threading.main_thread():
        return {}
    return {signum: signal.signal(signum, request_stop) for signum in (signal.SIGINT, signal.SIGTERM)}


def start_distributed(use_cuda: bool) -> tuple[int, int, torch.device]:
    """Under torchrun (WORLD_SIZE > 1): joins the process group, NCCL on GPUs and gloo on CPUs, and returns
    (rank, world_size, device), each process on its own GPU (LOCAL_RANK). Without torchrun: (0, 1, device)
    and no distributed state at all."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0"))) if use_cuda else torch.device("cpu")
    if world_size == 1:
        return 0, 1, device
    if use_cuda:
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if use_cuda else "gloo")
    return dist.get_rank(), world_size, device


def mean_over_ranks_(tensor: torch.Tensor) -> torch.Tensor:
    """Under torchrun: replaces tensor, in place, by its mean over all processes (one all-reduce). Without: as is."""
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


def from_rank_0(value):
    """Rank 0's value, on every process (a broadcast under torchrun; value itself without)."""
    if not dist.is_initialized():
        return value
    holder = [value]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]


def first_non_finite(stats: dict, optimizer: dict) -> Optional[str]:
    """The first quantity of an update that is nan or inf, or None when all are finite."""
    for name in ["policy_loss", "value_loss", "entropy", "grad_norm"]:
        if not math.isfinite(stats[name]):
            return f"{name} ({stats[name]})"
    return None if torch.isfinite(optimizer["params"]).all() else "a network parameter"


def train(args: Args) -> dict:
    """Trains (or, with --resume, goes on training) and returns a summary: episodes [(global_step, return,
    length)] of all envs, run_dir, model_path, eval_returns, stopped (the signal that stopped it, or None), agent.
    Under torchrun every process runs it on its own envs; rank 0 alone writes logs, checkpoints and the model."""
    rank, world_size, device = start_distributed(torch.cuda.is_available() and args.cuda)
    checkpoint = from_rank_0(load_checkpoint(args.resume) if rank == 0 else None) if args.resume else None
    if checkpoint:
        args = resumed_args(args, checkpoint)
        if len(checkpoint["ranks"]) != world_size:
            fail(f"--resume {args.resume!r} was written by {len(checkpoint['ranks'])} process(es): "
                 f"resume it with as many (torchrun --nproc_per_node), not {world_size}")
    check_args(args, world_size)  # resuming: the checkpoint's flags
    if checkpoint:
        run_dir = os.path.dirname(os.path.abspath(args.resume))
        run_name = os.path.basename(run_dir)
    else:
        run_name, run_dir = from_rank_0(
            new_run_dir(f"{args.env_id}__{args.exp_name}__{args.seed}__{int(time.time())}") if rank == 0 else None)
    checkpoint_path = os.path.join(run_dir, "checkpoint.pt")
    batch_size = args.num_envs * args.num_steps  # over all processes
    num_iterations = args.total_timesteps // batch_size

    seed_everything(args.seed, args.torch_deterministic)  # the same on every rank: the same initial network
    if args.torch_threads > 0:
        torch.set_num_threads(args.torch_threads)
    # Action sampling and minibatch shuffling; rank 0 draws what a run without torchrun draws.
    rng = np.random.default_rng(np.random.SeedSequence(args.seed, spawn_key=(rank,) if rank else ()))

    envs = make_envs(args, run_name, rank, world_size)
    obs_dim, action_dim = envs.single_observation_space.shape[0], envs.single_action_space.shape[0]
    agent = Agent(obs_dim, action_dim, args.hidden_sizes, args.activation).to(device)
    obs_rms = RunningMeanStd((obs_dim,)) if args.norm_obs else None  # shared by all envs
    reward_scaler = RewardScaler(envs.num_envs, args.gamma, args.clip_reward) if args.norm_reward else None
    shared_statistics = [rms for rms in (obs_rms, reward_scaler and reward_scaler.return_rms) if rms is not None]
    optimizer = make_optimizer(agent, args.learning_rate)

    episodes, recent_returns, episode_count = [], deque(maxlen=100), 0
    episode_returns = np.zeros(envs.num_envs)  # raw return and length of each env's running episode
    episode_lengths = np.zeros(envs.num_envs, dtype=np.int64)
    global_step, start_iteration = 0, 1
    first_env_seed = args.seed + rank * envs.num_envs  # the N processes' envs get the seeds of one process's num_envs
    next_obs, _ = envs.reset(seed=first_env_seed)
    if obs_rms is not None:
        start = (obs_rms.count, obs_rms.mean, obs_rms.var)
        obs_rms.update(next_obs)
        merge_over_ranks(obs_rms, start)
    next_obs = normalize_obs(next_obs, obs_rms, args.clip_obs)
    kl_beta = args.kl_beta  # adapted after each update with --objective kl-adaptive
    if checkpoint:  # everything as it was at the end of the checkpoint's iteration
        agent.load_state_dict(checkpoint["agent"])
        optimizer.update(exp_avg=checkpoint["optimizer"]["exp_avg"].to(device), step=checkpoint["optimizer"]["step"],
                         exp_avg_sq=checkpoint["optimizer"]["exp_avg_sq"].to(device))
        global_step, start_iteration, kl_beta = checkpoint["global_step"], checkpoint["iteration"] + 1, checkpoint["kl_beta"]
        recent_returns.extend(checkpoint["recent_returns"])
        episode_count = checkpoint["episode_count"]
        own = checkpoint["ranks"][rank]  # this process's generators, envs, running episodes and returns
        restore_rng_states(rng, own["rng"])
        restore_normalization(obs_rms, reward_scaler, own["normalization"])
        if own["envs"] is not None:
            restore_env_states(envs, own["envs"])
            next_obs = own["next_obs"].numpy()
            episode_returns, episode_lengths = own["episode_returns"].numpy(), own["episode_lengths"].numpy()
        else:
            if rank == 0:
                print(f"note: the state of {args.env_id} cannot be saved: the envs start new episodes (not bit for bit)")
            next_obs, _ = envs.reset(seed=first_env_seed + global_step)
            next_obs = normalize_obs(next_obs, obs_rms, args.clip_obs)
            if reward_scaler is not None:
                reward_scaler.discounted_return[:] = 0.0
        if rank == 0:
            print(f"resuming {run_name} at step {global_step:,} (iteration {start_iteration})")

    purge_step = global_step + 1 if checkpoint else None
    writer = start_logging(args, run_name, run_dir, purge_step, world_size) if rank == 0 else ScalarWriter(None)

    def write_checkpoint(iteration: int):
        ranks = gather_from_ranks([dict(  # each process's own generators, envs, running episodes and returns
            rng=rng_states(rng), envs=env_states(envs), next_obs=torch.from_numpy(next_obs.copy()),
            normalization=normalization_state(obs_rms, reward_scaler),
            episode_returns=torch.from_numpy(episode_returns.copy()), episode_lengths=torch.from_numpy(episode_lengths.copy()))])
        if rank != 0:
            return
        writer.flush()  # every point up to the checkpoint is on disk before it
        save_checkpoint(checkpoint_path, dict(
            format=CHECKPOINT_FORMAT, args={k: list(v) if isinstance(v, tuple) else v for k, v in vars(args).items()},
            iteration=iteration, global_step=global_step, kl_beta=kl_beta,
            agent={k: v.cpu().clone() for k, v in agent.state_dict().items()},
            optimizer=dict(exp_avg=optimizer["exp_avg"].cpu(), exp_avg_sq=optimizer["exp_avg_sq"].cpu(), step=optimizer["step"]),
            recent_returns=list(recent_returns), episode_count=episode_count, ranks=ranks))

    interactive = sys.stdout.isatty()
    start_time, start_step, last_print = time.time(), global_step, 0.0
    stop_requests, stopping = [], []  # the signals this process got; the one that stops every process
    previous_handlers = catch_stop_signals(stop_requests)
    try:
        for iteration in range(start_iteration, num_iterations + 1):
            if args.anneal_lr:
                optimizer["lr"] = linear_decay(iteration, num_iterations, args.learning_rate)
            clip_coef = linear_decay(iteration, num_iterations, args.clip_coef) if args.anneal_clip else args.clip_coef
            ent_coef = decayed_ent_coef(iteration, args)

            # 1. Rollout
            starts = [(rms.count, rms.mean, rms.var) for rms in shared_statistics]
            rollout, next_obs, finished = collect_rollout(
                envs, agent, next_obs, args.num_steps, args.gamma, args.bootstrap_truncation, rng, device,
                episode_returns, episode_lengths, obs_rms, args.clip_obs, reward_scaler)
            for rms, start in zip(shared_statistics, starts):
                merge_over_ranks(rms, start)  # under torchrun: every process's statistics then count every env
            finished = sorted(gather_from_ranks(finished), key=lambda episode: episode[0])  # the episodes of every process
            for step, _, episode_return, length in finished:
                step_of_episode_end = global_step + (step + 1) * args.num_envs
                episodes.append((step_of_episode_end, float(episode_return), int(length)))
                recent_returns.append(float(episode_return))
                writer.add_scalar("charts/episodic_return", episode_return, step_of_episode_end)
                writer.add_scalar("charts/episodic_length", length, step_of_episode_end)
            episode_count += len(finished)
            global_step += batch_size

            # 2. Advantages
            advantages, returns = compute_gae(rollout["rewards"], rollout["values"], rollout["dones"],
                                              rollout["next_value"], args.gamma, args.gae_lambda)

            # 3. Update
            batch = dict(obs=flat_tensor(rollout["obs"], device), actions=flat_tensor(rollout["actions"], device),
                         logprobs=rollout["logprobs"], means=rollout["means"], log_stds=rollout["log_stds"],
                         values=flat_tensor(rollout["values"], device), advantages=flat_tensor(advantages, device),
                         returns=flat_tensor(returns, device))
            stats = update(agent, optimizer, batch, args, rng, clip_coef, ent_coef, kl_beta)
            bad = first_non_finite(stats, optimizer)
            if bad:  # the same verdict on every rank: stats and parameters are shared
                kept = f"the last good checkpoint is {checkpoint_path}" if os.path.exists(checkpoint_path) else "no checkpoint was written"
                if rank == 0:
                    print(f"error: {bad} went non-finite in the update ending at step {global_step:,}; stopped, {kept}",
                          file=sys.stderr)
                raise SystemExit(3)

            # 4. Log
            sps = int((global_step - start_step) / (time.time() - start_time))
            writer.add_scalar("charts/learning_rate", optimizer["lr"], global_step)
            for name in ["value_loss", "policy_loss", "entropy", "old_approx_kl", "approx_kl", "clipfrac", "kl", "grad_norm"]:
                writer.add_scalar(f"losses/{name}", stats[name], global_step)
            if args.objective in ("kl-fixed", "kl-adaptive"):
                writer.add_scalar("charts/kl_beta", kl_beta, global_step)
                if args.objective == "kl-adaptive":
                    kl_beta = adapted_kl_beta(kl_beta, stats["kl"], args.kl_target)
            if args.ent_coef_decay != 1.0:
                writer.add_scalar("charts/ent_coef", ent_coef, global_step)
            if args.anneal_clip:
                writer.add_scalar("charts/clip_coef", clip_coef, global_step)
            writer.add_scalar("losses/explained_variance", explained_variance(rollout["values"], returns), global_step)
            writer.add_scalar("charts/SPS", sps, global_step)
            if rank == 0 and (time.time() - last_print > (0.5 if interactive else 10.0) or iteration == num_iterations):
                last_print = time.time()
                print_progress(global_step, num_iterations * batch_size, start_time, start_step, recent_returns,
                               end="" if interactive and iteration < num_iterations else "\n")

            # 5. Checkpoint
            crossed = global_step // args.checkpoint_every > (global_step - batch_size) // args.checkpoint_every if args.checkpoint_every else False
            # A signal to any process stops all, here. Not written into stop_requests: a signal whose handler runs
            # as the gather returns (where a waiting process gets it) would be overwritten, and lost.
            stopping = gather_from_ranks(stop_requests[:1])
            if stopping or (crossed and iteration < num_iterations):
                write_checkpoint(iteration)
            if stopping:
                if rank == 0:
                    launcher = "python" if world_size == 1 else f"torchrun --nproc_per_node {world_size} ..."
                    print(f"stopped at step {global_step:,}; continue with: {launcher} ppo_continuous.py --resume {checkpoint_path}",
                          file=sys.stderr)
                break
    finally:
        for signum, handler in previous_handlers.items():
            signal.signal(signum, handler)
        envs.close()
        writer.flush()  # an error or Ctrl-C keeps every point logged so far

    model_path, eval_returns = None, []
    if rank == 0 and args.save_model and not stopping:
        model_path = os.path.join(run_dir, f"{args.exp_name}.model")
        save_agent(model_path, agent, args, obs_dim, action_dim, obs_rms, reward_scaler)
        print(f"model saved to {model_path}")
    if rank == 0 and args.eval_episodes > 0 and not stopping:
        eval_returns = run_evaluation(agent, obs_rms, args, writer, run_name, device)
    if rank == 0:
        finish_logging(args, writer, run_name)
    if world_size > 1:
        dist.destroy_process_group()
    stopped = signal.Signals(stopping[0]) if stopping else None
    return dict(episodes=episodes, episode_count=episode_count, recent_returns=list(recent_returns), run_dir=run_dir,
                model_path=model_path, eval_returns=eval_returns, stopped=stopped, agent=agent)


def run_evaluation(agent: Agent, obs_rms: Optional[RunningMeanStd], args: Args, writer, run_name: str,
                   device: torch.device) -> list[float]:
    if args.capture_video:
        check_video_support()
    video_dir = f"videos/{run_name}-eval" if args.capture_video else None
    returns = evaluate(agent, args.env_id, args.eval_episodes, args.seed + 100_000, args.eval_greedy, obs_rms,
                       args.clip_obs, video_dir, device)
    for episode, episode_return in enumerate(returns):
        writer.add_scalar("eval/episodic_return", episode_return, episode)
    mode = "greedy" if args.eval_greedy else "sampled"
    print(f"eval ({mode}, {len(returns)} episodes): mean return {np.mean(returns):.2f} +- {np.std(returns):.2f}")
    if video_dir:
        print(f"videos in {video_dir}/")
    return returns


def evaluate_saved_model(args: Args) -> list[float]:
    """--load-model: evaluate (and with --capture-video, record) a saved agent without training."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        fail(f"--load-model evaluates in one process: run it with python {os.path.basename(__file__)}, not torchrun")
    check_args(args)
    agent, obs_rms, saved = load_agent(args.load_model)
    if saved["env_id"] != args.env_id:
        fail(f"the model was trained on {saved['env_id']}: add --env-id {saved['env_id']}")
    env = make_env(args.env_id)()
    check_spaces(args.env_id, env.observation_space, env.action_space)
    if env.observation_space.shape[0] != saved["obs_dim"] or env.action_space.shape[0] != saved["action_dim"]:
        fail(f"the model's shapes do not fit {args.env_id}: it was saved for another env")
    args.clip_obs = saved["clip_obs"]  # evaluate exactly as trained
    env.close()
    args.eval_episodes = args.eval_episodes or 10
    run_name, run_dir = new_run_dir(f"{args.env_id}__{args.exp_name}-eval__{args.seed}__{int(time.time())}")
    writer = start_logging(args, run_name, run_dir)
    returns = run_evaluation(agent, obs_rms, args, writer, run_name, torch.device("cpu"))
    finish_logging(args, writer, run_name)
    return returns


def main():
    args = tyro.cli(Args)
    if args.load_model is not None:
        evaluate_saved_model(args)
        return
    try:
        summary = train(args)
    except KeyboardInterrupt:
        print("\ninterrupted: TensorBoard logs are flushed up to the last iteration; the last periodic checkpoint is kept",
              file=sys.stderr)
        raise SystemExit(130) from None
    if summary["stopped"] is not None:
        raise SystemExit(128 + summary["stopped"])  # 130 for Ctrl-C, 143 for SIGTERM
    last = summary["recent_returns"]
    if last and int(os.environ.get("RANK", "0")) == 0:  # under torchrun: rank 0 speaks for all
        print(f"done: {summary['episode_count']} episodes, mean return of the last {len(last)}: {np.mean(last):.2f}; "
              f"logs in {summary['run_dir']}")


if __name__ == "__main__":
    main()
