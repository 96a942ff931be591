"""Bad input and damaged files, in-process and table-driven: each gets one line on stderr and exit code 2,
before anything is trained on it."""

import contextlib
import dataclasses
import glob
import os
import signal
import subprocess
import sys
import time
import warnings

import numpy as np
import pytest
import torch

import ppo_atari
import ppo_continuous
import ppo_discrete
import tests.toy_envs  # noqa: F401  (registers the broken envs)
from tests.checks import one_line_error
# in_tmp_dir: an autouse fixture
from tests.test_scripts import ROOT, SCRIPTS, TINY, in_tmp_dir, script_path  # noqa: F401


def float_fields(ppo):
    return [f.name for f in dataclasses.fields(ppo.Args) if isinstance(getattr(ppo.Args(), f.name), float)]


@SCRIPTS
def test_absurd_flag_values_are_refused_naming_the_flag(ppo, capsys):
    cases = [(dict(**{name: value}), f"--{name.replace('_', '-')} must be a finite number")
             for name in float_fields(ppo) for value in (float("nan"), float("inf"), -float("inf"))]
    cases += [(dict(num_envs=1_000_000), "--num-envs must be at most 4096")]
    huge_rollout = dict(num_steps=10**12, total_timesteps=10**13)
    if ppo is not ppo_atari:  # a name in the wrong case, a module that takes arguments, one that has no forward
        cases += [(dict(activation="relu"), "--activation 'relu' is not a torch.nn activation (Tanh, ReLU, "
                                            "ELU, ...): did you mean ReLU?"),
                  (dict(activation="Linear"), "--activation 'Linear' is not a torch.nn activation"),
                  (dict(activation="Module"), "--activation 'Module' is not a torch.nn activation")]
    if ppo is ppo_atari:
        cases.append((huge_rollout, "--num-envs * --num-steps would need over"))
    else:  # counted from the env's spaces, when the env is made
        cases.append((dict(hidden_sizes=(10**6, 10**6)), "--hidden-sizes would need over"))
        line = one_line_error(capsys, lambda: ppo.check_env(ppo.Args(**huge_rollout)))
        assert "--num-envs * --num-steps would need over" in line and "observations and actions" in line
        env_id = "EmptyObservation-v0" if ppo is ppo_discrete else "EmptyObservationContinuous-v0"
        line = one_line_error(capsys, lambda: ppo.check_env(ppo.Args(env_id=env_id)))
        assert f"{env_id}'s observations hold no values" in line
    assert len(cases) > 3 * 10
    for overrides, message in cases:
        assert message in one_line_error(capsys, lambda: ppo.check_args(ppo.Args(**overrides))), overrides
    line = one_line_error(capsys, lambda: ppo.train(ppo.Args(torch_threads=100_000, **TINY[ppo])))
    assert line == f"error: --torch-threads 100000 is over the {os.cpu_count()} cores here: name fewer"


OLD_API = ("(gymnasium's API: reset(seed=None, options=None) returns (obs, info), step(action) (obs, reward, "
           "terminated, truncated, info))")
ENV_FAULTS = [(ppo_discrete, "nosuchmodule:Env-v0", "named 'nosuchmodule': put its folder on PYTHONPATH"),
              (ppo_continuous, "nosuchmodule.envs:Env-v0", "'nosuchmodule': put its folder on PYTHONPATH"),
              (ppo_discrete, "BrokenConstructor-v0", "RuntimeError: the simulator failed to start"),
              (ppo_continuous, "BrokenConstructor-v0", "RuntimeError: the simulator failed to start"),
              (ppo_discrete, "WrongShape-v0", "reset returns an observation of shape (5,) for the space's"),
              (ppo_discrete, "WrongStepShape-v0", "its step returns an observation of shape (3, 1) for the"),
              (ppo_continuous, "WrongStepShapeContinuous-v0", "step returns an observation of shape (3, 1)"),
              (ppo_discrete, "cartpole-v1", "doesn't exist. Did you mean: `CartPole`?"),  # gymnasium's advice
              (ppo_discrete, "OldStepApi-v0", "ValueError: not enough values to unpack (expected 5, got 4) "
               f"{OLD_API}"),
              (ppo_continuous, "OldStepApiContinuous-v0", f"values to unpack (expected 5, got 4) {OLD_API}"),
              (ppo_discrete, "OldStepApiTimeLimit-v0", f"values to unpack (expected 5, got 4) {OLD_API}"),
              (ppo_discrete, "OldResetApi-v0", f"ValueError: too many values to unpack (expected 2) {OLD_API}"),
              (ppo_continuous, "OldResetApiContinuous-v0", f"too many values to unpack (expected 2) {OLD_API}"),
              (ppo_discrete, "OldResetSignature-v0", "TypeError: OldResetSignature.reset() got an unexpected "
               f"keyword argument 'seed' {OLD_API}"),
              (ppo_continuous, "OldResetSignatureContinuous-v0", f"unexpected keyword argument 'seed' {OLD_API}"),
              (ppo_discrete, "ArrayReward-v0", "a reward of type ndarray and shape (1,): return one number"),
              (ppo_continuous, "ArrayRewardContinuous-v0", "type ndarray and shape (1,): return one number"),
              (ppo_discrete, "NoneReward-v0", "a reward of type NoneType and shape (): return one number"),
              (ppo_continuous, "NoneRewardContinuous-v0", "type NoneType and shape (): return one number"),
              (ppo_continuous, "HalfCheetah-v1", "is deprecated. Please use `HalfCheetah-v5` instead."),
              (ppo_discrete, "ALE/Breakout-v5", "use ppo_atari.py"),
              (ppo_discrete, "TupleActions-v0", "Discrete, MultiDiscrete or MultiBinary (a vector) ones; no"),
              (ppo_discrete, "MultiBinaryGrid-v0", "has MultiBinary((2, 3)) actions; ppo_discrete.py takes"),
              (ppo_discrete, "SequenceObs-v0", "takes what gymnasium flattens to one vector (Box, Discrete"),
              (ppo_discrete, "CarRacing-v3", "(96, 96, 3), uint8) observations; ppo_discrete.py takes what"),
              (ppo_continuous, "MultiDiscreteActions-v0", "needs Box actions: use ppo_discrete.py"),
              (ppo_continuous, "Switches-v0", "has MultiBinary(4) actions; ppo_continuous.py needs Box")]


NON_FINITE = [(ppo, f"NonFinite{what.title()}{suffix}-v0", what) for ppo, suffix in [(ppo_discrete, ""),
              (ppo_continuous, "Continuous")] for what in ["reward", "observation"]]


@pytest.mark.parametrize("ppo,env_id,what", NON_FINITE, ids=[env_id for _, env_id, _ in NON_FINITE])
def test_a_nan_from_the_env_is_named_as_the_envs(ppo, env_id, what, capsys):
    with pytest.raises(SystemExit) as exit_info:
        ppo.train(ppo.Args(env_id=env_id, total_timesteps=512, num_envs=2, num_steps=256, num_minibatches=4))
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert (
        exit_info.value.code == 2
        and last.startswith("error: the env gave a")
        and f"{what} that is nan" in last
    )


@pytest.mark.parametrize(
    "ppo,env_id,message", ENV_FAULTS, ids=[f"{p.__name__}-{e}" for p, e, _ in ENV_FAULTS]
)
def test_envs_that_fail_are_one_line_errors(ppo, env_id, message, capsys):
    assert message in one_line_error(capsys, lambda: ppo.check_env(ppo.Args(env_id=env_id)))


@pytest.mark.parametrize("ppo,env_id", [(ppo_discrete, "Taxi-v3"), (ppo_continuous, "HalfCheetah-v1")])
def test_a_deprecated_env_id_is_one_line_with_no_warning_of_gymnasium_before_it(ppo, env_id, capsys):
    """gymnasium warns of a deprecated id (two lines on stderr) before it refuses it: the run says the refusal
    alone (gymnasium's advice in it)."""
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        line = one_line_error(capsys, lambda: ppo.train(ppo.Args(env_id=env_id, cuda=False)))
    assert "is deprecated. Please use" in line and [str(warning.message) for warning in said] == []


def test_an_env_module_that_imports_a_missing_package_is_not_told_to_use_pythonpath(tmp_path, monkeypatch,
                                                                                      capsys):
    (tmp_path / "envs_needing_a_package.py").write_text("import no_such_package_here\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    line = one_line_error(capsys, lambda: ppo_discrete.check_env(
        ppo_discrete.Args(env_id="envs_needing_a_package:Env-v0")))
    assert "No module named 'no_such_package_here'" in line and "PYTHONPATH" not in line


def test_under_torchrun_only_rank_0_prints_an_error(capsys, monkeypatch):
    monkeypatch.setenv("RANK", "1")
    with pytest.raises(SystemExit) as exit_info:
        ppo_atari.fail("a bad flag")
    assert exit_info.value.code == 2 and capsys.readouterr().err == ""


def flip_a_bit(data: bytes) -> bytes:
    middle = len(data) // 2
    return data[:middle] + bytes([data[middle] ^ 0x10]) + data[middle + 1:]


@SCRIPTS
def test_damaged_checkpoints_are_refused_before_anything_runs(ppo, capsys):
    ppo.train(ppo.Args(**{**TINY[ppo], "checkpoint_every": TINY[ppo]["total_timesteps"] // 2}))
    (path,) = glob.glob("runs/*/checkpoint.pt")
    good, data = torch.load(path, weights_only=True), open(path, "rb").read()
    first_weight = next(iter(good["agent"]))
    damaged = {
        "bit_flip.pt": (flip_a_bit(data), "not a readable checkpoint or model"),
        "empty.pt": (b"", "not a readable checkpoint or model"),
        "no_optimizer.pt": ({k: v for k, v in good.items() if k != "optimizer"}, "'optimizer' is missing"),
        "wrong_shape.pt": (
            {**good, "agent": {**good["agent"], first_weight: torch.zeros(3, 3)}},
            f"mis-shaped ['{first_weight} (3, 3) for",
        ),
        "no_weight.pt": ({**good, "agent": {}}, f"missing ['{first_weight}'"),
        "other_optimizer.pt": (
            {**good, "optimizer": {**good["optimizer"], "kind": "SGD"}},
            "was trained with another optimizer: class 'SGD' (this script: 'Adam'); resume with the",
        ),
    }
    if ppo is ppo_atari:  # under torchrun, the generators of each process
        damaged["ranks_dict.pt"] = ({**good, "ranks": {}}, "'ranks' is missing or not a list")
        damaged["generator.pt"] = (
            {**good, "ranks": [{**good["ranks"][0], "generator": {"bit_generator": "MT"}}]},
            "does not fit this run",
        )
    else:
        damaged["state_list.pt"] = ({**good, "state": []}, "'state' is missing or not a dict")
        damaged["generator.pt"] = ({**good, "generator": {"bit_generator": "MT"}}, "does not fit this run")
        physics = good["envs"][0]["physics"]
        for name, bad in dict(
            long_env_state=torch.zeros(len(physics) + 1), nan_env_state=physics * np.nan
        ).items():
            states = [{**good["envs"][0], "physics": bad}, *good["envs"][1:]]
            damaged[f"{name}.pt"] = (
                {**good, "envs": states},
                "does not fit this run: ValueError: an env state",
            )
        damaged["few_env_states.pt"] = (
            {**good, "envs": good["envs"][:1]},
            f"1 env states for {len(good['envs'])}",
        )
    optimizer = good["optimizer"]["state_dict"]
    groups = [{**optimizer["param_groups"][0], "betas": (0.5, 0.5)}]  # Adam with other hyper-parameters
    damaged["other_betas.pt"] = (
        {**good, "optimizer": {**good["optimizer"], "state_dict": {**optimizer, "param_groups": groups}}},
        "another optimizer: group 0's betas [0.5, 0.5] (this script: [0.9, 0.999]); resume with the",
    )
    damaged["two_groups.pt"] = (
        {**good, "optimizer": {**good["optimizer"], "state_dict": {**optimizer, "param_groups": groups * 2}}},
        "another optimizer: parameter groups 2 (this script: 1); resume with the",
    )
    damaged["adam_size.pt"] = (
        {
            **good,
            "optimizer": {
                **good["optimizer"],
                "state_dict": {
                    **optimizer,
                    "state": {**optimizer["state"], 0: {**optimizer["state"][0], "exp_avg": torch.zeros(7)}},
                },
            },
        },
        "optimizer state (7,)",
    )
    counters = good["counters"]
    for name, changed in dict(
        far_iteration={"iteration": 10**9},
        negative_step={"global_step": -512},
        nan_beta={"kl_beta": float("nan")},
    ).items():
        damaged[f"{name}.pt"] = ({**good, "counters": {**counters, **changed}}, "its counters {")
    damaged["no_iteration.pt"] = ({**good, "counters": {"global_step": 0, "kl_beta": 1.0}}, "its counters {")
    damaged["nan_weight.pt"] = (
        {**good, "agent": {**good["agent"], first_weight: good["agent"][first_weight] * np.nan}},
        f"its weight '{first_weight}' is not a tensor of finite numbers",
    )
    damaged["text_returns.pt"] = ({**good, "recent_returns": ["a"]}, "its recent returns are not")
    damaged["wandb_id.pt"] = ({**good, "wandb_id": 7}, "its W&B run id 7 is not text")
    damaged["zero_steps.pt"] = (
        {**good, "args": {**good["args"], "total_timesteps": 0}},
        "holds flags this run cannot take: --total-timesteps must be a positive integer",
    )
    for name, (content, message) in damaged.items():
        if isinstance(content, bytes):
            open(name, "wb").write(content)
        else:
            torch.save(content, name)
        assert message in one_line_error(capsys, lambda: ppo.train(ppo.Args(resume=name))), name
    assert len(glob.glob("runs/*")) == 1  # no run directory, no training for any of them


def test_a_bad_flag_given_with_load_model_is_blamed_on_the_flag_not_the_file(capsys):
    summary = ppo_discrete.train(ppo_discrete.Args(total_timesteps=512, save_model=True))
    line = one_line_error(capsys, lambda: ppo_discrete.evaluate_saved_model(ppo_discrete.Args(
        load_model=summary["model_path"], eval_episodes=-1)))
    assert line == "error: --eval-episodes must be >= 0, got -1"


def test_resume_refuses_a_given_flag_even_when_it_equals_its_default(capsys, monkeypatch):
    ppo_discrete.train(ppo_discrete.Args(total_timesteps=1024, checkpoint_every=512))
    (path,) = glob.glob("runs/*/checkpoint.pt")
    default = ppo_discrete.Args().total_timesteps  # the checkpoint's is 1024
    monkeypatch.setattr(sys, "argv", ["ppo_discrete.py", "--resume", path, "--total-timesteps", str(default)])
    assert "drop --total-timesteps (saved: 1024)" in one_line_error(capsys, ppo_discrete.main)
    monkeypatch.setattr(sys, "argv", ["ppo_discrete.py", "--resume", path, "--no-anneal-lr"])
    assert "drop --anneal-lr (saved: True)" in one_line_error(capsys, ppo_discrete.main)


def test_a_saved_run_goes_on_and_is_evaluated_on_a_machine_with_fewer_cores(capsys, monkeypatch):
    ppo = ppo_discrete
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    summary = ppo.train(ppo.Args(total_timesteps=1024, checkpoint_every=512, save_model=True, torch_threads=2))
    checkpoint_path = os.path.join(summary["run_dir"], "checkpoint.pt")
    monkeypatch.setattr(os, "cpu_count", lambda: 1)
    for start in [lambda: ppo.train(ppo.Args(resume=checkpoint_path)),
                  lambda: ppo.evaluate_saved_model(ppo.Args(load_model=summary["model_path"]))]:
        assert one_line_error(capsys, start) == "error: --torch-threads 2 is over the 1 cores here: name fewer"
    # named, --torch-threads suits this machine; the other flags stay the saved run's
    evaluation = ppo.evaluate_saved_model(ppo.Args(load_model=summary["model_path"], torch_threads=1),
                                          {"load_model", "torch_threads"})
    assert len(evaluation["eval_returns"]) == 10
    resumed = ppo.train(ppo.Args(resume=checkpoint_path, torch_threads=1), {"resume", "torch_threads"})
    assert resumed["recent_returns"] and not resumed["stopped"]


def test_a_saved_run_goes_on_where_its_video_and_w_and_b_packages_are_missing(capsys, monkeypatch):
    ppo = ppo_discrete
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    summary = ppo.train(ppo.Args(total_timesteps=1024, checkpoint_every=512, capture_video=True, track=True))
    checkpoint_path = os.path.join(summary["run_dir"], "checkpoint.pt")
    monkeypatch.setitem(sys.modules, "moviepy", None)  # importing them fails
    monkeypatch.setitem(sys.modules, "wandb", None)
    line = one_line_error(capsys, lambda: ppo.train(ppo.Args(resume=checkpoint_path)))
    assert line == "error: --capture-video needs moviepy: pip install moviepy, or drop --capture-video"
    # what the run leaves may be chosen anew too: here a saved model and an evaluation it was started without
    resumed = ppo.train(ppo.Args(resume=checkpoint_path, capture_video=False, track=False, save_model=True,
                                 eval_episodes=2), {"resume", "capture_video", "track", "save_model", "eval_episodes"})
    assert resumed["recent_returns"] and not resumed["stopped"]
    assert os.path.isfile(resumed["model_path"]) and len(resumed["eval_returns"]) == 2


def test_ctrl_c_while_importing_stops_without_a_traceback():
    process = subprocess.Popen([sys.executable, script_path(ppo_discrete)], stderr=subprocess.PIPE, text=True)
    time.sleep(0.5)  # importing torch and gymnasium takes longer than this
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == -signal.SIGINT and "Traceback" not in stderr


@SCRIPTS
def test_a_program_that_imports_a_script_keeps_its_own_ctrl_c(ppo):
    code = f"import signal, {ppo.__name__}; print(signal.getsignal(signal.SIGINT) is signal.default_int_handler)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.stdout.strip() == "True", out.stderr


def test_compile_where_torch_compile_cannot_work_is_one_line(tmp_path):
    env = {**os.environ, "CXX": "/nonexistent/g++", "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "inductor")}
    out = subprocess.run([sys.executable, script_path(ppo_discrete), "--compile"], env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 2 and out.stderr.strip().splitlines() == [
        "error: --compile: torch.compile does not work here (InductorError: InvalidCxxCompiler: No working C++ "
        "compiler found in torch._inductor.config.cpp.cxx: (None, '/nonexistent/g++')); install what it names "
        "(a C++ compiler: gcc), or drop --compile"] and not os.path.exists("runs")


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")
def test_a_full_disk_stops_the_run_with_one_line_keeping_the_last_checkpoint(tmp_path, monkeypatch, capsys):
    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(disk)]).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        monkeypatch.chdir(disk)
        write_checkpoint = ppo_discrete.Run.write

        def write_then_fill_the_disk(run, data, name):
            write_checkpoint(run, data, name)
            with contextlib.suppress(OSError), open(disk / "filler", "ab") as f:
                f.write(bytes(8 * 2**20))  # more than the disk holds: it is full afterwards
            # then room for half a checkpoint: the next write starts
            filled = os.path.getsize(disk / "filler")
            os.truncate(disk / "filler", filled - os.path.getsize(os.path.join(run.dir, name)) // 2)

        monkeypatch.setattr(ppo_discrete.Run, "write", write_then_fill_the_disk)
        with pytest.raises(SystemExit) as exit_info:
            ppo_discrete.train(ppo_discrete.Args(total_timesteps=2048, checkpoint_every=512))
        assert exit_info.value.code == 1
        stderr = capsys.readouterr().err
        errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
        (checkpoint_path,) = glob.glob("runs/*/checkpoint.pt")
        assert errors == [
            f"error: cannot write {checkpoint_path} (No space left on device); stopped, the last good "
            f"checkpoint is {checkpoint_path}"
        ]
        assert "Traceback" not in stderr  # nor from TensorBoard's writer thread on the full disk
        assert not glob.glob("runs/*/*.tmp")  # the partial file is removed, its space given back
        # the checkpoint kept is whole: its checksums hold
        checkpoint = ppo_discrete.load_data_file(ppo_discrete.Args(resume=checkpoint_path))
        assert checkpoint["counters"]["global_step"] == 512
    finally:
        subprocess.run(["umount", "-l", str(disk)])


@SCRIPTS
def test_a_failed_log_write_is_said_once_and_training_goes_on(ppo, monkeypatch, capsys):
    class FailingWriter:  # TensorBoard's writer on a disk that fills up after a few points
        points = 0

        def add_scalar(self, *args):
            FailingWriter.points += 1
            if FailingWriter.points > 5:
                raise OSError(28, "No space left on device")

        def add_text(self, *args):
            pass

        flush = close = add_text

    monkeypatch.setattr(ppo, "start_logging", lambda run: FailingWriter())
    summary = ppo.train(ppo.Args(**TINY[ppo], save_model=True))
    (warning,) = capsys.readouterr().err.strip().splitlines()
    assert warning.startswith("warning: cannot write the logs in") and "No space left on device" in warning
    assert FailingWriter.points == 6 and os.path.exists(summary["model_path"])  # trained to the end, saved


@pytest.mark.parametrize(
    "imported,environment,spin_count",
    [
        ("ppo_discrete, ppo_continuous, ppo_atari", {}, "0"),  # the scripts: idle threads sleep at once
        ("ppo_atari", {"OMP_WAIT_POLICY": "ACTIVE"}, "30000000000"),  # unless the environment says otherwise
        ("torch", {}, "300000"),
    ],
)  # torch alone spins a while: the check can fail
def test_idle_torch_threads_sleep_unless_the_environment_says_otherwise(imported, environment, spin_count):
    """Spinning OpenMP threads make runs side by side crawl: the setting must reach torch's OpenMP runtime,
    which reads it once, when torch is imported (it prints what it read with OMP_DISPLAY_ENV=VERBOSE)."""
    env = {key: value for key, value in os.environ.items() if key != "OMP_WAIT_POLICY"}
    result = subprocess.run(
        [sys.executable, "-c", f"import {imported}"],
        capture_output=True,
        text=True,
        env={**env, **environment, "OMP_DISPLAY_ENV": "VERBOSE", "PYTHONPATH": ROOT},
        timeout=120,
    )
    assert f"GOMP_SPINCOUNT = '{spin_count}'" in result.stderr


def test_resuming_a_complete_run_is_a_one_line_error(capsys):
    summary = ppo_discrete.train(ppo_discrete.Args(**TINY[ppo_discrete], save_model=True))
    line = one_line_error(capsys, lambda: ppo_discrete.train(ppo_discrete.Args(resume=summary["model_path"])))
    assert line == (f"error: --resume {summary['model_path']!r}: the run is complete (step 1,024), nothing is "
                    f"left to train; evaluate its model with --load-model")
