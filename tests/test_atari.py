"""ppo_atari.py: the two env backends agree, preprocessing against frames computed by hand, episodic life,
FIRE on reset, whole-game scores."""

import cv2
import gymnasium as gym
import numpy as np
import pytest
import torch

import ppo_atari as ppo


def backend(name, num_envs=1, noop_max=0):
    args = ppo.Args(env_backend=name, num_envs=num_envs, noop_max=noop_max)
    return ppo.make_envs(args, "unused")


def test_both_backends_give_the_same_observations_rewards_and_lives():
    # deterministic protocol (no no-ops, no sticky actions), the same actions through a life loss and a game over
    fast, python = backend("ale"), backend("gymnasium")
    obs_fast, info_fast = fast.reset(seed=0)
    obs_python, info_python = python.reset(seed=0)
    np.testing.assert_array_equal(obs_fast, obs_python)
    actions = np.random.default_rng(0).integers(0, 4, size=(600, 1))
    game_overs = life_losses = 0
    lives = info_fast["lives"].copy()
    for action in actions:
        obs_fast, reward_fast, terminated_fast, truncated_fast, info_fast = fast.step(action)
        obs_python, reward_python, terminated_python, truncated_python, info_python = python.step(action)
        np.testing.assert_array_equal(obs_fast, obs_python)
        np.testing.assert_array_equal(reward_fast, reward_python)
        np.testing.assert_array_equal(terminated_fast, terminated_python)
        np.testing.assert_array_equal(info_fast["lives"], info_python["lives"])
        game_overs += int(terminated_fast[0])
        life_losses += int(info_fast["lives"][0] < lives[0])
        lives = info_fast["lives"].copy()
    assert game_overs >= 1 and life_losses >= 4  # the comparison went through both events
    fast.close()
    python.close()


def test_preprocessing_against_frames_built_by_hand():
    """Frame skip 4 with the max of the last two grayscale frames, resized to 84x84 (area interpolation),
    stacked oldest first, zeros before the first frame: computed from the emulator's own screens."""
    env = gym.make("ALE/Breakout-v5", frameskip=1, repeat_action_probability=0.0)
    env.reset(seed=0)
    ale = env.unwrapped.ale

    def screen():
        return ale.getScreenGrayscale().copy()  # (210, 160)

    env.step(1)  # FIRE on reset, one frame
    first = cv2.resize(screen(), (84, 84), interpolation=cv2.INTER_AREA)
    expected_frames = [first]
    actions = [2, 2, 3, 0, 1, 3]
    for action in actions:
        frames = []
        for _ in range(4):
            env.step(action)
            frames.append(screen())
        pooled = np.maximum(frames[-2], frames[-1])
        expected_frames.append(cv2.resize(pooled, (84, 84), interpolation=cv2.INTER_AREA))
    env.close()

    for name in ["ale", "gymnasium"]:
        envs = backend(name)
        obs, _ = envs.reset(seed=0)
        np.testing.assert_array_equal(obs[0], np.stack([np.zeros((84, 84), np.uint8)] * 3 + [first]))
        for t, action in enumerate(actions, start=1):
            obs, *_ = envs.step(np.array([action]))
            stack = [np.zeros((84, 84), np.uint8)] * max(0, 3 - t) + expected_frames[max(0, t - 3) : t + 1]
            np.testing.assert_array_equal(obs[0], np.stack(stack), err_msg=f"{name}, step {t}")
        envs.close()


@pytest.mark.parametrize("name", ["ale", "gymnasium"])
def test_fire_on_reset_launches_the_game(name):
    envs = backend(name)
    _, info = envs.reset(seed=0)
    assert info["frame_number"][0] == 1  # one frame of FIRE after the reset, no no-ops here
    envs.close()


def test_a_lost_life_ends_the_training_episode_but_not_the_game(tmp_path):
    envs = backend("ale", num_envs=2)
    args = ppo.Args(num_envs=2)
    state = ppo.restart_episodes(envs, args, seed=0)
    torch.manual_seed(0)
    agent = ppo.Agent(int(envs.single_action_space.n))
    rollouts, finished_games = [], []
    for _ in range(4):  # enough steps for whole games with an untrained policy
        rollout, finished = ppo.collect_rollout(envs, agent, state, args, np.random.default_rng(0), torch.device("cpu"))
        rollouts.append(rollout)
        finished_games.append(finished)
    envs.close()
    dones = np.concatenate([r.dones for r in rollouts])  # (512, 2)
    rewards = np.concatenate([r.rewards for r in rollouts])
    games = [(i * 128 + step, env, score, length) for i, f in enumerate(finished_games) for step, env, score, length in f]
    assert games, "no game ended: raise the number of steps"
    for env in range(2):
        ends = [step for step, e, _, _ in games if e == env]
        # life losses are dones too: many more dones than ended games (Breakout has 5 lives)
        assert dones[:, env].sum() >= 4 * len(ends) and dones[:, env].sum() > len(ends)
        for step in ends:
            assert dones[step, env] == 1
    assert set(np.unique(rewards)) <= {0.0, 1.0}  # clipped to the sign for training
    for env in range(2):
        previous_end = -1
        for step, _, score, length in sorted((g for g in games if g[1] == env), key=lambda g: g[0]):
            assert length == step - previous_end  # a game's length counts every agent step of all its lives
            previous_end = step
            assert score >= 0


def test_whole_game_score_is_the_raw_sum_of_unclipped_rewards():
    # SpaceInvaders pays 5 to 30 points per invader: clipped training rewards are 1, the logged score is raw
    args = ppo.Args(env_id="ALE/SpaceInvaders-v5", num_envs=1)
    envs = ppo.make_envs(args, "unused")
    state = ppo.restart_episodes(envs, args, seed=0)
    torch.manual_seed(0)
    agent = ppo.Agent(int(envs.single_action_space.n))
    collected_rewards, games = [], []
    for _ in range(12):
        rollout, finished = ppo.collect_rollout(envs, agent, state, args, np.random.default_rng(1), torch.device("cpu"))
        collected_rewards.append(rollout.rewards[:, 0])
        games += finished
        if games:
            break
    envs.close()
    assert games, "no game ended"
    assert games[0][2] > np.concatenate(collected_rewards).sum() > 0  # raw points > number of rewarded steps


def test_non_atari_and_unknown_ids_are_refused():
    for env_id, message in [("CartPole-v1", "not an Atari game"), ("ALE/NoSuchGame-v5", "cannot make")]:
        with pytest.raises(SystemExit) as exit_info:
            ppo.atari_game(env_id)
        assert exit_info.value.code == 2
    assert ppo.atari_game("BreakoutNoFrameskip-v4") == ppo.atari_game("ALE/Breakout-v5") == "breakout"


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
    assert ppo.use_bf16("fp32", torch.device("cpu")) is False and ppo.use_bf16("bf16", torch.device("cpu")) is True
