"""Mutation check: does a test fail when a realistic PPO bug goes in? Each mutant replaces one piece of code
in the named scripts (the three copies of a shared definition alike, so the copies test stays green), in a
copy of the repository, and runs the tests that should catch it. Prints killed (with the first failing test)
or SURVIVED for each, and the table for benchmarks/README.md. Run by hand, not in CI (about 20 minutes on 2
cores):

    python benchmarks/mutants.py                 # every mutant
    python benchmarks/mutants.py 3 17            # mutants 3 and 17
    python benchmarks/mutants.py --check         # only that each mutant's code is found, once, in its scripts
"""

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from typing import NamedTuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DISCRETE, CONTINUOUS, ATARI = "ppo_discrete.py", "ppo_continuous.py", "ppo_atari.py"
ALL = (DISCRETE, CONTINUOUS, ATARI)


class Mutant(NamedTuple):
    place: str  # what the bug touches
    scripts: tuple  # where the code is replaced
    code: str  # the code as it is (found exactly once in each script)
    bug: str  # the code with the bug
    tests: str  # pytest arguments: the tests that should catch it


MUTANTS = [
    # advantages
    Mutant(
        "GAE: lambda dropped",
        ALL,
        "gamma * gae_lambda * not_done[t]",
        "gamma * not_done[t]",
        "tests/test_discrete.py -k gae",
    ),
    Mutant(
        "GAE: the recursion crosses episode ends",
        ALL,
        "gae_lambda * not_done[t] * last_advantage",
        "gae_lambda * last_advantage",
        "tests/test_discrete.py -k gae",
    ),
    Mutant(
        "GAE: the TD error bootstraps across a done",
        ALL,
        "gamma * following_values * not_done - values",
        "gamma * following_values - values",
        "tests/test_discrete.py -k gae",
    ),
    Mutant(
        "GAE: returns without the values",
        ALL,
        "return advantages, advantages + values",
        "return advantages, advantages",
        "tests/test_discrete.py -k gae",
    ),
    # the policy objectives
    Mutant(
        "clip: min for max (the pessimistic bound lost)",
        ALL,
        "torch.max(-advantages * ratio, -advantages * clipped_ratio)",
        "torch.min(-advantages * ratio, -advantages * clipped_ratio)",
        "tests/test_formulas.py -k total_loss",
    ),
    Mutant(
        "clip: the clipped term uses the raw ratio",
        ALL,
        "-advantages * clipped_ratio).mean()",
        "-advantages * ratio).mean()",
        "tests/test_formulas.py -k total_loss",
    ),
    Mutant(
        "ratio: old / new",
        ALL,
        "logratio = new_logprob - old_logprob",
        "logratio = old_logprob - new_logprob",
        "tests/test_formulas.py -k total_loss",
    ),
    Mutant(
        "KL penalty: sign",
        ALL,
        "(-advantages * ratio).mean() + kl_beta * kl",
        "(-advantages * ratio).mean() - kl_beta * kl",
        "tests/test_formulas.py -k total_loss",
    ),
    Mutant(
        "PPOG: the stop ignores negative advantages",
        ALL,
        "((advantages < 0) & (ratio < 1 - clip_coef))",
        "((advantages < 0) & (ratio > 1 + clip_coef))",
        "tests/test_variants.py -k ppog",
    ),
    # the value loss
    Mutant(
        "value clip around the returns, not the old values",
        ALL,
        "old_values + torch.clamp(new_values - old_values, -clip_coef, clip_coef)",
        "returns + torch.clamp(new_values - returns, -clip_coef, clip_coef)",
        "tests/test_formulas.py -k total_loss",
    ),
    Mutant(
        "value clip: min for max",
        ALL,
        "0.5 * torch.max(unclipped,",
        "0.5 * torch.min(unclipped,",
        "tests/test_formulas.py -k total_loss",
    ),
    Mutant(
        "value loss: the 0.5 dropped (unclipped)",
        ALL,
        "return 0.5 * unclipped.mean()",
        "return unclipped.mean()",
        "tests/test_formulas.py -k total_loss",
    ),
    # each script's total loss
    Mutant(
        "ppo_discrete total loss: entropy sign",
        (DISCRETE,),
        "pg_loss - schedule.ent_coef * entropy",
        "pg_loss + schedule.ent_coef * entropy",
        "tests/test_formulas.py -k total_loss",
    ),
    Mutant(
        "ppo_continuous total loss: vf_coef dropped",
        (CONTINUOUS,),
        "+ args.vf_coef * v_loss",
        "+ v_loss",
        "tests/test_formulas.py -k total_loss",
    ),
    Mutant(
        "ppo_continuous total loss: entropy sign",
        (CONTINUOUS,),
        "pg_loss - schedule.ent_coef * entropy",
        "pg_loss + schedule.ent_coef * entropy",
        "tests/test_formulas.py -k total_loss",
    ),
    Mutant(
        "ppo_atari total loss: old values and returns swapped",
        (ATARI,),
        "value_loss(new_values, minibatch.values, minibatch.returns,",
        "value_loss(new_values, minibatch.returns, minibatch.values,",
        "tests/test_formulas.py -k total_loss",
    ),
    Mutant(
        "ppo_atari total loss: the flag's clip, not the iteration's",
        (ATARI,),
        "minibatch.advantages, args.objective,\n                                    schedule.clip_coef,",
        "minibatch.advantages, args.objective,\n                                    args.clip_coef,",
        "tests/test_formulas.py -k total_loss",
    ),
    Mutant(
        "ppo_continuous Gaussian entropy: mean over components",
        (CONTINUOUS,),
        "math.log(2 * math.pi) + log_stds).sum(-1).mean()",
        "math.log(2 * math.pi) + log_stds).mean()",
        "tests/test_formulas.py -k total_loss",
    ),
    Mutant(
        "ppo_discrete KL penalty: KL[pi || pi_old]",
        (DISCRETE,),
        "categorical_kl(minibatch.policy_log_probs, log_probs)",
        "categorical_kl(log_probs, minibatch.policy_log_probs)",
        "tests/test_formulas.py -k total_loss",
    ),
    Mutant(
        "Gaussian KL: the 0.5 dropped",
        (CONTINUOUS,),
        "0.5 * (variance_ratio + squared_distance - 1)",
        "(variance_ratio + squared_distance - 1)",
        "tests/test_variants.py -k gaussian_kl",
    ),
    Mutant(
        "Gaussian log-prob: the log std term dropped",
        (CONTINUOUS,),
        "(-0.5 * z**2 - log_std - 0.5",
        "(-0.5 * z**2 - 0.5",
        "tests/test_continuous.py -k gaussian_log_prob",
    ),
    # the update
    Mutant(
        "advantages normalized over the whole batch",
        ALL,
        "shuffled.advantages.view(args.num_minibatches, minibatch_size)",
        "shuffled.advantages.view(1, -1)",
        "tests/test_formulas.py -k minibatch",
    ),
    Mutant(
        "no shuffling between epochs",
        ALL,
        "order = torch.from_numpy(rng.permutation(batch_size))",
        "order = torch.arange(batch_size)",
        "tests/test_formulas.py -k minibatch",
    ),
    Mutant(
        "no gradient clipping",
        ALL,
        "clip_grad_norm_(agent.parameters(), args.max_grad_norm)",
        "clip_grad_norm_(agent.parameters(), float('inf'))",
        "tests/test_formulas.py -k clipped",
    ),
    Mutant(
        "gradients accumulate over minibatches",
        ALL,
        "            optimizer.zero_grad()\n",
        "",
        "tests/test_formulas.py -k clipped",
    ),
    Mutant(
        "learning-rate schedule: the first parameter group only",
        ALL,
        "for group in optimizer.param_groups:",
        "for group in optimizer.param_groups[:1]:",
        "tests/test_scripts.py -k every_parameter_group",
    ),
    Mutant(
        "target KL: stops the epoch, not the update",
        ALL,
        "        break  # target_kl reached: stop the whole update, not just this epoch\n",
        "",
        "tests/test_scripts.py -k target_kl",
    ),
    Mutant(
        "torchrun: gradients summed, not averaged",
        (ATARI,),
        "        tensor /= dist.get_world_size()\n",
        "",
        "tests/test_distributed.py -k averages",
    ),
    # schedules and the adaptive beta
    Mutant(
        "annealing one iteration early",
        ALL,
        "remaining = 1.0 - (iteration - 1.0) / num_iterations",
        "remaining = 1.0 - iteration / num_iterations",
        "tests/test_discrete.py -k anneal",
    ),
    Mutant(
        "entropy decay one update early",
        ALL,
        "args.ent_coef_decay ** (iteration - 1)",
        "args.ent_coef_decay ** iteration",
        "tests/test_variants.py -k entropy_coefficient",
    ),
    Mutant(
        "adaptive beta: halves when it should double",
        ALL,
        "        return kl_beta * 2\n",
        "        return kl_beta / 2\n",
        "tests/test_variants.py -k adapted_kl_beta",
    ),
    Mutant(
        "adaptive beta read from the approximate KL",
        (DISCRETE,),
        'stats["kl"] = policy_kl(agent, batch)',
        'stats["kl"] = stats["approx_kl"]',
        "tests/test_formulas.py -k adapts_beta",
    ),
    Mutant(
        "adaptive beta read from the approximate KL",
        (CONTINUOUS,),
        'stats["kl"] = policy_kl(agent, batch)',
        'stats["kl"] = stats["approx_kl"]',
        "tests/test_formulas.py -k adapts_beta",
    ),
    # sampling
    Mutant(
        "categorical sampling with Gaussian noise",
        (DISCRETE,),
        "logits.cpu().numpy() + rng.gumbel(size=tuple(logits.shape))",
        "logits.cpu().numpy() + rng.standard_normal(size=tuple(logits.shape))",
        "tests/test_formulas.py -k probabilities",
    ),
    Mutant(
        "ppo_atari acts greedily in the rollout",
        (ATARI,),
        "actions[step] = sample_actions(step_logits, rng)",
        "actions[step] = step_logits.argmax(-1).cpu().numpy()",
        "tests/test_formulas.py -k probabilities",
    ),
    Mutant(
        "Gaussian sampled with std = log_std",
        (CONTINUOUS,),
        "log_std.exp().cpu().numpy(), rng)",
        "log_std.cpu().numpy(), rng)",
        "tests/test_formulas.py -k gaussian",
    ),
    Mutant(
        "the rollout ignores the action mask",
        (DISCRETE,),
        "sample_actions(mask_logits(step_logits, state.mask), nvec, rng)",
        "sample_actions(step_logits, nvec, rng)",
        "tests/test_formulas.py -k legal",
    ),
    # the rollout's hand-off to the update
    Mutant(
        "the rollout's next value is the last stored step's",
        (DISCRETE,),
        "torch.stack(logits), values, rewards, dones, bootstrap[:num_envs])",
        "torch.stack(logits), values, rewards, dones, values[-1])",
        "tests/test_discrete_rollout.py",
    ),
    Mutant(
        "ppo_continuous stores the clipped action, not the sample scored",
        (CONTINUOUS,),
        "raw_obs, reward, terminated, truncated, info = envs.step(np.clip(actions[step], low, high))",
        "actions[step] = np.clip(actions[step], low, high)\n"
        "            raw_obs, reward, terminated, truncated, info = envs.step(actions[step])",
        "tests/test_continuous.py -k clipped_actions",
    ),
    # masks
    Mutant(
        "an illegal action keeps some probability",
        (DISCRETE,),
        "MASKED_LOGIT = -1e8",
        "MASKED_LOGIT = -10.0",
        "tests/test_variants.py -k masked_log_probs",
    ),
    Mutant(
        "a component with no legal action goes unnoticed",
        (DISCRETE,),
        "if not all(part.any(-1).all()",
        "if not all(mask.any(-1).all()",
        "tests/test_multidiscrete.py -k without_a_legal",
    ),
    Mutant(
        "MultiDiscrete: actions not offset into the side-by-side logits",
        (DISCRETE,),
        "flat(rollout.actions + np.cumsum([0, *nvec[:-1]]))",
        "flat(rollout.actions)",
        "tests/test_multidiscrete.py -k by_hand",
    ),
    # episode ends and truncation
    Mutant(
        "a truncation is not a done",
        (DISCRETE,),
        "dones[step] = terminated | truncated",
        "dones[step] = terminated",
        "tests/test_discrete_rollout.py",
    ),
    Mutant(
        "truncation bootstraps from the next episode's first observation",
        (DISCRETE,),
        'final_obs.append(np.asarray(info["final_obs"][env], np.float32))',
        "final_obs.append(state.obs[env])",
        "tests/test_discrete_rollout.py",
    ),
    Mutant(
        "ppo_continuous bootstraps from the raw final observation",
        (CONTINUOUS,),
        'final_obs.append(normalize(info["final_obs"][env], state.obs_rms, args.clip_obs))',
        'final_obs.append(info["final_obs"][env])',
        "tests/test_continuous.py -k truncation",
    ),
    Mutant(
        "ppo_atari treats a truncation as a termination",
        (ATARI,),
        "rewards[step, env] += args.gamma * final_value",
        "rewards[step, env] += 0.0 * final_value",
        "tests/test_formulas.py -k atari_truncation",
    ),
    Mutant(
        "ppo_atari trains on unclipped rewards",
        (ATARI,),
        "np.sign(reward) if args.clip_rewards else reward",
        "reward",
        "tests/test_atari.py -k clipped",
    ),
    # normalization
    Mutant(
        "running variance: the between-batch term dropped",
        (CONTINUOUS,),
        "+ delta**2 * self.count * count / total",
        "",
        "tests/test_continuous.py -k running_mean",
    ),
    Mutant(
        "observations divided by the variance, not the std",
        (CONTINUOUS,),
        "(obs_rms.var + 1e-8) ** 0.5",
        "(obs_rms.var + 1e-8)",
        "tests/test_continuous.py -k normalized",
    ),
    Mutant(
        "reward scaling: the discounted return not reset at an episode's end",
        (CONTINUOUS,),
        "    state.discounted_return[done] = 0.0",
        "    pass",
        "tests/test_continuous.py -k reward_scaling",
    ),
    # the network's initialization
    Mutant(
        "actor head initialized with gain 1",
        (DISCRETE,),
        "sum(nvec)), gain=0.01)",
        "sum(nvec)), gain=1.0)",
        "tests/test_discrete.py -k orthogonal",
    ),
    # checkpoints
    Mutant(
        "the checkpoint forgets the sampling generator",
        (DISCRETE,),
        "            rng.bit_generator.state = saved[\"generator\"]\n",
        "",
        "tests/test_reliability.py -k continues_bit_for_bit",
    ),
    Mutant(
        "the checkpoint forgets the optimizer's state",
        (CONTINUOUS,),
        'optimizer.load_state_dict(saved["optimizer"]["state_dict"])',
        "pass",
        "tests/test_reliability.py -k continues_bit_for_bit",
    ),
    Mutant(
        "the checkpoint forgets the observation statistics",
        (CONTINUOUS,),
        '            restore_data(state, saved["state"])\n',
        "",
        "tests/test_reliability.py -k continues_bit_for_bit",
    ),
    Mutant(
        "a damaged file's checksums are not verified",
        (DISCRETE,),
        "            raise ValueError(f\"{damaged} fails",
        "            print(f\"{damaged} fails",
        "tests/test_faults.py -k damaged",
    ),
    Mutant(
        "a model for another network is loaded without a check",
        (DISCRETE,),
        "        if missing or unexpected or misshaped:\n",
        "        if False:\n",
        "tests/test_scripts.py -k another_env",
    ),
    Mutant(
        "explained variance: 1 - Var(predicted) / Var(target)",
        ALL,
        "float(1 - np.var(target - predicted) / target_variance)",
        "float(1 - np.var(predicted) / target_variance)",
        "tests/test_discrete.py -k explained",
    ),
    Mutant(
        "observations clipped at 10, not at --clip-obs",
        (CONTINUOUS,),
        "state.obs = normalize(raw_obs, state.obs_rms, args.clip_obs)",
        "state.obs = normalize(raw_obs, state.obs_rms, 10.0)",
        "tests/test_continuous.py -k clip_obs",
    ),
    Mutant(
        "rewards clipped at 10, not at --clip-reward",
        (CONTINUOUS,),
        "-args.clip_reward, args.clip_reward)",
        "-10.0, 10.0)",
        "tests/test_continuous.py -k reward_scaling",
    ),
    Mutant(
        "--gae-lambda ignored (GAE at 0.95 whatever the flag)",
        ALL,
        "args.gamma, args.gae_lambda)",
        "args.gamma, 0.95)",
        "tests/test_wiring.py -k gae_lambda",
    ),
    Mutant(
        "--max-grad-norm ignored (the gradient clipped at 0.5 whatever the flag)",
        ALL,
        "clip_grad_norm_(agent.parameters(), args.max_grad_norm)",
        "clip_grad_norm_(agent.parameters(), 0.5)",
        "tests/test_wiring.py -k max_grad_norm",
    ),
    # 62-79: a second search (2026-12-06), of what the curves, evaluation and resume read
    Mutant(
        "ppo_continuous logs the scaled return, not the env's",
        (CONTINUOUS,),
        "state.episode_returns += reward",
        "state.episode_returns += rewards[step]",
        "tests/test_scripts.py -k logged_episodes",
    ),
    Mutant(
        "episodes logged one vector step early",
        (DISCRETE, CONTINUOUS),
        "(episode.step + 1) * self.args.num_envs",
        "episode.step * self.args.num_envs",
        "tests/test_scripts.py -k logged_episodes",
    ),
    Mutant(
        "rewards scaled by the return's variance, not its std",
        (CONTINUOUS,),
        "reward / np.sqrt(state.return_rms.var + 1e-8)",
        "reward / (state.return_rms.var + 1e-8)",
        "tests/test_continuous.py -k reward_scaling",
    ),
    Mutant(
        "the loss takes the flag's entropy coefficient, not the decayed one",
        ALL,
        "loss = pg_loss - schedule.ent_coef * entropy",
        "loss = pg_loss - args.ent_coef * entropy",
        "tests/test_wiring.py -k ent_coef_decay",
    ),
    Mutant(
        "ppo_discrete evaluation: --eval-greedy inverted",
        (DISCRETE,),
        "if args.eval_greedy:",
        "if not args.eval_greedy:",
        "tests/test_scripts.py -k greedy_evaluation",
    ),
    Mutant(
        "observation statistics updated with the previous observation",
        (CONTINUOUS,),
        "state.obs_rms.update(raw_obs)",
        "state.obs_rms.update(state.obs)",
        "tests/test_continuous.py -k normalized_final_observation",
    ),
    Mutant(
        "the update ignores the action mask (the rollout keeps it)",
        (DISCRETE,),
        "log_probs = masked_log_probs(logits, minibatch.masks, agent.nvec)",
        "log_probs = masked_log_probs(logits, None, agent.nvec)",
        "tests/test_multidiscrete.py -k components_probabilities",
    ),
    Mutant(
        "truncation bootstraps V(final obs) without gamma",
        ALL,
        "rewards[step, env] += args.gamma * final_value",
        "rewards[step, env] += final_value",
        "tests/test_discrete_rollout.py tests/test_continuous.py tests/test_formulas.py -k truncation",
    ),
    Mutant(
        "ppo_continuous steps the env with the unclipped sample",
        (CONTINUOUS,),
        "envs.step(np.clip(actions[step], low, high))",
        "envs.step(actions[step])",
        "tests/test_continuous.py -k clipped_actions",
    ),
    Mutant(
        "clipfrac logged against the flag's clip, not the iteration's",
        ALL,
        "clipfrac=((ratio - 1.0).abs() > schedule.clip_coef)",
        "clipfrac=((ratio - 1.0).abs() > args.clip_coef)",
        "tests/test_scripts.py -k logged_kl",
    ),
    Mutant(
        "approx_kl logged as old_approx_kl",
        ALL,
        "approx_kl=((ratio - 1) - logratio).mean()",
        "approx_kl=(-logratio).mean()",
        "tests/test_scripts.py -k logged_kl",
    ),
    Mutant(
        "resume forgets the adapted KL beta",
        ALL,
        'return self.iteration + 1, saved["counters"]["kl_beta"]',
        "return self.iteration + 1, self.args.kl_beta",
        "tests/test_reliability.py -k adapted_kl_beta",
    ),
    Mutant(
        "resume forgets the time limit's count of the running episodes",
        (DISCRETE, CONTINUOUS),
        'env.set_wrapper_attr("_elapsed_steps", state["elapsed_steps"])',
        "pass",
        "tests/test_reliability.py -k resume",
    ),
    Mutant(
        "ppo_continuous greedy evaluation samples",
        (CONTINUOUS,),
        "action = mean if args.eval_greedy else sample_actions(mean, np.exp(log_std), rng)",
        "action = sample_actions(mean, np.exp(log_std), rng)",
        "tests/test_continuous.py -k greedy_evaluation",
    ),
    Mutant(
        "ppo_continuous evaluation on unnormalized observations",
        (CONTINUOUS,),
        "obs = normalize(obs[None], state.obs_rms, args.clip_obs).astype(np.float32)",
        "obs = obs[None].astype(np.float32)",
        "tests/test_continuous.py -k normalization_statistics_survive",
    ),
    Mutant(
        "ppo_atari: --eval-greedy inverted",
        (ATARI,),
        "logits.argmax(-1)[0] if args.eval_greedy",
        "logits.argmax(-1)[0] if not args.eval_greedy",
        "tests/test_atari.py -k greedy_evaluation",
    ),
    Mutant(
        "ppo_continuous's ONNX policy takes no observation statistics",
        (CONTINUOUS,),
        "obs = normalize(obs, None if self.mean is None else self, self.clip_obs)",
        "obs = obs",
        "tests/test_onnx.py -k normalizes",
    ),
    Mutant(
        "an episode's return is not reset when it ends",
        (DISCRETE, CONTINUOUS),
        "state.episode_returns[env] = 0.0",
        "pass",
        "tests/test_scripts.py -k logged_episodes",
    ),
]


def apply(mutant: Mutant, tree: str):
    """Writes the mutant into the scripts of tree; an error if its code is not found exactly once in each."""
    for script in mutant.scripts:
        path = os.path.join(tree, script)
        text = open(path).read()
        if text.count(mutant.code) != 1:
            raise SystemExit(
                f"mutant {mutant.place!r}: its code is found {text.count(mutant.code)} times in {script}"
            )
        open(path, "w").write(text.replace(mutant.code, mutant.bug))


def run_tests(mutant: Mutant, tree: str) -> tuple[str, str, float]:
    """Runs the mutant's tests in tree (one process, stopping at the first failure): verdict, killing test,
    time."""
    start = time.time()
    command = [
        sys.executable,
        "-m",
        "pytest",
        "-x",
        "-q",
        "-n",
        "0",
        "-p",
        "no:cacheprovider",
        *mutant.tests.split(),
    ]
    result = subprocess.run(command, cwd=tree, capture_output=True, text=True, timeout=900)
    seconds = time.time() - start
    if result.returncode == 5:
        raise SystemExit(f"mutant {mutant.place!r}: no test selected by {mutant.tests!r}")
    if result.returncode == 0:
        return "SURVIVED", "", seconds
    failed = re.search(r"^(?:FAILED|ERROR) (\S+)", result.stdout, re.M)
    return "killed", failed.group(1) if failed else f"(exit {result.returncode})", seconds


def main():
    chosen = [int(arg) for arg in sys.argv[1:] if arg.isdigit()] or range(1, len(MUTANTS) + 1)
    with tempfile.TemporaryDirectory() as tree:
        files = subprocess.run(
            ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout
        for name in files.split():
            os.makedirs(os.path.join(tree, os.path.dirname(name)), exist_ok=True)
            shutil.copy2(os.path.join(ROOT, name), os.path.join(tree, name))
        originals = {script: open(os.path.join(tree, script)).read() for script in ALL}
        rows, start = [], time.time()
        for number in chosen:
            mutant = MUTANTS[number - 1]
            apply(mutant, tree)
            if "--check" not in sys.argv:
                verdict, test, seconds = run_tests(mutant, tree)
                rows.append(
                    f"| {number} | {mutant.place} | {', '.join(mutant.scripts)} | {verdict} | {test} |"
                )
                print(f"{number:2d} {verdict:8s} {seconds:5.0f} s  {mutant.place}: {test}", flush=True)
            for script, text in originals.items():
                open(os.path.join(tree, script), "w").write(text)
    if "--check" in sys.argv:
        print(f"{len(chosen)} mutants, each found once in its scripts")
        return
    killed = sum("| killed |" in row for row in rows)
    print(f"\n{killed} of {len(rows)} killed in {time.time() - start:.0f} s\n")
    print(
        "| # | mutant | scripts | verdict | first failing test |\n|---|---|---|---|---|\n" + "\n".join(rows)
    )


if __name__ == "__main__":
    main()
