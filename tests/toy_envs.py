"""Tiny envs with known dynamics for the tests. Importing this module registers them, so a subprocess
can use them by id: --env-id tests.toy_envs:ImageObs-v0."""

import gymnasium as gym
import numpy as np


class CountingEnv(gym.Env):
    """Observation [t, 1] where t counts the steps of the episode; reward = action + 1, so a reward
    of 0 would reveal a reset step whose action was ignored. Terminates after `episode_length`
    steps (None: never; wrap in TimeLimit to truncate)."""

    observation_space = gym.spaces.Box(-np.inf, np.inf, (2,), np.float32)
    action_space = gym.spaces.Discrete(3)

    def __init__(self, episode_length=3):
        self.episode_length = episode_length
        self.t = 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.array([0.0, 1.0], np.float32), {}

    def step(self, action):
        self.t += 1
        terminated = self.episode_length is not None and self.t >= self.episode_length
        return np.array([self.t, 1.0], np.float32), float(action + 1), terminated, False, {}


class ImageObsEnv(gym.Env):
    """Pixels in, discrete actions out: ppo_discrete.py must refuse it."""

    observation_space = gym.spaces.Box(0, 255, (84, 84, 3), np.uint8)
    action_space = gym.spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros((84, 84, 3), np.uint8), {}

    def step(self, action):
        return np.zeros((84, 84, 3), np.uint8), 0.0, True, False, {}


class BoundedActionEnv(gym.Env):
    """Continuous actions bounded to [-0.1, 0.1]; remembers every action it receives. Observation
    [t, 1]; reward 1 per step; never ends by itself (wrap in TimeLimit)."""

    observation_space = gym.spaces.Box(-np.inf, np.inf, (2,), np.float32)
    action_space = gym.spaces.Box(-0.1, 0.1, (2,), np.float32)

    def __init__(self):
        self.t = 0
        self.received = []

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.array([0.0, 1.0], np.float32), {}

    def step(self, action):
        self.received.append(np.array(action))
        self.t += 1
        return np.array([self.t, 1.0], np.float32), 1.0, False, False, {}


gym.register("Counting-v0", entry_point=CountingEnv)
gym.register("ImageObs-v0", entry_point=ImageObsEnv)
