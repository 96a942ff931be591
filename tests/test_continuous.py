"""ppo_continuous.py: Gaussian policy, running normalization, action clipping, statistics that survive
save -> load -> evaluate, against values computed independently."""

import math
import os
import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest
import torch

import ppo_continuous as ppo
from tests.checks import assert_orthogonal_init, record_steps
from tests.test_scripts import ROOT, script_path
from tests.toy_envs import BoundedActionEnv


def test_observations_are_normalized_and_clipped_as_computed_by_hand_in_arrays_and_tensors():
    stats = ppo.RunningMeanStd(np.array([1.0, -2.0]), np.array([4.0, 0.25]))
    obs = np.array([[5.0, -2.5], [1.0, 100.0]])
    expected = [[2.0, -1.0], [0.0, 3.0]]  # (obs - mean) / std: 4/2, -0.5/0.5, 0/2, 102/0.5 clipped to 3
    np.testing.assert_allclose(ppo.normalize(obs, stats, 3.0), expected, rtol=1e-6)  # training: numpy
    as_tensors = ppo.RunningMeanStd(torch.tensor(stats.mean), torch.tensor(stats.var))  # the exported policy
    np.testing.assert_allclose(ppo.normalize(torch.tensor(obs), as_tensors, 3.0).numpy(), expected, rtol=1e-6)
    assert ppo.normalize(obs, None, 3.0) is obs  # --no-norm-obs


def test_the_rollout_clips_normalized_observations_at_clip_obs():
    args = ppo.Args(env_id="Pendulum-v1", num_envs=2, num_steps=64, clip_obs=0.5)
    envs = ppo.make_envs(args)
    agent = ppo.make_agent(args, envs.single_observation_space, envs.single_action_space)
    state = ppo.restart_episodes(envs, args, seed=0)
    rollout, _ = ppo.collect_rollout(envs, agent, state, args, np.random.default_rng(0), torch.device("cpu"))
    assert np.abs(rollout.obs).max() == 0.5  # reached: Pendulum's angular velocity is many stds at first
    assert np.abs(state.obs).max() <= 0.5


def test_running_mean_std_matches_numpy_over_uneven_batches():
    rng = np.random.default_rng(0)
    batches = [rng.normal(3.0, 2.0, size=(n, 5)) for n in (1, 7, 3, 100, 2)]
    rms = ppo.RunningMeanStd(np.zeros(5), np.ones(5))
    for batch in batches:
        rms.update(batch)
    everything = np.concatenate(batches)
    np.testing.assert_allclose(rms.mean, everything.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(rms.var, everything.var(axis=0), rtol=1e-10)
    assert rms.count == 113


def test_reward_scaling_matches_a_slow_reference():
    rng = np.random.default_rng(1)
    rewards = rng.normal(1.0, 3.0, size=(50, 3))
    dones = rng.random((50, 3)) < 0.1
    state = ppo.EnvState(None, None, None, None, ppo.RunningMeanStd(np.zeros(()), np.ones(())), np.zeros(3))
    args = ppo.Args(gamma=0.9, clip_reward=1.5)
    scaled = np.stack([ppo.scale_rewards(state, rewards[t], dones[t], args) for t in range(50)])
    assert np.abs(scaled).max() == 1.5  # the clip binds

    returns_seen, running = [], np.zeros(3)  # every discounted return so far, env by env
    for t in range(50):
        for env in range(3):
            running[env] = running[env] * 0.9 + rewards[t, env]
            returns_seen.append(running[env])
        variance = np.var(returns_seen)
        expected = np.clip(rewards[t] / math.sqrt(variance + 1e-8), -1.5, 1.5)
        np.testing.assert_allclose(scaled[t], expected, rtol=1e-9)
        running[dones[t]] = 0.0


def test_gaussian_log_prob_and_entropy_by_hand():
    actions = torch.tensor([[1.0, 0.0]])
    mean = torch.tensor([[0.0, 0.5]])
    log_std = torch.tensor([0.0, math.log(0.5)])
    # component 1: N(1; 0, 1) -> -0.5 - 0.5 log(2 pi); component 2: z = -1 -> -0.5 - log(0.5) - 0.5 log(2 pi)
    expected = (-0.5 - 0.5 * math.log(2 * math.pi)) + (-0.5 - math.log(0.5) - 0.5 * math.log(2 * math.pi))
    assert ppo.gaussian_log_prob(actions, mean, log_std).item() == pytest.approx(expected, rel=1e-6)
    # the loss's entropy: of N(., s^2) is 0.5 + 0.5 log(2 pi) + log s, summed over components
    agent = ppo.Agent(3, 2)
    with torch.no_grad():
        agent.actor_logstd.copy_(log_std)
    minibatch = ppo.Batch(
        torch.randn(4, 3),
        torch.randn(4, 2),
        torch.zeros(4, 2),
        torch.zeros(4, 2),
        torch.zeros(4),
        torch.zeros(4),
        torch.zeros(4),
        torch.zeros(4),
    )
    _, logs, _ = ppo.ppo_loss(agent, minibatch, ppo.Args(), ppo.Schedule(1.0, 0.2, 0.0, 0.0))
    assert logs["entropy"].item() == pytest.approx(
        2 * (0.5 + 0.5 * math.log(2 * math.pi)) + math.log(0.5), rel=1e-6
    )


def test_sampled_actions_have_the_policy_mean_and_std():
    rng = np.random.default_rng(0)
    mean, log_std = np.array([[1.0, -2.0]]), np.log(np.array([0.5, 2.0]))
    samples = np.concatenate([ppo.sample_actions(mean, np.exp(log_std), rng) for _ in range(20000)])
    np.testing.assert_allclose(samples.mean(axis=0), [1.0, -2.0], atol=0.05)
    np.testing.assert_allclose(samples.std(axis=0), [0.5, 2.0], rtol=0.03)


def bounded_rollout(num_steps, norm_obs=False, norm_reward=False, time_limit=None, gamma=0.9):
    make = (lambda: BoundedActionEnv()) if time_limit is None else (
        lambda: gym.wrappers.TimeLimit(BoundedActionEnv(), max_episode_steps=time_limit))
    # as make_envs: step hands back the envs' own observation buffer, overwritten at the next step
    envs = gym.vector.SyncVectorEnv([make], copy=False, autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    args = ppo.Args(num_steps=num_steps, norm_obs=norm_obs, norm_reward=norm_reward, gamma=gamma)
    state = ppo.restart_episodes(envs, args, seed=0)
    torch.manual_seed(0)
    agent = ppo.Agent(2, 2)
    with torch.no_grad():
        agent.actor_logstd.fill_(1.0)  # std e: most samples fall outside [-0.1, 0.1]
    rollout, finished = ppo.collect_rollout(
        envs, agent, state, args, np.random.default_rng(0), torch.device("cpu")
    )
    received = np.array(envs.envs[0].unwrapped.received)
    return agent, (rollout, finished), received


def test_env_gets_clipped_actions_while_the_unclipped_sample_is_stored_and_scored():
    agent, (data, _), received = bounded_rollout(num_steps=20)
    stored = data.actions[:, 0]  # (20, 2)
    assert np.abs(stored).max() > 0.5
    np.testing.assert_allclose(received, np.clip(stored, -0.1, 0.1), rtol=1e-6)
    with torch.no_grad():
        mean, log_std, _ = agent(torch.from_numpy(data.obs[:, 0]))
        expected = ppo.gaussian_log_prob(torch.from_numpy(stored), mean, log_std)
    batch = ppo.make_batch(
        data, np.zeros((20, 1), np.float32), np.zeros((20, 1), np.float32), torch.device("cpu")
    )
    torch.testing.assert_close(batch.logprobs, expected)


def test_truncation_bootstraps_from_the_normalized_final_observation():
    agent, (data, finished), _ = bounded_rollout(num_steps=5, norm_obs=True, time_limit=3, gamma=0.9)
    # the final observation [3, 1] is normalized with the statistics as they stand at that step: they have
    # seen the first reset [0, 1], then [1, 1], [2, 1], and the next episode's reset [0, 1] that SAME_STEP
    # returns in place of [3, 1]
    reference = ppo.RunningMeanStd(np.zeros(2), np.ones(2))
    for seen in ([0, 1], [1, 1], [2, 1], [0, 1]):
        reference.update(np.array([seen], np.float64))
    final_normalized = ppo.normalize(np.array([[3.0, 1.0]]), reference, 10.0).astype(np.float32)
    with torch.no_grad():
        v_final = agent(torch.from_numpy(final_normalized))[2].item()
    assert data.rewards[2, 0] == pytest.approx(1.0 + 0.9 * v_final, rel=1e-5)
    assert data.rewards[1, 0] == 1.0 and data.dones[2, 0] == 1.0
    assert finished[0][2] == 3.0  # the logged return is the raw one


def test_normalization_statistics_survive_save_load_evaluate(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = ppo.Args(env_id="Pendulum-v1", total_timesteps=2048, num_envs=2, num_steps=256, num_minibatches=4,
                    update_epochs=2, save_model=True, eval_episodes=2)
    summary = ppo.train(args)
    saved = torch.load(summary["model_path"], weights_only=True)["state"]
    assert saved["obs_rms"]["count"] == 2 + 2048  # the reset observations, then one per step
    assert not torch.allclose(saved["obs_rms"]["mean"], torch.zeros(3, dtype=torch.float64))
    assert saved["return_rms"]["count"] == 2048

    # evaluating the saved model (in this process, and in a fresh one) takes its statistics and keeps them
    # frozen: the same greedy returns as the evaluation at the end of the training (to float rounding, since
    # a reloaded network's weights lie elsewhere in memory)
    evaluation = ppo.evaluate_saved_model(ppo.Args(load_model=summary["model_path"], eval_episodes=2))
    np.testing.assert_allclose(evaluation["eval_returns"], summary["eval_returns"], rtol=1e-4)
    command = [sys.executable, script_path(ppo), "--load-model", summary["model_path"], "--eval-episodes", "2"]
    out = subprocess.run(command, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert f"mean return {np.mean(evaluation['eval_returns']):.2f}" in out.stdout  # same process layout
    # without its statistics the same network scores differently: the statistics matter
    model = torch.load(summary["model_path"], weights_only=True)
    model["state"]["obs_rms"].update(mean=torch.zeros(3).double(), var=torch.ones(3).double())
    torch.save(model, "unnormalized.model")
    unnormalized = ppo.evaluate_saved_model(ppo.Args(load_model="unnormalized.model", eval_episodes=2))
    assert not np.allclose(unnormalized["eval_returns"], evaluation["eval_returns"], rtol=1e-3)


def test_greedy_evaluation_acts_with_the_mean_action_clipped_to_the_bounds(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = ppo.Args(env_id="Pendulum-v1", total_timesteps=512, num_envs=2, num_steps=256, num_minibatches=4,
                    update_epochs=1, norm_obs=False, save_model=True)
    summary = ppo.train(args)
    made = record_steps(ppo, monkeypatch)
    ppo.evaluate_saved_model(ppo.Args(load_model=summary["model_path"], eval_episodes=1))
    seen = made[-1].steps  # the evaluation's episode (made last; the first env made checks the env)
    assert len(seen) == 200  # Pendulum's time limit
    with torch.no_grad():
        means = summary["agent"](torch.tensor(np.array([obs for obs, _ in seen]), dtype=torch.float32))[0]
    np.testing.assert_allclose([action for _, action in seen], means.clamp(-2.0, 2.0).numpy(), atol=1e-5)


def test_mujoco_videos_are_240x240_unless_env_kwargs_name_a_size(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # check_video_support makes videos/ here
    ppo.check_video_support()  # MuJoCo's headless OpenGL, as --capture-video sets it
    for kwargs, shape in [({}, (240, 240, 3)), ({"width": 64, "height": 48}, (48, 64, 3))]:
        args = ppo.Args(env_id="HalfCheetah-v5", env_kwargs=kwargs)
        env = ppo.make_env(args, str(tmp_path))()
        env.reset(seed=0)
        assert env.render().shape == shape
        env.close()


@pytest.mark.parametrize("env_id", ["MatrixActions-v0", "ScalarAction-v0"])
def test_box_actions_of_other_dimensions_reach_the_env_in_its_shape_and_are_learned(env_id, tmp_path,
                                                                                   monkeypatch):
    monkeypatch.chdir(tmp_path)
    # the env raises on an action of another shape; its reward is -|action - target|^2, so the greedy policy
    # of the untrained network (mean 0) scores -|target|^2
    args = ppo.Args(env_id=env_id, total_timesteps=8192, num_envs=4, num_steps=256, eval_episodes=2)
    summary = ppo.train(args)
    untrained = -float((ppo.make_env(args)().unwrapped.target ** 2).sum())
    assert min(summary["eval_returns"]) > 0.6 * untrained


def test_orthogonal_init_and_log_std():
    agent = ppo.Agent(obs_dim=17, action_dim=6)
    for layer, gain in [
        (agent.actor_mean[0][0], math.sqrt(2)),
        (agent.critic[0][2], math.sqrt(2)),
        (agent.actor_mean[1], 0.01),
        (agent.critic[1], 1.0),
    ]:
        assert_orthogonal_init(layer, gain)
    assert torch.all(agent.actor_logstd == 0) and agent.actor_logstd.shape == (6,)


@pytest.mark.parametrize(
    "env_id",
    [
        "HalfCheetah-v5",
        "Hopper-v5",
        "Walker2d-v5",
        "Ant-v5",
        "Humanoid-v5",
        "Pendulum-v1",
        "BipedalWalker-v3",
        "LunarLanderContinuous-v3",
        "MountainCarContinuous-v0",
    ],
)
def test_works_by_env_id_alone(env_id, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    summary = ppo.train(
        ppo.Args(
            env_id=env_id,
            total_timesteps=128,
            num_steps=64,
            num_minibatches=2,
            update_epochs=1,
            save_model=True,
        )
    )
    saved = torch.load(summary["model_path"], weights_only=True)
    assert saved["args"]["env_id"] == env_id and saved["state"]["obs_rms"]["count"] == 1 + 128


def test_envs_other_than_mujocos_train_and_resume_where_mujoco_is_not_installed(tmp_path):
    code = ("import sys; sys.modules['mujoco'] = None  # as if not installed: importing it fails\n"
            "sys.argv[0] = 'ppo_continuous.py'; import ppo_continuous; ppo_continuous.main()")

    def run(*flags):
        return subprocess.run([sys.executable, "-c", code, *flags], cwd=tmp_path, capture_output=True,
                              text=True, env={**os.environ, "PYTHONPATH": ROOT}, timeout=120)

    trained = run("--env-id", "Pendulum-v1", "--total-timesteps", "512", "--num-envs", "2", "--num-steps",
                  "128", "--checkpoint-every", "256")
    assert trained.returncode == 0, trained.stderr
    (checkpoint,) = [str(path) for path in tmp_path.glob("runs/*/checkpoint.pt")]
    resumed = run("--resume", checkpoint)  # the envs' state put back, without MuJoCo
    assert resumed.returncode == 0 and "new episodes start" not in resumed.stdout, resumed.stderr
    refused = run()  # HalfCheetah-v5, the default
    assert refused.returncode == 2 and refused.stderr.strip().splitlines()[-1] == (
        "error: cannot make --env-id 'HalfCheetah-v5': DependencyNotInstalled: MuJoCo is not installed, run "
        "`pip install \"gymnasium[mujoco]\"`")
