"""The mean return of a uniformly random policy over 20 episodes (reset seeds 0-19), per env: the 0 of
benchmarks/plot.py's normalized scores (NORMALIZE).

    python benchmarks/random_returns.py CartPole-v1 Acrobot-v1 HalfCheetah-v5
"""

import sys

import gymnasium as gym
import numpy as np


def random_return(env_id: str, episodes: int = 20) -> float:
    env = gym.make(env_id)
    env.action_space.seed(0)
    returns = []
    for episode in range(episodes):
        env.reset(seed=episode)
        total, done = 0.0, False
        while not done:
            _, reward, terminated, truncated, _ = env.step(env.action_space.sample())
            total += float(reward)
            done = terminated or truncated
        returns.append(total)
    return float(np.mean(returns))


if __name__ == "__main__":
    for env_id in sys.argv[1:]:
        print(env_id, round(random_return(env_id), 1))
