"""PPO for Atari from pixels (Breakout, Pong, SpaceInvaders, ...), in one file.

    python ppo_atari.py                                            # ALE/Breakout-v5, 10M steps, logs to runs/
    python ppo_atari.py --env-id ALE/SpaceInvaders-v5 --help        # every flag, with its meaning
    python ppo_atari.py --load-model runs/RUN/ppo_atari.model --eval-episodes 3 --capture-video

The algorithm box: set up envs and the network; then each iteration (1) roll out num_steps in
num_envs envs, (2) compute GAE advantages, (3) run update_epochs of minibatch updates on the
clipped surrogate + clipped value loss - entropy bonus, (4) log to TensorBoard.
Flag names and defaults are CleanRL's ppo_atari.py. The envs run in ale-py's native vector env
(C++ threads, preprocessing included); --env-backend gymnasium gives the same observations through
gymnasium's Python wrappers. charts/episodic_return is the raw score of a whole game (all lives).
Under `torchrun --nproc_per_node N ppo_atari.py ...` (one process per GPU, or several CPU processes) each
process steps num_envs/N of the envs and the gradient of every minibatch is averaged over the processes:
the flags keep meaning the global totals.
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

import ale_py
import gymnasium as gym
import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
import tyro

MODEL_FORMAT = "ppo_atari/1"  # written into every saved model, checked on load
CHECKPOINT_FORMAT = "ppo_atari/checkpoint/2"


@dataclass
class Args:
    exp_name: str = os.path.basename(__file__)[: -len(".py")]
    """the name of this experiment (part of the run name)"""
    seed: int = 1
    """seed of the experiment (python, numpy, torch and the envs)"""
    torch_deterministic: bool = True
    """if toggled, sets `torch.backends.cudnn.deterministic=True`"""
    cuda: bool = True
    """if toggled, uses CUDA when it is available"""
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    """the CNN trunk's arithmetic: bf16 runs it under bfloat16 autocast (weights, heads, losses and Adam stay
    float32); auto picks bf16 where the hardware computes it natively (a CPU with AMX or AVX512-BF16: 1.7x faster
    updates; a CUDA GPU with bf16) and fp32 elsewhere"""
    track: bool = False
    """if toggled, logs the run to Weights and Biases (WANDB_MODE=offline works without network)"""
    wandb_project_name: str = "cleanRL"
    """the Weights and Biases project name"""
    wandb_entity: Optional[str] = None
    """the Weights and Biases entity (team)"""
    capture_video: bool = False
    """if toggled, records MP4 videos of whole games under `videos/{run_name}/` (through the gymnasium backend)"""

    env_id: str = "ALE/Breakout-v5"
    """the Atari game, as gymnasium 1.4 with ale-py names it (ALE/Breakout-v5; BreakoutNoFrameskip-v4 names the
    same game). Only the game is taken from the id: the protocol is set by the flags below"""
    total_timesteps: int = 10000000
    """total environment steps of the training, summed over all envs"""
    learning_rate: float = 2.5e-4
    """the learning rate of the Adam optimizer"""
    num_envs: int = 8
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

    env_backend: Literal["ale", "gymnasium"] = "ale"
    """ale: ale-py's native vector env (preprocessing in C++ threads); gymnasium: Python wrappers, same observations"""
    sticky_actions: bool = False
    """if toggled, repeats the previous action with probability 0.25 (the ALE v5 protocol); off as in CleanRL"""
    noop_max: int = 30
    """at most this many no-op frames at the start of each game"""
    episodic_life: bool = True
    """if toggled, a lost life ends the training episode (no bootstrapping across it) but not the game"""
    clip_rewards: bool = True
    """if toggled, trains on the sign of each reward; logged returns stay the raw game scores"""
    bootstrap_truncation: bool = True
    """if toggled, a time-limit truncation (108,000 frames) bootstraps from V(final obs); --no-bootstrap-truncation
    treats it as a termination, as CleanRL does"""
    torch_threads: int = 0
    """CPU threads for torch (0 keeps torch's default, one per core: best for the CNN)"""
    save_model: bool = False
    """if toggled, saves the trained agent to `runs/{run_name}/{exp_name}.model`"""
    eval_episodes: int = 0
    """after training (or with --load-model), evaluates this many episodes and logs eval/episodic_return"""
    eval_greedy: bool = False
    """if toggled, evaluation takes the most likely action; by default it samples from the policy, since a greedy
    Atari policy can stall (never pressing FIRE) until the 108,000-frame limit"""
    load_model: Optional[str] = None
    """path of a saved model: evaluates it (and records it with --capture-video) without training"""
    checkpoint_every: int = 100_000
    """every this many steps (and when the run is stopped), saves all it needs to go on to
    runs/{run_name}/checkpoint.pt, atomically; 0: never"""
    resume: Optional[str] = None
    """path of a checkpoint.pt: continues that run with its own flags, in its own run directory and
    TensorBoard curves; the games themselves cannot be saved: they start anew (see the README)"""


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
    if args.noop_max < 0:
        fail(f"--noop-max must be >= 0, got {args.noop_max}")
    if args.checkpoint_every < 0:
        fail(f"--checkpoint-every must be >= 0 (0: no checkpoints), got {args.checkpoint_every}")
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


MAX_FRAMES_PER_GAME = 108_000  # 30 minutes of play: the standard time limit, reached as a truncation


def atari_game(env_id: str) -> str:
    """The ALE game an id names ("ALE/Breakout-v5", "BreakoutNoFrameskip-v4" -> "breakout"); one-line error otherwise."""
    gym.register_envs(ale_py)
    try:
        spec = gym.spec(env_id)
    except gym.error.Error as error:
        fail(f"cannot make --env-id {env_id!r}: {str(error).splitlines()[0]}; Atari games are named like ALE/Breakout-v5")
    if not str(spec.entry_point).startswith("ale_py"):
        fail(f"{env_id} is not an Atari game: use ppo_discrete.py or ppo_continuous.py")
    return spec.kwargs["game"]


class FireOnReset(gym.Wrapper):
    """Presses FIRE for one frame after each reset, as ale-py's vector env does: games like Breakout wait for it."""

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        if self.env.unwrapped.get_action_meanings()[1] == "FIRE":
            obs, _, terminated, truncated, info = self.env.step(1)
            if terminated or truncated:
                obs, info = self.env.reset(**kwargs)
        return obs, info


def make_env(env_id: str, sticky_actions: bool, noop_max: int, record_video_to: Optional[str] = None):
    """Returns a thunk for one Atari env through gymnasium's wrappers: no-op starts, FIRE on reset, frame skip 4
    with max-pooling of the last two frames, 84x84 grayscale, a stack of the last 4 frames (zeros before the first).
    With record_video_to, records whole games in color."""

    def thunk():
        env = gym.make(env_id, frameskip=1, repeat_action_probability=0.25 if sticky_actions else 0.0,
                       full_action_space=False, max_num_frames_per_episode=MAX_FRAMES_PER_GAME,
                       render_mode="rgb_array" if record_video_to else None)
        if record_video_to is not None:
            env = gym.wrappers.RecordVideo(env, record_video_to, episode_trigger=lambda game: True)
        env = FireOnReset(env)
        env = gym.wrappers.AtariPreprocessing(env, noop_max=noop_max, frame_skip=4, screen_size=84, grayscale_obs=True)
        return gym.wrappers.FrameStackObservation(env, 4, padding_type="zero")

    return thunk


def make_envs(args: Args, run_name: str, rank: int = 0, world_size: int = 1):
    """This process's num_envs/world_size Atari envs with SAME_STEP autoreset, in ale-py's native vector env or
    gymnasium's wrappers: observations (num_envs, 4, 84, 84) uint8, raw rewards, info["lives"]. Life losses and
    reward clipping are handled by the rollout, so both backends give the same thing. With --capture-video,
    rank 0's first env records."""
    game = atari_game(args.env_id)
    num_envs = args.num_envs // world_size
    if args.capture_video:
        check_video_support()
        if args.env_backend == "ale":
            if rank == 0:
                print("--capture-video records through gymnasium's wrappers: using --env-backend gymnasium")
            args.env_backend = "gymnasium"
    if args.env_backend == "ale":
        return ale_py.vector_env.AtariVectorEnv(
            game, num_envs, autoreset_mode=gym.vector.AutoresetMode.SAME_STEP,
            repeat_action_probability=0.25 if args.sticky_actions else 0.0, noop_max=args.noop_max,
            use_fire_reset=True, frameskip=4, maxpool=True, img_height=84, img_width=84, grayscale=True, stack_num=4,
            episodic_life=False, reward_clipping=False, max_num_frames_per_episode=MAX_FRAMES_PER_GAME)
    thunks = [make_env(args.env_id, args.sticky_actions, args.noop_max,
                       f"videos/{run_name}" if args.capture_video and rank == 0 and i == 0 else None)
              for i in range(num_envs)]
    return gym.vector.SyncVectorEnv(thunks, autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)


def check_video_support():
    try:
        import moviepy  # noqa: F401  (RecordVideo writes MP4s with it)
    except ImportError:
        fail("--capture-video needs moviepy: pip install moviepy, or drop --capture-video")


def layer_init(layer: nn.Module, gain: float = np.sqrt(2), bias: float = 0.0) -> nn.Module:
    """Orthogonal weights scaled by gain, constant bias (Linear and Conv2d)."""
    nn.init.orthogonal_(layer.weight, gain)
    nn.init.constant_(layer.bias, bias)
    return layer


class Agent(nn.Module):
    """The Nature-DQN CNN trunk shared by a policy head and a value head. Pixels in [0, 255] are scaled to [0, 1]."""

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

    def value(self, obs: torch.Tensor) -> torch.Tensor:
        return self.forward(obs)[1]


def use_bf16(precision: str, device: torch.device) -> bool:
    """Whether --precision runs the trunk in bfloat16 on this device."""
    if precision != "auto":
        return precision == "bf16"
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return torch.cpu._is_amx_tile_supported() or torch.cpu._is_avx512_bf16_supported()


def sample_actions(logits: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Samples from softmax(logits) row by row (Gumbel-max trick); (num_envs, n_actions) -> (num_envs,).
    Plain numpy on a few numbers: far cheaper per step than a torch Categorical."""
    return np.argmax(logits + rng.gumbel(size=logits.shape), axis=1)


def collect_rollout(envs, agent: Agent, obs: np.ndarray, num_steps: int, args: Args, rng: np.random.Generator,
                    device: torch.device, game_scores: np.ndarray, game_lengths: np.ndarray, lives: np.ndarray):
    """Runs the policy num_steps steps in every env.

    Returns (rollout, next_obs, finished): rollout holds numpy arrays of shape (num_steps, num_envs, ...) and
    torch tensors of log-probs (of the actions taken, and of every action), finished lists each ended game as (step_index, env_index, raw score,
    length in agent steps). A lost life is a done for the advantages (episodic life) while the game goes on;
    rewards are clipped to their sign for training; truncated games get reward + gamma * V(final_obs) when
    bootstrap_truncation is on. game_scores, game_lengths and lives (num_envs,) carry over between rollouts."""
    num_envs = envs.num_envs
    observations = np.empty((num_steps, *obs.shape), dtype=np.uint8)  # (num_steps, num_envs, 4, 84, 84)
    actions = np.empty((num_steps, num_envs), dtype=np.int64)
    rewards = np.empty((num_steps, num_envs), dtype=np.float32)
    dones = np.empty((num_steps, num_envs), dtype=np.float32)
    log_probs = torch.empty((num_steps, num_envs, envs.single_action_space.n), device=device)  # for the exact KL
    values = torch.empty((num_steps, num_envs), device=device)
    truncations = []  # (step, env, final_obs) of games cut by the time limit
    finished = []
    with torch.inference_mode():  # the CNN's trunk is shared: one forward pass per step gives logits and values
        for step in range(num_steps):
            observations[step] = obs
            logits, values[step] = agent(torch.from_numpy(obs).to(device))
            actions[step] = sample_actions(logits.cpu().numpy(), rng)
            log_probs[step] = F.log_softmax(logits, dim=-1)
            obs, reward, terminated, truncated, info = envs.step(actions[step])
            game_over = terminated | truncated
            life_lost = (info["lives"] < lives) & ~game_over if args.episodic_life else np.zeros(num_envs, bool)
            lives[:] = info["lives"]  # after a game over: the new game's lives
            rewards[step] = np.sign(reward) if args.clip_rewards else reward
            dones[step] = game_over | life_lost
            game_scores += reward
            game_lengths += 1
            if game_over.any():
                for env_index in np.flatnonzero(game_over):
                    finished.append((step, env_index, game_scores[env_index], game_lengths[env_index]))
                    if args.bootstrap_truncation and truncated[env_index] and not terminated[env_index]:
                        truncations.append((step, env_index, info["final_obs"][env_index]))
                game_scores[game_over] = 0.0
                game_lengths[game_over] = 0

        bootstrap_obs = np.concatenate([obs, np.array([o for _, _, o in truncations], np.uint8).reshape(-1, *obs.shape[1:])])
        bootstrap_values = agent.value(torch.from_numpy(bootstrap_obs).to(device)).cpu().numpy()
    next_value = bootstrap_values[:num_envs]
    for (step, env_index, _), final_value in zip(truncations, bootstrap_values[num_envs:]):
        rewards[step, env_index] += args.gamma * final_value
    log_probs = log_probs.reshape(num_steps * num_envs, -1)
    logprobs = log_probs.gather(1, torch.from_numpy(actions.reshape(-1, 1)).to(device)).squeeze(1)
    rollout = dict(obs=observations, actions=actions, rewards=rewards, dones=dones, values=values.cpu().numpy(),
                   next_value=next_value, logprobs=logprobs, log_probs=log_probs)
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


def clip_grad_norm(parameters: list[nn.Parameter], max_norm: float) -> torch.Tensor:
    """Scales all gradients by one factor so that their global L2 norm is at most max_norm: the same
    operations as nn.utils.clip_grad_norm_ without its Python overhead (~10% of a minibatch step).
    Returns the norm before clipping."""
    grads = [p.grad for p in parameters]
    total_norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))
    torch._foreach_mul_(grads, torch.clamp(max_norm / (total_norm + 1e-6), max=1.0))
    return total_norm


def update(agent: Agent, optimizer: torch.optim.Optimizer, batch: dict, args: Args, rng: np.random.Generator,
           clip_coef: float, ent_coef: float, kl_beta: float) -> dict:
    """Minibatch epochs on the PPO loss. Returns the losses and diagnostics averaged over every
    minibatch of the update (not the last one only), and the number of gradient steps taken; with
    --objective kl-adaptive, also the exact KL[pi_old || pi] of the whole batch after the update ("kl"),
    which costs a forward pass of the CNN over the batch.
    With target_kl, the update stops at the first minibatch whose KL (measured before its step) exceeds it."""
    penalized = args.objective in ("kl-fixed", "kl-adaptive")
    batch_size = batch["obs"].shape[0]
    minibatch_size = batch_size // args.num_minibatches
    totals = torch.zeros(3, device=batch["obs"].device)  # summed on the device: no sync per minibatch
    logratios = torch.empty(args.update_epochs * args.num_minibatches, minibatch_size, device=batch["obs"].device)
    minibatches_seen, gradient_steps, grad_norms = 0, 0, torch.zeros((), device=batch["obs"].device)
    parameters = list(agent.parameters())
    for epoch in range(args.update_epochs):
        order = torch.from_numpy(rng.permutation(batch_size))
        shuffled = {key: value[order] for key, value in batch.items()}  # minibatches are then cheap slices
        if args.norm_adv:  # each minibatch's advantages to mean 0 and std 1, every minibatch at once
            advantages = shuffled["advantages"].view(args.num_minibatches, minibatch_size)
            advantages = (advantages - advantages.mean(1, keepdim=True)) / (advantages.std(1, keepdim=True) + 1e-8)
            shuffled["advantages"] = advantages.view(-1)
        for start in range(0, batch_size, minibatch_size):
            minibatch = {key: value[start : start + minibatch_size] for key, value in shuffled.items()}
            logits, new_values = agent(minibatch["obs"])
            log_probs = F.log_softmax(logits, dim=-1)
            new_logprob = log_probs.gather(1, minibatch["actions"][:, None]).squeeze(1)
            entropy = -(log_probs.exp() * log_probs).sum(-1).mean()
            kl = categorical_kl(minibatch["log_probs"], log_probs).mean() if penalized else None

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

            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            average_gradients(parameters)  # under torchrun: the whole minibatch's gradient, the same on every rank
            grad_norms += clip_grad_norm(parameters, args.max_grad_norm)
            optimizer.step()
            gradient_steps += 1
        else:
            continue
        break  # target_kl reached: stop the whole update, not just this epoch
    with torch.no_grad():
        logratio = logratios[:minibatches_seen]  # every minibatch has the same size: the means are means over minibatches
        ratio = logratio.exp()
        diagnostics = torch.stack([(-logratio).mean(), ((ratio - 1) - logratio).mean(),  # KL estimators k1 and k3
                                   ((ratio - 1.0).abs() > clip_coef).float().mean()])  # clip fraction
    averages = mean_over_ranks_(torch.cat([totals / minibatches_seen, diagnostics])).tolist()  # of the whole batch
    names = ["policy_loss", "value_loss", "entropy", "old_approx_kl", "approx_kl", "clipfrac"]
    grad_norm = (grad_norms / max(gradient_steps, 1)).item()  # before clipping, mean over the steps
    stats = dict(zip(names, averages), gradient_steps=gradient_steps, grad_norm=grad_norm)
    if args.objective == "kl-adaptive":
        with torch.inference_mode():  # how far the whole update moved the policy: the d of kl-adaptive
            new_log_probs = torch.cat([F.log_softmax(agent(batch["obs"][start : start + minibatch_size])[0], -1)
                                       for start in range(0, batch_size, minibatch_size)])
            stats["kl"] = mean_over_ranks_(categorical_kl(batch["log_probs"], new_log_probs).mean()).item()
    return stats


def flat_tensor(array: np.ndarray, device: torch.device) -> torch.Tensor:
    """(num_steps, num_envs, ...) numpy -> (num_steps * num_envs, ...) tensor, sharing memory on CPU."""
    return torch.from_numpy(array.reshape(-1, *array.shape[2:])).to(device)


def explained_variance(predicted: np.ndarray, target: np.ndarray) -> float:
    """1 - Var(target - predicted) / Var(target); nan when the target is constant."""
    target_variance = np.var(target)
    return np.nan if target_variance == 0 else float(1 - np.var(target - predicted) / target_variance)


def save_agent(path: str, agent: Agent, args: Args, n_actions: int):
    """A saved model is data: tensors plus plain metadata, loadable with weights_only=True."""
    torch.save(
        {
            "format": MODEL_FORMAT,
            "env_id": args.env_id,
            "game": atari_game(args.env_id),
            "n_actions": n_actions,
            "sticky_actions": args.sticky_actions,
            "noop_max": args.noop_max,
            "state_dict": {k: v.cpu() for k, v in agent.state_dict().items()},
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
        fail(f"{flag} {path!r} is not a ppo_atari.py {kind} (format {found!r}, expected {expected_format!r})")
    return saved


def load_agent(path: str) -> tuple[Agent, dict]:
    """Loads a model written by save_agent, never unpickling code. Bad files get a one-line error."""
    saved = load_data_file(path, "--load-model", MODEL_FORMAT, "model")
    try:
        agent = Agent(saved["n_actions"]).to(memory_format=torch.channels_last)
        agent.load_state_dict(saved["state_dict"])
    except (KeyError, RuntimeError, TypeError) as error:
        fail(f"--load-model {path!r} has inconsistent contents ({type(error).__name__}: {str(error).splitlines()[0][:200]})")
    return agent, saved


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


def evaluate(agent: Agent, args: Args, episodes: int, seed: int, video_dir: Optional[str] = None,
             device: torch.device = torch.device("cpu")) -> list[float]:
    """Plays whole games (all lives) in one fresh gymnasium env; returns their raw scores."""
    env = make_env(args.env_id, args.sticky_actions, args.noop_max, video_dir)()
    rng = np.random.default_rng(seed)
    scores = []
    for game in range(episodes):
        obs, _ = env.reset(seed=seed + game)
        score, done = 0.0, False
        while not done:
            with torch.inference_mode():
                logits = agent(torch.from_numpy(np.asarray(obs)[None]).to(device))[0].cpu().numpy()
            action = int(np.argmax(logits, axis=1)[0] if args.eval_greedy else sample_actions(logits, rng)[0])
            obs, reward, terminated, truncated, _ = env.step(action)
            score += float(reward)
            done = terminated or truncated
        scores.append(score)
    env.close()
    return scores


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


def average_gradients(parameters: list[nn.Parameter]):
    """Under torchrun: every gradient becomes its mean over all processes, in one all-reduce of their
    concatenation. Without torchrun: nothing."""
    if not dist.is_initialized():
        return
    flat = mean_over_ranks_(torch.cat([p.grad.reshape(-1) for p in parameters]))
    for p, chunk in zip(parameters, flat.split([p.numel() for p in parameters])):
        p.grad.copy_(chunk.view(p.shape))


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


def first_non_finite(stats: dict, agent: Agent) -> Optional[str]:
    """The first quantity of an update that is nan or inf, or None when all are finite."""
    for name in ["policy_loss", "value_loss", "entropy", "grad_norm"]:
        if not math.isfinite(stats[name]):
            return f"{name} ({stats[name]})"
    return None if all(torch.isfinite(p).all() for p in agent.parameters()) else "a network parameter"


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
            new_run_dir(f"{args.env_id.replace('/', '-')}__{args.exp_name}__{args.seed}__{int(time.time())}") if rank == 0 else None)
    checkpoint_path = os.path.join(run_dir, "checkpoint.pt")
    batch_size = args.num_envs * args.num_steps  # over all processes
    num_iterations = args.total_timesteps // batch_size

    seed_everything(args.seed, args.torch_deterministic)  # the same on every rank: the same initial network
    if args.torch_threads > 0:
        torch.set_num_threads(args.torch_threads)
    # Action sampling and minibatch shuffling; rank 0 draws what a run without torchrun draws.
    rng = np.random.default_rng(np.random.SeedSequence(args.seed, spawn_key=(rank,) if rank else ()))

    envs = make_envs(args, run_name, rank, world_size)
    n_actions = int(envs.single_action_space.n)
    agent = Agent(n_actions, use_bf16(args.precision, device)).to(device, memory_format=torch.channels_last)
    if rank == 0:
        print(f"device {device}, CNN trunk in {'bfloat16 autocast' if agent.bf16 else 'float32'} (--precision {args.precision})")
    optimizer = torch.optim.Adam(agent.parameters(), lr=args.learning_rate, eps=1e-5, fused=True)  # fused: ~15% faster updates

    episodes, recent_returns, episode_count = [], deque(maxlen=100), 0
    game_scores = np.zeros(envs.num_envs)  # raw score and length of each env's running game
    game_lengths = np.zeros(envs.num_envs, dtype=np.int64)
    global_step, start_iteration = 0, 1
    first_env_seed = args.seed + rank * envs.num_envs  # the N processes' envs get the seeds of one process's num_envs
    next_obs, info = envs.reset(seed=first_env_seed)
    lives = np.array(info["lives"])  # (num_envs,) lives left in each game, to detect a lost one
    kl_beta = args.kl_beta  # adapted after each update with --objective kl-adaptive
    if checkpoint:  # everything as it was at the end of the checkpoint's iteration
        agent.load_state_dict(checkpoint["agent"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        global_step, start_iteration, kl_beta = checkpoint["global_step"], checkpoint["iteration"] + 1, checkpoint["kl_beta"]
        recent_returns.extend(checkpoint["recent_returns"])
        episode_count = checkpoint["episode_count"]
        restore_rng_states(rng, checkpoint["ranks"][rank]["rng"])  # this process's generators
        if rank == 0:
            print("note: the emulators' state is not saved: the envs start new games")
        next_obs, info = envs.reset(seed=first_env_seed + global_step)
        lives = np.array(info["lives"])
        if rank == 0:
            print(f"resuming {run_name} at step {global_step:,} (iteration {start_iteration})")

    purge_step = global_step + 1 if checkpoint else None
    writer = start_logging(args, run_name, run_dir, purge_step, world_size) if rank == 0 else ScalarWriter(None)

    def write_checkpoint(iteration: int):
        ranks = gather_from_ranks([dict(rng=rng_states(rng))])  # each process's own generators
        if rank != 0:
            return
        writer.flush()  # every point up to the checkpoint is on disk before it
        save_checkpoint(checkpoint_path, dict(
            format=CHECKPOINT_FORMAT, args={k: list(v) if isinstance(v, tuple) else v for k, v in vars(args).items()},
            iteration=iteration, global_step=global_step, kl_beta=kl_beta,
            agent={k: v.cpu().clone() for k, v in agent.state_dict().items()}, optimizer=optimizer.state_dict(),
            recent_returns=list(recent_returns), episode_count=episode_count, ranks=ranks))

    interactive = sys.stdout.isatty()
    start_time, start_step, last_print = time.time(), global_step, 0.0
    stop_requests, stopping = [], []  # the signals this process got; the one that stops every process
    previous_handlers = catch_stop_signals(stop_requests)
    try:
        for iteration in range(start_iteration, num_iterations + 1):
            if args.anneal_lr:
                optimizer.param_groups[0]["lr"] = linear_decay(iteration, num_iterations, args.learning_rate)
            clip_coef = linear_decay(iteration, num_iterations, args.clip_coef) if args.anneal_clip else args.clip_coef
            ent_coef = decayed_ent_coef(iteration, args)

            # 1. Rollout
            rollout, next_obs, finished = collect_rollout(
                envs, agent, next_obs, args.num_steps, args, rng, device, game_scores, game_lengths, lives)
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
                         logprobs=rollout["logprobs"], log_probs=rollout["log_probs"],
                         values=flat_tensor(rollout["values"], device), advantages=flat_tensor(advantages, device),
                         returns=flat_tensor(returns, device))
            stats = update(agent, optimizer, batch, args, rng, clip_coef, ent_coef, kl_beta)
            bad = first_non_finite(stats, agent)
            if bad:  # the same verdict on every rank: stats and parameters are shared
                kept = f"the last good checkpoint is {checkpoint_path}" if os.path.exists(checkpoint_path) else "no checkpoint was written"
                if rank == 0:
                    print(f"error: {bad} went non-finite in the update ending at step {global_step:,}; stopped, {kept}",
                          file=sys.stderr)
                raise SystemExit(3)

            # 4. Log
            sps = int((global_step - start_step) / (time.time() - start_time))
            writer.add_scalar("charts/learning_rate", optimizer.param_groups[0]["lr"], global_step)
            for name in ["value_loss", "policy_loss", "entropy", "old_approx_kl", "approx_kl", "clipfrac", "kl", "grad_norm"]:
                if name in stats:
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
                    print(f"stopped at step {global_step:,}; continue with: {launcher} ppo_atari.py --resume {checkpoint_path}",
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
        save_agent(model_path, agent, args, n_actions)
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
    returns = evaluate(agent, args, args.eval_episodes, args.seed + 100_000, video_dir, device)
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
    agent.bf16 = use_bf16(args.precision, torch.device("cpu"))
    if atari_game(args.env_id) != saved["game"]:
        fail(f"the model was trained on {saved['env_id']}: add --env-id {saved['env_id']}")
    args.eval_episodes = args.eval_episodes or 10
    run_name, run_dir = new_run_dir(f"{args.env_id.replace('/', '-')}__{args.exp_name}-eval__{args.seed}__{int(time.time())}")
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
