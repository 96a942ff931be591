"""PPO for discrete actions (CartPole, Acrobot, MountainCar, LunarLander, ...), in one file.

    python ppo_discrete.py                                   # CartPole-v1, logs to runs/
    python ppo_discrete.py --env-id LunarLander-v3 --help     # every flag, with its meaning
    python ppo_discrete.py --load-model runs/RUN/ppo_discrete.model --eval-episodes 5 --capture-video

The algorithm box: set up envs and networks; then each iteration (1) roll out num_steps in
num_envs envs, (2) compute GAE advantages, (3) run update_epochs of minibatch updates on the
clipped surrogate + clipped value loss - entropy bonus, (4) log to TensorBoard.
Flag names and defaults are CleanRL's ppo.py, so a CleanRL command line works unchanged.
Under `torchrun --nproc_per_node N ppo_discrete.py ...` each process steps num_envs/N of the envs and the
gradient of every minibatch is averaged over the processes: the flags keep meaning the global totals.
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
from functools import partial
from typing import Literal, Optional

import gymnasium as gym
import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
import tyro

MODEL_FORMAT = "ppo_discrete/1"  # written into every saved model, checked on load
CHECKPOINT_FORMAT = "ppo_discrete/checkpoint/2"
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
    track: bool = False
    """if toggled, logs the run to Weights and Biases (WANDB_MODE=offline works without network)"""
    wandb_project_name: str = "cleanRL"
    """the Weights and Biases project name"""
    wandb_entity: Optional[str] = None
    """the Weights and Biases entity (team)"""
    capture_video: bool = False
    """if toggled, records MP4 videos of the agent under `videos/{run_name}/`"""

    env_id: str = "CartPole-v1"
    """the id of the gymnasium environment (Box observations, Discrete actions)"""
    total_timesteps: int = 500000
    """total environment steps of the training, summed over all envs"""
    learning_rate: float = 2.5e-4
    """the learning rate of the Adam optimizer"""
    num_envs: int = 4
    """the number of parallel environments in all (under torchrun, each of the N processes steps num_envs/N)"""
    num_steps: int = 128
    """the number of steps run in each environment per rollout (batch = num_envs * num_steps, over all processes)"""
    anneal_lr: bool = True
    """if toggled, the learning rate decays linearly to 0 over the training"""
    gamma: float = 0.99
    """the discount factor gamma"""
    gae_lambda: float = 0.95
    """the lambda of generalized advantage estimation"""
    num_minibatches: int = 4
    """the number of minibatches each batch is split into (must divide the batch; under torchrun, each process
    computes the gradient of its 1/N share of every minibatch, and the N gradients are averaged)"""
    update_epochs: int = 4
    """the number of passes over the batch in each policy update"""
    norm_adv: bool = True
    """if toggled, normalizes advantages within each minibatch (under torchrun: within each process's share)"""
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

    bootstrap_truncation: bool = True
    """if toggled, a time-limit truncation bootstraps from V(final obs); --no-bootstrap-truncation
    treats it as a termination, as CleanRL does"""
    shared_body: bool = False
    """if toggled, actor and critic share one body with two heads (default: two separate MLPs)"""
    hidden_sizes: tuple[int, ...] = (64, 64)
    """the hidden layer sizes of each MLP"""
    activation: Literal["tanh", "relu"] = "tanh"
    """the activation of the hidden layers"""
    torch_threads: int = 1
    """CPU threads for torch (1 is fastest for small networks; 0 keeps torch's default); numpy's matmuls (the
    CPU rollout and update) use OpenBLAS's own threads, set by the OPENBLAS_NUM_THREADS environment variable"""
    numpy_gradient: bool = True
    """if toggled, on CPU the minibatch gradient comes from the loss's derivative written out in numpy
    (numpy_loss_gradient: a third of autograd's time), checked against autograd after the first update of
    every run; --no-numpy-gradient (or a GPU) uses autograd: after changing the loss, use it or change the
    derivative too"""
    save_model: bool = False
    """if toggled, saves the trained agent to `runs/{run_name}/{exp_name}.model`"""
    eval_episodes: int = 0
    """after training (or with --load-model), evaluates this many episodes and logs eval/episodic_return"""
    eval_greedy: bool = True
    """if toggled, evaluation takes the most likely action; --no-eval-greedy samples from the policy"""
    load_model: Optional[str] = None
    """path of a saved model: evaluates it (and records it with --capture-video) without training"""
    checkpoint_every: int = 100_000
    """every this many steps (and when the run is stopped), saves all it needs to go on to
    runs/{run_name}/checkpoint.pt, atomically; 0: never"""
    resume: Optional[str] = None
    """path of a checkpoint.pt: continues that run with its own flags, in its own run directory and
    TensorBoard curves; bit for bit on CPU when the envs' state can be saved (see the README)"""


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
    for name in ["learning_rate", "clip_coef", "max_grad_norm"]:
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
        env = gym.make(env_id) if record_video_to is None else gym.make(env_id, render_mode="rgb_array")
        if isinstance(env.observation_space, gym.spaces.Dict) and "action_mask" in env.observation_space.spaces:
            env = ActionMaskToInfo(env)
        if record_video_to is None:
            return env
        trigger = (lambda episode: True) if record_every_episode else None  # None: episodes 0, 1, 8, 27, ..., 1000, 2000
        return gym.wrappers.RecordVideo(env, record_video_to, episode_trigger=trigger)

    return thunk


class ActionMaskToInfo(gym.Wrapper):
    """Envs give their legal actions in info["action_mask"] or in an observation dict
    {"observation": ..., "action_mask": ...}; this turns the second form into the first."""

    def __init__(self, env: gym.Env):
        super().__init__(env)
        keys = [key for key in env.observation_space.spaces if key != "action_mask"]
        if len(keys) != 1:
            fail(f"observation dict with keys {list(env.observation_space.spaces)}: expected one observation besides action_mask")
        self.observation_key = keys[0]
        self.observation_space = env.observation_space[self.observation_key]

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        return obs[self.observation_key], {**info, "action_mask": obs["action_mask"]}

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        return obs[self.observation_key], reward, terminated, truncated, {**info, "action_mask": obs["action_mask"]}


def legal_actions(info: dict) -> Optional[np.ndarray]:
    """The env's action mask, (num_envs, n_actions) or (n_actions,) bool with True = legal; None if it gives none."""
    return np.asarray(info["action_mask"], dtype=bool) if "action_mask" in info else None


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
        # it before the next step): CartPole rollout 88 -> 85 us per step of the 4 envs
        envs = gym.vector.SyncVectorEnv(thunks, copy=False, autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    except gym.error.Error as error:  # unknown id, missing Box2D, ...
        fail(f"cannot make --env-id {args.env_id!r}: {str(error).splitlines()[0]}")
    check_spaces(args.env_id, envs.single_observation_space, envs.single_action_space)
    return envs


def check_spaces(env_id: str, observation_space: gym.Space, action_space: gym.Space):
    if not isinstance(action_space, gym.spaces.Discrete):
        fail(f"{env_id} has {action_space} actions; ppo_discrete.py needs Discrete actions: use ppo_continuous.py")
    if not isinstance(observation_space, gym.spaces.Box):
        fail(f"{env_id} has {observation_space} observations; ppo_discrete.py needs a Box observation vector")
    if len(observation_space.shape) != 1:
        hint = ": use ppo_atari.py for pixels" if len(observation_space.shape) == 3 else ""
        fail(f"{env_id} has observations of shape {observation_space.shape}; ppo_discrete.py needs a flat vector{hint}")


def check_video_support():
    try:
        import moviepy  # noqa: F401  (RecordVideo writes MP4s with it)
    except ImportError:
        fail("--capture-video needs moviepy: pip install moviepy, or drop --capture-video")
    os.environ.setdefault("SDL_VIDEODRIVER", "dummy")  # render off-screen, no display needed


def layer_init(layer: nn.Linear, gain: float = np.sqrt(2), bias: float = 0.0) -> nn.Linear:
    """Orthogonal weights scaled by gain, constant bias."""
    nn.init.orthogonal_(layer.weight, gain)
    nn.init.constant_(layer.bias, bias)
    return layer


def hidden_layers(sizes: list[int]) -> nn.ModuleList:
    """Linear layers for each consecutive pair of sizes, orthogonal init with gain sqrt(2)."""
    return nn.ModuleList(layer_init(nn.Linear(n_in, n_out)) for n_in, n_out in zip(sizes[:-1], sizes[1:]))


class Agent(nn.Module):
    """Actor (logits) and critic (value). Separate MLPs by default, or one shared body."""

    def __init__(self, obs_dim: int, n_actions: int, hidden_sizes=(64, 64), activation="tanh", shared_body=False):
        super().__init__()
        sizes = [obs_dim, *hidden_sizes]
        self.activation = {"tanh": torch.tanh, "relu": torch.relu}[activation]
        self.shared_body = shared_body
        self.actor_body = hidden_layers(sizes)
        self.critic_body = self.actor_body if shared_body else hidden_layers(sizes)
        self.actor_head = layer_init(nn.Linear(sizes[-1], n_actions), gain=0.01)
        self.critic_head = layer_init(nn.Linear(sizes[-1], 1), gain=1.0)

    def features(self, body: nn.ModuleList, x: torch.Tensor) -> torch.Tensor:
        # F.linear on the layers' tensors skips nn.Module call overhead: halves the rollout's forward time
        for layer in body:
            x = self.activation(F.linear(x, layer.weight, layer.bias))
        return x

    def logits(self, obs: torch.Tensor) -> torch.Tensor:
        return self.actor_head(self.features(self.actor_body, obs))

    def value(self, obs: torch.Tensor) -> torch.Tensor:
        return self.critic_head(self.features(self.critic_body, obs)).squeeze(-1)

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(batch, obs_dim) -> logits (batch, n_actions), values (batch,)"""
        actor_features = self.features(self.actor_body, obs)
        critic_features = actor_features if self.shared_body else self.features(self.critic_body, obs)
        return self.actor_head(actor_features), self.critic_head(critic_features).squeeze(-1)


def numpy_policy_logits(agent: Agent):
    """The actor's forward pass in numpy, for the rollout on CPU. It reads the weights through views of
    the torch parameters, so it follows every optimizer step. For one step of a few observations,
    torch's per-call overhead dominates: numpy computes the same numbers 4x faster."""
    layers = [(layer.weight.detach().numpy().T, layer.bias.detach().numpy()) for layer in agent.actor_body]
    head_weight, head_bias = agent.actor_head.weight.detach().numpy().T, agent.actor_head.bias.detach().numpy()
    activation = np.tanh if agent.activation is torch.tanh else (lambda x: np.maximum(x, 0.0))

    def logits(obs: np.ndarray) -> np.ndarray:
        for weight, bias in layers:
            obs = activation(obs @ weight + bias)
        return obs @ head_weight + head_bias

    return logits


def sample_actions(logits: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Samples from softmax(logits) row by row (Gumbel-max trick); (num_envs, n_actions) -> (num_envs,).
    Plain numpy on a few numbers: far cheaper per step than a torch Categorical."""
    return np.argmax(logits + rng.gumbel(size=logits.shape), axis=1)


def collect_rollout(envs, agent: Agent, obs: np.ndarray, mask: Optional[np.ndarray], num_steps: int, gamma: float,
                    bootstrap_truncation: bool, rng: np.random.Generator, device: torch.device,
                    episode_returns: np.ndarray, episode_lengths: np.ndarray):
    """Runs the policy num_steps steps in every env.

    mask holds the legal actions in obs (num_envs, n_actions), or is None when the env gives no action masks.
    Returns (rollout, next_obs, next_mask, finished) where rollout holds numpy arrays of shape
    (num_steps, num_envs, ...) and torch tensors of log-probs, and finished lists each ended episode as
    (step_index, env_index, raw_return, length). Truncated steps get reward + gamma * V(final_obs)
    when bootstrap_truncation is on, so GAE can treat every done as an episode end.
    episode_returns and episode_lengths (num_envs,) carry the running episodes across rollouts."""
    num_envs = envs.num_envs
    observations = np.empty((num_steps, *obs.shape), dtype=np.float32)  # (num_steps, num_envs, obs_dim)
    actions = np.empty((num_steps, num_envs), dtype=np.int64)
    rewards = np.empty((num_steps, num_envs), dtype=np.float32)
    dones = np.empty((num_steps, num_envs), dtype=np.float32)
    masks = None if mask is None else np.empty((num_steps, *mask.shape), dtype=bool)  # (num_steps, num_envs, n_actions)
    truncations = []  # (step, env, final_obs) of episodes cut by a time limit
    finished = []
    policy_logits = numpy_policy_logits(agent) if device.type == "cpu" else (
        lambda obs: agent.logits(torch.from_numpy(obs).to(device)).cpu().numpy())
    with torch.inference_mode():  # one context for the whole loop, not one per step
        for step in range(num_steps):
            observations[step] = obs
            logits = policy_logits(obs)
            if mask is not None:
                masks[step] = mask
                logits = np.where(mask, logits, MASKED_LOGIT)
            actions[step] = sample_actions(logits, rng)
            obs, reward, terminated, truncated, info = envs.step(actions[step])
            obs = np.asarray(obs, dtype=np.float32)
            if mask is not None:
                mask = legal_actions(info)
                if mask is None:
                    fail(f"the env gave an action mask at reset but not at step {step}: give one after every step")
            rewards[step] = reward
            done = terminated | truncated
            dones[step] = done
            episode_returns += reward
            episode_lengths += 1
            if done.any():
                for env_index in np.flatnonzero(done):
                    finished.append((step, env_index, episode_returns[env_index], episode_lengths[env_index]))
                    if bootstrap_truncation and truncated[env_index] and not terminated[env_index]:
                        truncations.append((step, env_index, info["final_obs"][env_index]))
                episode_returns[done] = 0.0
                episode_lengths[done] = 0

    # One batched forward pass scores the whole rollout: log-probs, values, V(next obs), V(final obs).
    final_obs = np.array([o for _, _, o in truncations], dtype=np.float32).reshape(-1, obs.shape[1])
    all_obs = np.concatenate([observations.reshape(-1, obs.shape[1]), obs, final_obs])
    with torch.inference_mode():
        all_logits, all_values = agent(torch.from_numpy(all_obs).to(device))
    batch_size = num_steps * num_envs
    flat_actions = torch.from_numpy(actions.reshape(-1)).to(device)
    flat_masks = None if masks is None else torch.from_numpy(masks.reshape(batch_size, -1)).to(device)
    log_probs = masked_log_probs(all_logits[:batch_size], flat_masks)  # (batch, n_actions), for the exact KL
    logprobs = log_probs.gather(1, flat_actions[:, None]).squeeze(1)
    all_values = all_values.cpu().numpy()
    values = all_values[:batch_size].reshape(num_steps, num_envs)
    next_value = all_values[batch_size : batch_size + num_envs]
    for (step, env_index, _), final_value in zip(truncations, all_values[batch_size + num_envs :]):
        rewards[step, env_index] += gamma * final_value
    rollout = dict(obs=observations, actions=actions, rewards=rewards, dones=dones, values=values,
                   next_value=next_value, logprobs=logprobs, log_probs=log_probs, masks=flat_masks)
    return rollout, obs, mask, finished


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


def masked_log_probs(logits: torch.Tensor, masks: Optional[torch.Tensor]) -> torch.Tensor:
    """log softmax over the legal actions (masks: True = legal, or None): an illegal action gets probability
    exactly 0, adds exactly 0 to the entropy and to the KL, and its logit gets no gradient."""
    if masks is not None:
        logits = torch.where(masks, logits, MASKED_LOGIT)
    return F.log_softmax(logits, dim=-1)


def categorical_kl(old_log_probs: torch.Tensor, new_log_probs: torch.Tensor) -> torch.Tensor:
    """The exact KL[pi_old || pi] of each state, sum_a pi_old(a) (log pi_old(a) - log pi(a)); (batch, n) -> (batch,)."""
    return (old_log_probs.exp() * (old_log_probs - new_log_probs)).sum(-1)


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
        loss = torch.where(clip_stops(ratio, advantages, clip_coef), 0.0, -advantages * new_logprob).mean()
    elif objective == "none":
        loss = (-advantages * ratio).mean()
    else:  # kl-fixed, kl-adaptive
        loss = (-advantages * ratio).mean() + kl_beta * kl
    return loss, logratio


def clip_stops(ratio: torch.Tensor, advantages: torch.Tensor, clip_coef: float) -> torch.Tensor:
    """The samples whose ratio left [1 - eps, 1 + eps] in their advantage's direction: there the clipped
    surrogate is constant, and PPOG drops them."""
    return ((advantages > 0) & (ratio > 1 + clip_coef)) | ((advantages < 0) & (ratio < 1 - clip_coef))


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
    clipped_values = torch.clamp(new_values, old_values - clip_coef, old_values + clip_coef)
    return 0.5 * torch.max(unclipped, (clipped_values - returns) ** 2).mean()


def autograd_loss_gradient(agent: Agent, grads: torch.Tensor, minibatch: dict, args: Args, clip_coef: float,
                           ent_coef: float, kl_beta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The PPO loss of a minibatch, and its gradient by autograd into grads (the optimizer's flat gradient, of
    which the parameters' .grad are views). Returns [policy loss, value loss, entropy] and the log ratio of each
    sample, detached."""
    logits, new_values = agent(minibatch["obs"])
    log_probs = masked_log_probs(logits, minibatch.get("masks"))
    new_logprob = log_probs.gather(1, minibatch["actions"][:, None]).squeeze(1)
    entropy = -(log_probs.exp() * log_probs).sum(-1).mean()
    penalized = args.objective in ("kl-fixed", "kl-adaptive")
    kl = categorical_kl(minibatch["log_probs"], log_probs).mean() if penalized else None
    pg_loss, logratio = policy_loss(new_logprob, minibatch["logprobs"], minibatch["advantages"], args.objective,
                                    clip_coef, kl, kl_beta)
    v_loss = value_loss(new_values, minibatch["values"], minibatch["returns"], clip_coef, args.clip_vloss)
    loss = pg_loss - ent_coef * entropy + args.vf_coef * v_loss
    grads.zero_()
    loss.backward()
    return torch.stack([pg_loss, v_loss, entropy]).detach(), logratio.detach()


def numpy_loss_gradient(agent: Agent):
    """The loss and gradient of autograd_loss_gradient, with the chain rule written out in numpy, for the CPU.
    For networks this small, torch's per-operation cost (autograd's above all) outweighs the arithmetic: this
    takes a third of autograd's time per minibatch. tests/ check it against autograd for every objective and
    option, and train() does after the first update of every run.
    Returns loss_gradient(minibatch, args, clip_coef, ent_coef, kl_beta): it writes the gradient into the
    parameters' .grad (through numpy views, as it reads the parameters) and returns what autograd_loss_gradient does."""
    def numpy_views(layers):  # (W, b, dW, db) of each layer, sharing memory with the torch tensors
        return [(layer.weight.detach().numpy(), layer.bias.detach().numpy(), layer.weight.grad.numpy(),
                 layer.bias.grad.numpy()) for layer in layers]

    actor_body, critic_body = numpy_views(agent.actor_body), numpy_views(agent.critic_body)
    (actor_head,), (critic_head,) = numpy_views([agent.actor_head]), numpy_views([agent.critic_head])
    tanh = agent.activation is torch.tanh

    def body_forward(layers, x):  # -> the input of every layer, and the last layer's output
        inputs = []
        for weight, bias, _, _ in layers:
            inputs.append(x)
            x = x @ weight.T + bias
            x = np.tanh(x) if tanh else np.maximum(x, 0.0)
        return inputs, x

    def linear_backward(layer, x, d_y):  # y = x W^T + b: dW = dy^T x, db = the sum of dy's rows; returns dx = dy W
        weight, _, weight_grad, bias_grad = layer
        np.matmul(d_y.T, x, out=weight_grad)
        np.sum(d_y, axis=0, out=bias_grad)
        return d_y @ weight

    def body_backward(layers, inputs, features, d_features):
        for layer, x, y in reversed(list(zip(layers, inputs, inputs[1:] + [features]))):
            d_features = linear_backward(layer, x, d_features * (1 - y * y if tanh else y > 0))  # activation's slope

    def loss_gradient(minibatch: dict, args: Args, clip_coef: float, ent_coef: float, kl_beta: float):
        batch = {key: value.numpy() for key, value in minibatch.items()}
        obs, actions, advantages = batch["obs"], batch["actions"], batch["advantages"]
        n, rows = len(actions), np.arange(len(actions))

        # Forward: the networks, log pi (masked), the entropy, the ratio r = pi(a) / pi_old(a)
        actor_inputs, actor_features = body_forward(actor_body, obs)
        shared = agent.shared_body
        critic_inputs, critic_features = (actor_inputs, actor_features) if shared else body_forward(critic_body, obs)
        logits = actor_features @ actor_head[0].T + actor_head[1]  # (n, n_actions)
        new_values = (critic_features @ critic_head[0].T + critic_head[1])[:, 0]
        if "masks" in batch:
            logits = np.where(batch["masks"], logits, MASKED_LOGIT)
        log_probs = logits - logits.max(1, keepdims=True)
        log_probs -= np.log(np.exp(log_probs).sum(1, keepdims=True))
        probs = np.exp(log_probs)
        entropies = -(probs * log_probs).sum(1)
        new_logprob = log_probs[rows, actions]
        logratio = new_logprob - batch["logprobs"]
        ratio = np.exp(logratio)

        # The loss (for the logs) and d loss / d log pi(a): -A r / n (d r = r d log pi), -A / n for PPOG
        surrogate = -advantages * ratio
        d_logprob = surrogate / n
        if args.objective == "clip":
            pg_loss = np.maximum(surrogate, -advantages * np.clip(ratio, 1 - clip_coef, 1 + clip_coef)).mean()
            d_logprob = np.where(clip_stops(ratio, advantages, clip_coef), 0.0, d_logprob)
        elif args.objective == "ppog":
            stopped = clip_stops(ratio, advantages, clip_coef)
            pg_loss = np.where(stopped, 0.0, -advantages * new_logprob).mean()
            d_logprob = np.where(stopped, 0.0, -advantages / n)
        else:  # none, kl-fixed, kl-adaptive
            pg_loss = surrogate.mean()
        # d loss / d logits, from d log pi(a) = onehot(a) - pi and d(-H) = pi (log pi + H)
        d_logits = probs * ((ent_coef / n) * (log_probs + entropies[:, None]) - d_logprob[:, None])
        d_logits[rows, actions] += d_logprob
        if args.objective in ("kl-fixed", "kl-adaptive"):  # + beta KL[pi_old || pi]: d KL = pi - pi_old
            old_probs = np.exp(batch["log_probs"])
            pg_loss += kl_beta * (old_probs * (batch["log_probs"] - log_probs)).sum(1).mean()
            d_logits += (kl_beta / n) * (probs - old_probs)

        # The value loss and d loss / d V: vf_coef (V - R) / n, but 0 where the clipped prediction's error is the
        # larger (that prediction is constant)
        errors = new_values - batch["returns"]
        squared_errors = errors**2
        d_values = errors * (args.vf_coef / n)
        if args.clip_vloss:
            clipped_values = np.clip(new_values, batch["values"] - clip_coef, batch["values"] + clip_coef)
            clipped_errors = clipped_values - batch["returns"]
            squared_errors = np.maximum(squared_errors, clipped_errors**2)
            d_values = np.where(np.abs(errors) >= np.abs(clipped_errors), d_values, 0.0)
        v_loss = 0.5 * squared_errors.mean()

        # Backward through the heads and the hidden layers
        d_actor_features = linear_backward(actor_head, actor_features, d_logits)
        d_critic_features = linear_backward(critic_head, critic_features, d_values[:, None])
        if shared:  # one body, reached from both heads
            body_backward(actor_body, actor_inputs, actor_features, d_actor_features + d_critic_features)
        else:
            body_backward(actor_body, actor_inputs, actor_features, d_actor_features)
            body_backward(critic_body, critic_inputs, critic_features, d_critic_features)
        return torch.tensor([pg_loss, v_loss, entropies.mean()]), torch.from_numpy(logratio)

    return loss_gradient


def uses_numpy_gradient(args: Args, device: torch.device) -> bool:
    """Whether numpy_loss_gradient computes the update's gradient: on CPU, unless --no-numpy-gradient."""
    return args.numpy_gradient and device.type == "cpu"


def check_numpy_gradient(agent: Agent, optimizer: dict, minibatch: dict, args: Args, clip_coef: float,
                         ent_coef: float, kl_beta: float):
    """Stops the run unless numpy_loss_gradient equals autograd's gradient of the loss on this minibatch (to float
    rounding: relative error of the whole gradient < 1e-3): a loss changed without its derivative fails after the
    first update, instead of training on a wrong gradient."""
    autograd_loss_gradient(agent, optimizer["grads"], minibatch, args, clip_coef, ent_coef, kl_beta)
    expected = optimizer["grads"].clone()
    numpy_loss_gradient(agent)(minibatch, args, clip_coef, ent_coef, kl_beta)
    error = (torch.linalg.vector_norm(optimizer["grads"] - expected) / torch.linalg.vector_norm(expected)).item()
    if not error < 1e-3:
        fail(f"numpy_loss_gradient differs from autograd's gradient of the loss (relative error {error:.1e}): "
             f"if you changed the loss, run with --no-numpy-gradient or change its derivative to match")


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
    if uses_numpy_gradient(args, batch["obs"].device):
        loss_gradient = numpy_loss_gradient(agent)
    else:
        loss_gradient = partial(autograd_loss_gradient, agent, optimizer["grads"])
    batch_size = batch["obs"].shape[0]
    minibatch_size = batch_size // args.num_minibatches
    totals = torch.zeros(3, device=batch["obs"].device)  # summed on the device: no sync per minibatch
    logratios = torch.empty(args.update_epochs * args.num_minibatches, minibatch_size, device=batch["obs"].device)
    minibatches_seen, gradient_steps, grad_norms = 0, 0, torch.zeros((), device=batch["obs"].device)
    for epoch in range(args.update_epochs):
        order = torch.from_numpy(rng.permutation(batch_size))
        shuffled = {key: value[order] for key, value in batch.items() if value is not None}  # then cheap slices
        if args.norm_adv:  # each minibatch's advantages to mean 0 and std 1, every minibatch at once
            advantages = shuffled["advantages"].view(args.num_minibatches, minibatch_size)
            advantages = (advantages - advantages.mean(1, keepdim=True)) / (advantages.std(1, keepdim=True) + 1e-8)
            shuffled["advantages"] = advantages.view(-1)
        for start in range(0, batch_size, minibatch_size):
            minibatch = {key: value[start : start + minibatch_size] for key, value in shuffled.items()}
            losses, logratio = loss_gradient(minibatch, args, clip_coef, ent_coef, kl_beta)  # the gradient into .grad
            totals += losses
            logratios[minibatches_seen] = logratio  # the KL diagnostics come from all of them at the end
            minibatches_seen += 1
            if args.target_kl is not None:
                approx_kl = ((logratio.exp() - 1) - logratio).mean()  # the low-variance estimator, k3
                if mean_over_ranks_(approx_kl).item() > args.target_kl:
                    break  # the policy already moved far enough: no step on this minibatch, nor on any later one

            mean_over_ranks_(optimizer["grads"])  # under torchrun: the whole minibatch's gradient, the same on every rank
            grad_norms += clip_grad_norm(optimizer["grads"], args.max_grad_norm)
            adam_step(optimizer)
            gradient_steps += 1
        else:
            continue
        break  # target_kl reached: stop the whole update, not just this epoch
    with torch.no_grad():  # how far the whole update moved the policy (the d of kl-adaptive)
        new_log_probs = masked_log_probs(agent.logits(batch["obs"]), batch.get("masks"))
        kl = categorical_kl(batch["log_probs"], new_log_probs).mean()
        logratio = logratios[:minibatches_seen]  # every minibatch has the same size: the means are means over minibatches
        ratio = logratio.exp()
        diagnostics = torch.stack([(-logratio).mean(), ((ratio - 1) - logratio).mean(),  # KL estimators k1 and k3
                                   ((ratio - 1.0).abs() > clip_coef).float().mean(), kl])  # clip fraction, exact KL
    means = mean_over_ranks_(torch.cat([totals / minibatches_seen, diagnostics])).tolist()  # of the whole batch
    names = ["policy_loss", "value_loss", "entropy", "old_approx_kl", "approx_kl", "clipfrac", "kl"]
    grad_norm = (grad_norms / max(gradient_steps, 1)).item()  # before clipping, mean over the steps
    return dict(zip(names, means), gradient_steps=gradient_steps, grad_norm=grad_norm)


def flat_tensor(array: np.ndarray, device: torch.device) -> torch.Tensor:
    """(num_steps, num_envs, ...) numpy -> (num_steps * num_envs, ...) tensor, sharing memory on CPU."""
    return torch.from_numpy(array.reshape(-1, *array.shape[2:])).to(device)


def explained_variance(predicted: np.ndarray, target: np.ndarray) -> float:
    """1 - Var(target - predicted) / Var(target); nan when the target is constant."""
    target_variance = np.var(target)
    return np.nan if target_variance == 0 else float(1 - np.var(target - predicted) / target_variance)


def save_agent(path: str, agent: Agent, args: Args, obs_dim: int, n_actions: int):
    """A saved model is data: tensors plus plain metadata, loadable with weights_only=True."""
    torch.save(
        {
            "format": MODEL_FORMAT,
            "env_id": args.env_id,
            "obs_dim": obs_dim,
            "n_actions": n_actions,
            "hidden_sizes": list(args.hidden_sizes),
            "activation": args.activation,
            "shared_body": args.shared_body,
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
        fail(f"{flag} {path!r} is not a ppo_discrete.py {kind} (format {found!r}, expected {expected_format!r})")
    return saved


def load_agent(path: str) -> tuple[Agent, dict]:
    """Loads a model written by save_agent, never unpickling code. Bad files get a one-line error."""
    saved = load_data_file(path, "--load-model", MODEL_FORMAT, "model")
    try:
        agent = Agent(saved["obs_dim"], saved["n_actions"], tuple(saved["hidden_sizes"]), saved["activation"], saved["shared_body"])
        agent.load_state_dict(saved["state_dict"])
    except (KeyError, RuntimeError, TypeError) as error:
        fail(f"--load-model {path!r} has inconsistent contents ({type(error).__name__}: {str(error).splitlines()[0][:200]})")
    return agent, saved


def time_limit_of(env: gym.Env) -> Optional[gym.wrappers.TimeLimit]:
    while isinstance(env, gym.Wrapper):
        if isinstance(env, gym.wrappers.TimeLimit):
            return env
        env = env.env
    return None


def env_states(envs: gym.vector.SyncVectorEnv) -> Optional[list[dict]]:
    """Each env's random generator, time-limit counter and physical state, as tensors and plain data; None when
    an env keeps its physical state where it cannot be saved (only `unwrapped.state` arrays can: classic control)."""
    states = []
    for env in envs.envs:
        unwrapped, time_limit = env.unwrapped, time_limit_of(env)
        if not isinstance(getattr(unwrapped, "state", None), np.ndarray):
            return None
        states.append(dict(
            physics=torch.from_numpy(unwrapped.state.copy()),
            steps_beyond_terminated=getattr(unwrapped, "steps_beyond_terminated", None),
            elapsed_steps=time_limit._elapsed_steps if time_limit else None,
            np_random=unwrapped.np_random.bit_generator.state,
        ))
    return states


def restore_env_states(envs: gym.vector.SyncVectorEnv, states: list[dict]):
    for env, state in zip(envs.envs, states):
        unwrapped, time_limit = env.unwrapped, time_limit_of(env)
        unwrapped.state = state["physics"].numpy()
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


def evaluate(agent: Agent, env_id: str, episodes: int, seed: int, greedy: bool,
             video_dir: Optional[str] = None, device: torch.device = torch.device("cpu")) -> list[float]:
    """Plays whole episodes in one fresh env; returns their raw returns."""
    env = make_env(env_id, video_dir, record_every_episode=True)()
    rng = np.random.default_rng(seed)
    returns = []
    for episode in range(episodes):
        obs, info = env.reset(seed=seed + episode)
        episode_return, done = 0.0, False
        while not done:
            with torch.inference_mode():
                logits = agent.logits(torch.as_tensor(obs, dtype=torch.float32, device=device)[None]).cpu().numpy()
            mask = legal_actions(info)
            if mask is not None:
                logits = np.where(mask, logits, MASKED_LOGIT)
            action = int(np.argmax(logits, axis=1)[0] if greedy else sample_actions(logits, rng)[0])
            obs, reward, terminated, truncated, info = env.step(action)
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
    obs_dim, n_actions = envs.single_observation_space.shape[0], int(envs.single_action_space.n)
    agent = Agent(obs_dim, n_actions, args.hidden_sizes, args.activation, args.shared_body).to(device)
    optimizer = make_optimizer(agent, args.learning_rate)

    episodes, recent_returns, episode_count = [], deque(maxlen=100), 0
    episode_returns = np.zeros(envs.num_envs)  # raw return and length of each env's running episode
    episode_lengths = np.zeros(envs.num_envs, dtype=np.int64)
    global_step, start_iteration = 0, 1
    first_env_seed = args.seed + rank * envs.num_envs  # the N processes' envs get the seeds of one process's num_envs
    next_obs, info = envs.reset(seed=first_env_seed)
    next_obs, next_mask = np.asarray(next_obs, dtype=np.float32), legal_actions(info)
    kl_beta = args.kl_beta  # adapted after each update with --objective kl-adaptive
    if checkpoint:  # everything as it was at the end of the checkpoint's iteration
        agent.load_state_dict(checkpoint["agent"])
        optimizer.update(exp_avg=checkpoint["optimizer"]["exp_avg"].to(device), step=checkpoint["optimizer"]["step"],
                         exp_avg_sq=checkpoint["optimizer"]["exp_avg_sq"].to(device))
        global_step, start_iteration, kl_beta = checkpoint["global_step"], checkpoint["iteration"] + 1, checkpoint["kl_beta"]
        recent_returns.extend(checkpoint["recent_returns"])
        episode_count = checkpoint["episode_count"]
        own = checkpoint["ranks"][rank]  # this process's generators, envs and running episodes
        restore_rng_states(rng, own["rng"])
        if own["envs"] is not None:
            restore_env_states(envs, own["envs"])
            next_obs, next_mask = own["next_obs"].numpy(), own["next_mask"]
            next_mask = None if next_mask is None else next_mask.numpy()
            episode_returns, episode_lengths = own["episode_returns"].numpy(), own["episode_lengths"].numpy()
        else:
            if rank == 0:
                print(f"note: the state of {args.env_id} cannot be saved: the envs start new episodes (not bit for bit)")
            next_obs, info = envs.reset(seed=first_env_seed + global_step)
            next_obs, next_mask = np.asarray(next_obs, dtype=np.float32), legal_actions(info)
        if rank == 0:
            print(f"resuming {run_name} at step {global_step:,} (iteration {start_iteration})")

    purge_step = global_step + 1 if checkpoint else None
    writer = start_logging(args, run_name, run_dir, purge_step, world_size) if rank == 0 else ScalarWriter(None)

    def write_checkpoint(iteration: int):
        ranks = gather_from_ranks([dict(  # each process's own generators, envs and running episodes
            rng=rng_states(rng), envs=env_states(envs), next_obs=torch.from_numpy(next_obs.copy()),
            next_mask=None if next_mask is None else torch.from_numpy(next_mask.copy()),
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
            rollout, next_obs, next_mask, finished = collect_rollout(
                envs, agent, next_obs, next_mask, args.num_steps, args.gamma, args.bootstrap_truncation, rng, device,
                episode_returns, episode_lengths)
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
                         logprobs=rollout["logprobs"], log_probs=rollout["log_probs"], masks=rollout["masks"],
                         values=flat_tensor(rollout["values"], device), advantages=flat_tensor(advantages, device),
                         returns=flat_tensor(returns, device))
            stats = update(agent, optimizer, batch, args, rng, clip_coef, ent_coef, kl_beta)
            bad = first_non_finite(stats, optimizer)  # the same verdict on every rank: stats and parameters are shared
            if bad:
                kept = f"the last good checkpoint is {checkpoint_path}" if os.path.exists(checkpoint_path) else "no checkpoint was written"
                if rank == 0:
                    print(f"error: {bad} went non-finite in the update ending at step {global_step:,}; stopped, {kept}",
                          file=sys.stderr)
                raise SystemExit(3)
            if uses_numpy_gradient(args, device) and iteration == start_iteration:
                # after an update, where ratios and values have moved off the rollout's and the clips act
                minibatch_size = batch["obs"].shape[0] // args.num_minibatches  # this process's, as in update()
                first_minibatch = {key: value[:minibatch_size] for key, value in batch.items() if value is not None}
                check_numpy_gradient(agent, optimizer, first_minibatch, args, clip_coef, ent_coef, kl_beta)

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
                    print(f"stopped at step {global_step:,}; continue with: {launcher} ppo_discrete.py --resume {checkpoint_path}",
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
        save_agent(model_path, agent, args, obs_dim, n_actions)
        print(f"model saved to {model_path}")
    if rank == 0 and args.eval_episodes > 0 and not stopping:
        eval_returns = run_evaluation(agent, args, writer, run_name, device)
    if rank == 0:
        finish_logging(args, writer, run_name)
    if world_size > 1:
        dist.destroy_process_group()
    stopped = signal.Signals(stopping[0]) if stopping else None
    return dict(episodes=episodes, episode_count=episode_count, recent_returns=list(recent_returns), run_dir=run_dir,
                model_path=model_path, eval_returns=eval_returns, stopped=stopped, agent=agent)


def run_evaluation(agent: Agent, args: Args, writer, run_name: str, device: torch.device) -> list[float]:
    if args.capture_video:
        check_video_support()
    video_dir = f"videos/{run_name}-eval" if args.capture_video else None
    returns = evaluate(agent, args.env_id, args.eval_episodes, args.seed + 100_000, args.eval_greedy, video_dir, device)
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
    agent, saved = load_agent(args.load_model)
    if saved["env_id"] != args.env_id:
        fail(f"the model was trained on {saved['env_id']}: add --env-id {saved['env_id']}")
    env = make_env(args.env_id)()
    check_spaces(args.env_id, env.observation_space, env.action_space)
    if env.observation_space.shape[0] != saved["obs_dim"] or env.action_space.n != saved["n_actions"]:
        fail(f"the model's shapes do not fit {args.env_id}: it was saved for another env")
    env.close()
    args.eval_episodes = args.eval_episodes or 10
    run_name, run_dir = new_run_dir(f"{args.env_id}__{args.exp_name}-eval__{args.seed}__{int(time.time())}")
    writer = start_logging(args, run_name, run_dir)
    returns = run_evaluation(agent, args, writer, run_name, torch.device("cpu"))
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
