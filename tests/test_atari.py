"""ppo_atari.py: CleanRL's protocol (no-ops, then FIRE and action 2, at a game's start and after each lost
life), preprocessing against frames computed by hand, episodic life, reward clipping, whole-game scores, the
protocol kept with a saved model."""

import contextlib
import glob
import itertools
import os

import cv2
import gymnasium as gym
import numpy as np
import pytest
import torch

import ppo_atari as ppo
from tests.checks import one_line_error, record_steps


class RecordingALE:
    """The emulator, with every action it is given recorded (one per frame)."""

    def __init__(self, ale):
        self.ale, self.actions = ale, []

    def act(self, action, *strength):
        self.actions.append(action.value)
        return self.ale.act(action, *strength)

    def __getattr__(self, name):
        return getattr(self.ale, name)


def test_noops_then_fire_at_a_game_start_and_fire_after_every_lost_life():
    # Breakout's actions: 0 NOOP, 1 FIRE, 2 RIGHT (ALE action 3), 3 LEFT; the agent only ever takes NOOP
    env = ppo.make_env(ppo.Args())()
    recorder = env.unwrapped.ale = RecordingALE(env.unwrapped.ale)
    obs, _ = env.reset(seed=3)
    noops = len(recorder.actions) - 8
    assert 1 <= noops <= 30 and recorder.actions == [0] * noops + [1] * 4 + [3] * 4  # 4 frames per step
    # the stack starts with the first frame repeated
    assert all(np.array_equal(frame, obs[0]) for frame in obs)
    lives, resets = [env.unwrapped.ale.lives()], 0
    while True:
        obs, _, terminated, truncated, info = env.step(0)
        if "episode" in info:
            break
        if terminated:  # a lost life ends the episode: the env is reset, the game goes on
            recorder.actions.clear()
            obs, _ = env.reset()
            assert recorder.actions == [0] * 4 + [1] * 4 + [3] * 4  # a no-op step, FIRE, action 2
            assert all(np.array_equal(frame, obs[0]) for frame in obs)
            lives.append(env.unwrapped.ale.lives())
            resets += 1
    assert lives == [5, 4, 3, 2, 1]  # without FIRE after a lost life the ball stays put: Breakout stalls at 4
    recorder.actions.clear()
    env.reset()  # the game is over: a new game, with no-ops first
    noops = len(recorder.actions) - 8
    assert 1 <= noops <= 30 and recorder.actions == [0] * noops + [1] * 4 + [3] * 4
    env.close()


def test_preprocessing_against_frames_built_by_hand():
    """Frame skip 4 with the max of the last two grayscale frames, resized to 84x84 (area interpolation),
    stacked oldest first, the first frame (after FIRE and action 2) repeated: computed from the emulator's own
    screens."""
    env = gym.make("ALE/Breakout-v5", frameskip=1, repeat_action_probability=0.0)
    env.reset(seed=0)
    ale = env.unwrapped.ale
    expected_frames = []
    actions = [1, 2, 2, 2, 3, 0, 1, 3]  # FIRE and 2 at the reset, then what the test sends
    for action in actions:
        frames = []
        for _ in range(4):
            env.step(action)
            frames.append(ale.getScreenGrayscale().copy())  # (210, 160)
        pooled = np.maximum(frames[-2], frames[-1])
        expected_frames.append(cv2.resize(pooled, (84, 84), interpolation=cv2.INTER_AREA))
    env.close()

    envs = ppo.make_envs(ppo.Args(num_envs=1, noop_max=0))
    obs, _ = envs.reset(seed=0)
    expected_stack = [expected_frames[1]] * 4
    np.testing.assert_array_equal(obs[0], np.stack(expected_stack))
    for t, action in enumerate(actions[2:], start=2):
        obs, *_ = envs.step(np.array([action]))
        expected_stack = expected_stack[1:] + [expected_frames[t]]
        np.testing.assert_array_equal(obs[0], np.stack(expected_stack), err_msg=f"step {t}")
    envs.close()


def untrained_rollouts(args, rng_seed=0):
    """(rollout, ended games) of an untrained agent, one after another, in envs made from args and reset with
    seed 0; each rollout samples with a generator seeded rng_seed."""
    envs = ppo.make_envs(args)
    state = ppo.restart_episodes(envs, args, seed=0)
    torch.manual_seed(0)
    agent = ppo.Agent(int(envs.single_action_space.n))
    try:
        while True:
            yield ppo.collect_rollout(
                envs, agent, state, args, np.random.default_rng(rng_seed), torch.device("cpu")
            )
    finally:
        envs.close()


def test_a_lost_life_ends_the_training_episode_but_not_the_game(tmp_path):
    with contextlib.closing(untrained_rollouts(ppo.Args(num_envs=2))) as play:
        # whole games with an untrained policy
        rollouts, finished_games = zip(*[next(play) for _ in range(4)])
    dones = np.concatenate([r.dones for r in rollouts])  # (512, 2)
    games = [
        (i * 128 + step, env, score, length)
        for i, f in enumerate(finished_games)
        for step, env, score, length in f
    ]
    assert games, "no game ended: raise the number of steps"
    for env in range(2):
        ends = [step for step, e, _, _ in games if e == env]
        # life losses are dones too: many more dones than ended games (Breakout has 5 lives)
        assert dones[:, env].sum() >= 4 * len(ends) and dones[:, env].sum() > len(ends)
        for step in ends:
            assert dones[step, env] == 1
    for env in range(2):
        previous_end = -1
        for step, _, score, length in sorted((g for g in games if g[1] == env), key=lambda g: g[0]):
            steps = step - previous_end  # the game's agent steps, over all its lives
            # in frames: 4 per step (fewer at the last), plus the no-ops, FIRE and action 2 steps of the
            # resets
            assert 4 * (steps - 1) < length <= 4 * steps + 30 + 8 + 4 * 12
            previous_end = step
            assert score >= 0


def test_whole_game_score_is_the_raw_sum_of_unclipped_rewards():
    # SpaceInvaders pays 5 to 30 points per invader: clipped training rewards are 1, the logged score is raw
    collected_rewards, games = [], []
    with contextlib.closing(
        untrained_rollouts(ppo.Args(env_id="ALE/SpaceInvaders-v5", num_envs=1), 1)
    ) as play:
        for rollout, finished in itertools.islice(play, 12):
            collected_rewards.append(rollout.rewards[:, 0])
            games += finished
            if games:
                break
    assert games, "no game ended"
    assert games[0][2] > np.concatenate(collected_rewards).sum() > 0  # raw points > number of rewarded steps


def test_rewards_are_clipped_to_their_sign_for_training():
    # SpaceInvaders pays 5 to 30 points per invader; the same seeds with and without clipping: the same play
    rewards = {}
    for clip in [True, False]:
        args = ppo.Args(env_id="ALE/SpaceInvaders-v5", num_envs=2, clip_rewards=clip)
        with contextlib.closing(untrained_rollouts(args, rng_seed=1)) as play:
            rewards[clip] = next(play)[0].rewards
    assert rewards[False].max() > 1  # the raw rewards are not in {-1, 0, 1}
    np.testing.assert_array_equal(rewards[True], np.sign(rewards[False]))
    assert set(np.unique(rewards[True])) <= {-1.0, 0.0, 1.0}


def test_a_saved_model_is_evaluated_with_its_own_protocol(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    protocol = dict(sticky_actions=True, noop_max=5, episodic_life=False)
    ppo.train(
        ppo.Args(total_timesteps=512, num_envs=2, num_steps=256, update_epochs=1, save_model=True, **protocol)
    )
    (model_path,) = glob.glob("runs/*/ppo_atari.model")
    model = ppo.load_data_file(ppo.Args(load_model=model_path))
    args = ppo.resumed_args(ppo.Args(load_model=model_path, eval_episodes=1), model)
    assert {name: getattr(args, name) for name in protocol} == protocol  # not the command line's defaults
    capsys.readouterr()  # the training's output
    error = one_line_error(
        capsys, lambda: ppo.resumed_args(ppo.Args(load_model=model_path), model, given={"sticky_actions"})
    )
    assert "drop --sticky-actions (saved: True)" in error


def test_greedy_evaluation_takes_each_observations_most_likely_action(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = ppo.Args(total_timesteps=256, num_envs=2, num_steps=128, update_epochs=1, save_model=True)
    summary = ppo.train(args)
    made = record_steps(ppo, monkeypatch)
    ppo.evaluate_saved_model(ppo.Args(load_model=summary["model_path"], eval_episodes=1, eval_greedy=True))
    steps = made[-1].steps  # the evaluation's game (made last)
    with torch.no_grad():  # one observation at a time, as evaluation plays
        greedy = [summary["agent"](torch.as_tensor(obs[None]))[0].argmax().item() for obs, _ in steps]
    assert steps and [int(action) for _, action in steps] == greedy


def test_non_atari_and_unknown_ids_are_refused(capsys):
    for env_id, message in [("CartPole-v1", "not an Atari game"), ("ALE/NoSuchGame-v5", "cannot make"),
                            ("ALE/breakout-v5", "doesn't exist in namespace ALE. Did you mean: `Breakout`?"),
                            ("ALE/Breakout-v1", "is deprecated. Please use `ALE/Breakout-v5` instead.")]:
        assert message in one_line_error(capsys, lambda: ppo.check_atari_id(env_id))
    ppo.check_atari_id("BreakoutNoFrameskip-v4")


def test_bf16_trunk_stays_close_to_float32_and_fp32_is_exact():
    torch.manual_seed(0)
    agent = ppo.Agent(4).to(memory_format=torch.channels_last)
    obs = torch.randint(0, 255, (16, 4, 84, 84), dtype=torch.uint8)
    with torch.no_grad():
        logits, values = agent(obs)
        agent.bf16 = True
        logits_bf16, values_bf16 = agent(obs)
    assert logits_bf16.dtype == torch.float32 and values_bf16.dtype == torch.float32  # heads stay float32
    assert not torch.equal(values, values_bf16)  # the trunk really ran in bfloat16
    torch.testing.assert_close(values_bf16, values, rtol=0.05, atol=0.02)
    log_probs, log_probs_bf16 = torch.log_softmax(logits, -1), torch.log_softmax(logits_bf16, -1)
    assert (log_probs_bf16 - log_probs).abs().max() < 1e-3  # ratios of 1 +- 0.001 from precision alone
    assert (
        ppo.use_bf16("fp32", torch.device("cpu")) is False
        and ppo.use_bf16("bf16", torch.device("cpu")) is True
    )
    assert ppo.use_bf16("auto", torch.device("cpu")) is False  # bf16 on shared CPU cores crawls


def test_a_rollout_beyond_memory_is_refused_before_anything_runs(capsys):
    """A step stores 4 frames of 84x84 bytes (and the update a shuffled copy): counted so, not at 100
    bytes."""
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    num_steps = memory // (8 * 4 * 84 * 84) + 1  # the frames of 8 envs alone fill the memory
    line = one_line_error(capsys, lambda: ppo.check_args(ppo.Args(num_envs=8, num_steps=num_steps)))
    assert "--num-envs * --num-steps would need over" in line


def test_env_kwargs_reach_the_game_and_a_clash_with_the_protocol_is_one_line(capsys):
    game = ppo.make_env(ppo.Args(env_kwargs={"mode": 4, "difficulty": 1}))().unwrapped
    assert (game._game_mode, game._game_difficulty) == (4, 1)
    message = one_line_error(capsys, lambda: ppo.check_env(ppo.Args(env_kwargs={"frameskip": 4})))
    assert "multiple values for keyword argument 'frameskip'" in message

