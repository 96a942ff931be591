"""The mean return of a uniformly random policy over 20 episodes (reset seeds 0-19), per env: the 0 of
benchmarks/plot.py's normalized scores (NORMALIZE).

    python benchmarks/random_returns.py CartPole-v1 Acrobot-v1 HalfCheetah-v5
"""

import sys

from objectives import random_policy_score

if __name__ == "__main__":
    for env_id in sys.argv[1:]:
        print(env_id, round(random_policy_score(env_id), 1))
