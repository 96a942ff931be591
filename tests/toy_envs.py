"""Tiny envs with known dynamics for the tests. Importing this module registers them, so a subprocess
can use them by id: --env-id tests.toy_envs:ImageObs-v0."""

import time

import gymnasium as gym
import numpy as np
from gymnasium.envs.classic_control import CartPoleEnv


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


class MaskedTradingEnv(gym.Env):
    """A toy market for action masking. The price alternates low (1) and high (3); observation
    [price is low, holding]; actions 0 wait, 1 buy, 2 sell. Buying while holding and selling without
    holding are illegal: the env raises, so a run that finishes never took one. A sale earns the price
    minus the purchase price; 20 steps per episode. Buying low and selling high scores 20; a random legal
    policy about 0. The legal actions come in info["action_mask"], or with mask_in_obs as an observation
    dict {"observation", "action_mask"}."""

    action_space = gym.spaces.Discrete(3)

    def __init__(self, mask_in_obs=False):
        self.mask_in_obs = mask_in_obs
        vector = gym.spaces.Box(0.0, 1.0, (2,), np.float32)
        mask = gym.spaces.Box(0, 1, (3,), np.int8)
        self.observation_space = (
            gym.spaces.Dict({"observation": vector, "action_mask": mask}) if mask_in_obs else vector
        )
        self.t, self.bought_at = 0, None

    def price(self):
        return 1.0 if self.t % 2 == 0 else 3.0

    def observe(self):
        vector = np.array([self.price() == 1.0, self.bought_at is not None], np.float32)
        mask = np.array([1, self.bought_at is None, self.bought_at is not None], np.int8)
        return (
            ({"observation": vector, "action_mask": mask}, {})
            if self.mask_in_obs
            else (vector, {"action_mask": mask})
        )

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t, self.bought_at = 0, None
        return self.observe()

    def step(self, action):
        reward = 0.0
        if action == 1:
            if self.bought_at is not None:
                raise ValueError("illegal action: buy while holding")
            self.bought_at = self.price()
        elif action == 2:
            if self.bought_at is None:
                raise ValueError("illegal action: sell without holding")
            reward, self.bought_at = self.price() - self.bought_at, None
        self.t += 1
        obs, info = self.observe()
        return obs, reward, self.t >= 20, False, info


gym.register("Counting-v0", entry_point=CountingEnv)
gym.register("MaskedTrading-v0", entry_point=MaskedTradingEnv)
gym.register("MaskedTradingDict-v0", entry_point=MaskedTradingEnv, kwargs={"mask_in_obs": True})
gym.register("ImageObs-v0", entry_point=ImageObsEnv)


class ShapedObsEnv(gym.Env):
    """Observations that are not one Box vector, made from the step count t: a (2, 3) matrix of t + 0, t + 1,
    ... in C order; a scalar t; a Discrete(4) t % 4; a Tuple of a Discrete(3) t % 3 and a vector [t, t + 1].
    Reward 1 a step; the episode ends after episode_length steps (None: never)."""

    SPACES = {
        "Matrix": gym.spaces.Box(-np.inf, np.inf, (2, 3), np.float32),
        "Scalar": gym.spaces.Box(-np.inf, np.inf, (), np.float32),
        "Discrete": gym.spaces.Discrete(4),
        "Tuple": gym.spaces.Tuple([gym.spaces.Discrete(3), gym.spaces.Box(-np.inf, np.inf, (2,), np.float32)]),
    }

    def __init__(self, kind, continuous=False, episode_length=5):
        self.kind = kind
        self.episode_length = episode_length
        self.observation_space = self.SPACES[kind]
        self.action_space = gym.spaces.Box(-1, 1, (1,), np.float32) if continuous else gym.spaces.Discrete(2)

    def observation(self):
        if self.kind == "Matrix":
            return np.arange(6, dtype=np.float32).reshape(2, 3) + self.t
        if self.kind == "Scalar":
            return np.array(self.t, dtype=np.float32)
        if self.kind == "Discrete":
            return self.t % 4
        return self.t % 3, np.array([self.t, self.t + 1], dtype=np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self.observation(), {}

    def step(self, action):
        self.t += 1
        return self.observation(), 1.0, self.t == self.episode_length, False, {}


for suffix, continuous in [("", False), ("Continuous", True)]:
    for kind in ShapedObsEnv.SPACES:
        gym.register(f"{kind}Obs{suffix}-v0", entry_point=ShapedObsEnv,
                     kwargs={"kind": kind, "continuous": continuous})
    gym.register(f"Endless{suffix}-v0", entry_point=ShapedObsEnv,  # no time limit either
                 kwargs={"kind": "Scalar", "continuous": continuous, "episode_length": None})


class ComboLockEnv(gym.Env):
    """MultiDiscrete actions and Dict observations, one step per episode. The observation tells the value each
    of the 2 components must take ("first": one-hot of 3, "second": one-hot of 4, and "noise"); the reward is
    1 per right component, 2 at best. The legal actions come in the observation's "action_mask" (3 + 4 flags):
    the second component's value 3 is never legal, and one wrong value of the first component is illegal in
    each episode. The env raises on an illegal action, so a run that finishes never took one."""

    action_space = gym.spaces.MultiDiscrete([3, 4])
    observation_space = gym.spaces.Dict(
        {
            "first": gym.spaces.Box(0, 1, (3,)),
            "second": gym.spaces.Box(0, 1, (4,)),
            "noise": gym.spaces.Box(-1, 1, (2,)),
            "action_mask": gym.spaces.Box(0, 1, (7,), np.int8),
        }
    )

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.target = [int(self.np_random.integers(3)), int(self.np_random.integers(3))]
        illegal_first = (self.target[0] + 1 + int(self.np_random.integers(2))) % 3
        self.mask = np.ones(7, np.int8)
        self.mask[[illegal_first, 3 + 3]] = 0
        first, second = (
            np.eye(3, dtype=np.float32)[self.target[0]],
            np.eye(4, dtype=np.float32)[self.target[1]],
        )
        noise = self.np_random.uniform(-1, 1, 2).astype(np.float32)
        return {"first": first, "second": second, "noise": noise, "action_mask": self.mask}, {}

    def step(self, action):
        if not (self.mask[action[0]] and self.mask[3 + action[1]]):
            raise ValueError(f"illegal action {action}")
        reward = float(action[0] == self.target[0]) + float(action[1] == self.target[1])
        obs, _ = self.reset()
        return obs, reward, True, False, {}


class BoxActionsEnv(gym.Env):
    """Box actions of a shape other than a vector ((2, 3), or a scalar), one step per episode: the reward is
    minus the squared distance of the action to a fixed target; the env raises on an action of another
    shape."""

    observation_space = gym.spaces.Box(-1, 1, (2,), np.float32)

    def __init__(self, shape=(2, 3)):
        self.action_space = gym.spaces.Box(-1, 1, shape, np.float32)
        self.target = np.linspace(-0.5, 0.5, int(np.prod(shape)), dtype=np.float32).reshape(shape)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros(2, np.float32), {}

    def step(self, action):
        if np.shape(action) != self.action_space.shape:
            raise ValueError(f"an action of shape {np.shape(action)}")
        return np.zeros(2, np.float32), -float(((action - self.target) ** 2).sum()), True, False, {}


gym.register("MatrixActions-v0", entry_point=BoxActionsEnv)
gym.register("ScalarAction-v0", entry_point=BoxActionsEnv, kwargs={"shape": ()})


class SwitchesEnv(gym.Env):
    """MultiBinary actions, one step per episode: the observation shows the position (0: off, 1: on) each of 4
    switches must take; the reward is 1 per switch set right, 4 at best. The last switch may only be turned on
    (info's action_mask: 2 flags a switch, off and on), and the env raises on an illegal action, so a run that
    finishes never took one."""

    action_space = gym.spaces.MultiBinary(4)
    observation_space = gym.spaces.Box(0, 1, (4,), np.float32)
    mask = np.array([1, 1, 1, 1, 1, 1, 0, 1], bool)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.target = self.np_random.integers(2, size=4)
        self.target[3] = 1
        return self.target.astype(np.float32), {"action_mask": self.mask.copy()}

    def step(self, action):
        if not self.action_space.contains(action) or action[3] != 1:
            raise ValueError(f"illegal action {action}")
        reward = float((np.asarray(action) == self.target).sum())
        obs, info = self.reset()
        return obs, reward, True, False, info


gym.register("Switches-v0", entry_point=SwitchesEnv)


class BrokenEnv(gym.Env):
    """An env that fails the way user envs do: its constructor raises, its observations do not fit the space
    it declares, its reset or step returns what the old gym API did, its reward is an array or None, it
    declares an rgb_array render mode that its constructor does not take; or it has spaces a script does not
    take."""

    observation_space = gym.spaces.Box(-1.0, 1.0, (3,), np.float32)
    action_space = gym.spaces.Discrete(2)

    def __init__(self, fault, continuous=False):
        if continuous:
            self.action_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
        if fault == "constructor":
            raise RuntimeError("the simulator failed to start")
        if fault == "multidiscrete":
            self.action_space = gym.spaces.MultiDiscrete([2, 3])
        if fault == "tuple":
            self.action_space = gym.spaces.Tuple([gym.spaces.Discrete(2), gym.spaces.Discrete(3)])
        if fault == "multibinary_grid":  # not a vector
            self.action_space = gym.spaces.MultiBinary((2, 3))
        if fault == "sequence":  # of any length: no one vector holds it
            self.observation_space = gym.spaces.Sequence(self.observation_space)
        if fault == "no_render_mode":  # says it renders, but its constructor takes no render_mode
            self.metadata = {"render_modes": ["rgb_array"]}
        self.fault = fault

    @classmethod
    def rendering(cls, fault, continuous=False, render_mode=None):
        """The env whose rgb_array render gives what fault names: None, or a grayscale (height, width)
        frame."""
        env = cls(fault, continuous)
        env.metadata = {"render_modes": ["rgb_array"], "render_fps": 30}
        env.render_mode = render_mode
        return env

    def render(self):
        if self.fault == "gray_frames":
            return np.zeros((32, 32), np.uint8)
        return None

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        if self.fault == "old_reset_api":  # the observation alone
            return np.zeros(3, np.float32)
        return np.zeros(5 if self.fault == "shape" else 3, np.float32), {}

    def step(self, action):
        if self.fault == "old_step_api":
            return np.zeros(3, np.float32), 0.0, True, {}
        if self.fault == "step_shape":  # (3, 1) after a step, (3,) at reset
            return np.zeros((3, 1), np.float32), 0.0, True, False, {}
        rewards = {"array_reward": np.array([0.0]), "none_reward": None}
        return np.zeros(3, np.float32), rewards.get(self.fault, 0.0), True, False, {}


class OldResetSignature(BrokenEnv):
    """The old gym API's reset, which takes no seed (and returns the observation alone)."""

    def reset(self):
        return np.zeros(3, np.float32)


for suffix, continuous in [("", False), ("Continuous", True)]:  # no time limit: the env's own step is seen
    for name, fault in [("OldStepApi", "old_step_api"), ("OldResetApi", "old_reset_api"),
                        ("ArrayReward", "array_reward"), ("NoneReward", "none_reward"),
                        ("WrongStepShape", "step_shape"), ("NoRenderMode", "no_render_mode")]:
        gym.register(f"{name}{suffix}-v0", entry_point=BrokenEnv,
                     kwargs={"fault": fault, "continuous": continuous})
    gym.register(f"OldResetSignature{suffix}-v0", entry_point=OldResetSignature,
                 kwargs={"fault": "old_reset_signature", "continuous": continuous})
gym.register("BrokenConstructor-v0", entry_point=BrokenEnv, kwargs={"fault": "constructor"})
gym.register("OldStepApiTimeLimit-v0", entry_point=BrokenEnv, kwargs={"fault": "old_step_api"},  # the wrapper's
             max_episode_steps=10)  # step unpacks the four values
gym.register("WrongShape-v0", entry_point=BrokenEnv, kwargs={"fault": "shape"})
gym.register("MultiDiscreteActions-v0", entry_point=BrokenEnv, kwargs={"fault": "multidiscrete"})
gym.register("TupleActions-v0", entry_point=BrokenEnv, kwargs={"fault": "tuple"})
gym.register("MultiBinaryGrid-v0", entry_point=BrokenEnv, kwargs={"fault": "multibinary_grid"})
for suffix, continuous in [("", False), ("Continuous", True)]:
    for name, fault in [("GrayFrames", "gray_frames"), ("NoFrames", "no_frames")]:
        gym.register(f"{name}{suffix}-v0", entry_point=BrokenEnv.rendering,
                     kwargs={"fault": fault, "continuous": continuous})
gym.register("SequenceObs-v0", entry_point=BrokenEnv, kwargs={"fault": "sequence"})
gym.register("ComboLock-v0", entry_point=ComboLockEnv)


class OwnStateEnv(gym.Env):
    """A user's env whose attributes have the names gymnasium's own envs keep their state in (`state`, `data`,
    `model`) but hold other things: the scripts must not take it for classic control or MuJoCo. Observation
    [position, 1]; reward 1 a step; an episode ends after 5 to 15 steps (terminated), or at the TimeLimit."""

    observation_space = gym.spaces.Box(-np.inf, np.inf, (2,), np.float32)

    def __init__(self, continuous=False):
        self.action_space = gym.spaces.Box(-1, 1, (1,), np.float32) if continuous else gym.spaces.Discrete(2)
        self.state = np.zeros(2)  # [position, steps left]
        self.data = {"log": []}  # not MuJoCo's MjData
        self.model = "the user's own model"

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.state = np.array([0.0, self.np_random.integers(5, 16)])
        return np.array([0.0, 1.0], np.float32), {}

    def step(self, action):
        self.state += [float(np.sum(action)) - 0.5, -1]
        self.data["log"].append(float(self.state[0]))
        return np.array([self.state[0], 1.0], np.float32), 1.0, bool(self.state[1] <= 0), False, {}


class CartPoleWithExtraState(CartPoleEnv):
    """gymnasium's CartPole with state of its own beside `state`: a subclass is not the class the scripts
    know, so its state is not taken as CartPole's (half of it would be)."""

    def step(self, action):
        self.extra = getattr(self, "extra", 0) + 1
        return super().step(action)


for suffix, limit in [("", 10), ("NoTimeLimit", None)]:
    gym.register(f"OwnState{suffix}-v0", entry_point=OwnStateEnv, max_episode_steps=limit)
    gym.register(f"OwnStateContinuous{suffix}-v0", entry_point=OwnStateEnv, max_episode_steps=limit,
                 kwargs={"continuous": True})
gym.register("CartPoleWithExtraState-v0", entry_point=CartPoleWithExtraState, max_episode_steps=500)
gym.register("CartPoleNoTimeLimit-v0", entry_point=CartPoleEnv)


class CountingFramesEnv(CountingEnv):
    """CountingEnv seen as Atari frames: a (4, 84, 84) uint8 stack whose every pixel is t."""

    observation_space = gym.spaces.Box(0, 255, (4, 84, 84), np.uint8)

    def reset(self, *, seed=None, options=None):
        obs, info = super().reset(seed=seed)
        return np.zeros((4, 84, 84), np.uint8), info

    def step(self, action):
        obs, reward, terminated, truncated, info = super().step(action)
        return np.full((4, 84, 84), self.t, np.uint8), reward, terminated, truncated, info


class NonFiniteEnv(CountingEnv):
    """CountingEnv (2 actions, or a Box of 1) whose reward, or observation, is nan at its 5th step."""

    def __init__(self, what="reward", continuous=False):
        super().__init__(episode_length=20)
        self.what = what
        self.action_space = gym.spaces.Box(-1, 1, (1,), np.float32) if continuous else gym.spaces.Discrete(2)

    def step(self, action):
        obs, reward, terminated, truncated, info = super().step(0)
        if self.t == 5 and self.what == "reward":
            reward = float("nan")
        if self.t == 5 and self.what == "observation":
            obs[0] = np.nan
        return obs, reward, terminated, truncated, info


for what in ["reward", "observation"]:
    gym.register(f"NonFinite{what.title()}-v0", entry_point=NonFiniteEnv, kwargs={"what": what})
    gym.register(f"NonFinite{what.title()}Continuous-v0", entry_point=NonFiniteEnv,
                 kwargs={"what": what, "continuous": True})


class EmptyObservationEnv(gym.Env):
    """Observations of size 0 (a Box of shape (0,)): nothing to learn from. 2 actions, or a Box of 1."""

    observation_space = gym.spaces.Box(-1, 1, (0,), np.float32)

    def __init__(self, continuous=False):
        self.action_space = gym.spaces.Box(-1, 1, (1,), np.float32) if continuous else gym.spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros(0, np.float32), {}

    def step(self, action):
        return np.zeros(0, np.float32), 1.0, False, False, {}


gym.register("EmptyObservation-v0", entry_point=EmptyObservationEnv, max_episode_steps=10)
gym.register("EmptyObservationContinuous-v0", entry_point=EmptyObservationEnv, max_episode_steps=10,
             kwargs={"continuous": True})


class FaultMidRunEnv(CountingEnv):
    """CountingEnv that, at its 300th step, raises SystemExit(5) ("exit"), hangs ("hang") after creating the
    file "hanging" in the working directory, or raises RuntimeError, and again when closed after ("close")."""

    def __init__(self, fault):
        super().__init__(episode_length=20)
        self.fault, self.steps = fault, 0

    def step(self, action):
        self.steps += 1
        if self.steps == 300 and self.fault == "exit":
            raise SystemExit(5)
        if self.steps == 300 and self.fault == "close":
            raise RuntimeError("the simulator stopped")
        if self.steps == 300:
            open("hanging", "w").close()
            while True:
                time.sleep(1)
        return super().step(action)

    def close(self):
        if self.fault == "close" and self.steps >= 300:
            raise RuntimeError("the simulator's connection is gone")


gym.register("ExitsMidRun-v0", entry_point=FaultMidRunEnv, kwargs={"fault": "exit"})
gym.register("HangsMidRun-v0", entry_point=FaultMidRunEnv, kwargs={"fault": "hang"})
gym.register("FailsToClose-v0", entry_point=FaultMidRunEnv, kwargs={"fault": "close"})
