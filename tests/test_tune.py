"""benchmarks/tune.py: an Optuna study over a script's flags, pruned, shared between processes, refusing bad
input."""

import csv
import os
import shlex
import subprocess
import sys

import optuna
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
import tune as tune_module  # noqa: E402  (benchmarks/ is not a package)

TUNE = [
    sys.executable,
    os.path.join(ROOT, "benchmarks", "tune.py"),
    "ppo_discrete.py",
    "--env-id",
    "CartPole-v1",
    "--total-timesteps",
    "1024",
    "--seeds",
    "1",
    "--last",
    "10",
    "--only-space",
]
SPACE = ["--space", "learning_rate=log:1e-4:1e-2", "--space", "hidden_sizes=choice:16 16,32"]


def tune(tmp_path, *flags):
    storage = f"sqlite:///{tmp_path}/study.db"
    return subprocess.run([*TUNE, "--storage", storage, *flags], cwd=tmp_path, capture_output=True, text=True)


def trials(tmp_path):
    return optuna.load_study(
        study_name="ppo_discrete_CartPole-v1", storage=f"sqlite:///{tmp_path}/study.db"
    ).trials


def test_two_processes_share_a_study_that_ends_with_a_best_command_that_runs(tmp_path):
    command = [
        *TUNE,
        "--storage",
        f"sqlite:///{tmp_path}/study.db",
        *SPACE,
        "--n-trials",
        "1",
        "--",
        "--num-steps",
        "64",
    ]
    processes = [
        subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]  # the second joins the study the first creates, or the other way round
    outputs = [process.communicate() for process in processes]
    assert [process.returncode for process in processes] == [0, 0], outputs
    done = trials(tmp_path)
    assert sorted(trial.number for trial in done) == [0, 1]
    assert [trial.state for trial in done] == [optuna.trial.TrialState.COMPLETE] * 2
    report = tune(tmp_path, *SPACE, "--n-trials", "0", "--", "--num-steps", "64")  # the whole study's best
    with open(tmp_path / "study_trials.csv") as f:
        assert [float(row["value"]) for row in csv.DictReader(f)] == [trial.value for trial in done]
    best = report.stdout.strip().splitlines()[-1]
    assert best.startswith(
        "python ppo_discrete.py --env-id CartPole-v1 --total-timesteps 1024 --num-steps 64 "
    )
    best_params = max(done, key=lambda trial: trial.value).params
    assert (
        f"--learning-rate {best_params['learning_rate']} --hidden-sizes {best_params['hidden_sizes']}" in best
    )
    words = shlex.split(best)
    run = subprocess.run(
        [sys.executable, os.path.join(ROOT, words[1]), *words[2:]],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0 and "step 1,024 of 1,024" in run.stdout, run.stderr


def test_a_trial_below_the_median_is_pruned_and_its_run_stopped(tmp_path):
    study = optuna.create_study(
        study_name="ppo_discrete_CartPole-v1", storage=f"sqlite:///{tmp_path}/study.db", direction="maximize"
    )
    distribution = optuna.distributions.FloatDistribution(1e-4, 1e-2, log=True)
    study.add_trial(
        optuna.trial.create_trial(  # a finished trial far above what CartPole returns this early
            params={"learning_rate": 1e-3},
            distributions={"learning_rate": distribution},
            value=500.0,
            intermediate_values={step: 500.0 for step in range(100, 40_001, 100)},
        )
    )  # wherever the tuner reports
    out = tune(
        tmp_path,
        "--space",
        "learning_rate=log:1e-4:1e-2",
        "--n-trials",
        "1",
        "--startup-trials",
        "1",
        "--warmup-steps",
        "0",
        "--total-timesteps",
        "40000",
        "--",
        "--num-steps",
        "2048",
    )  # printed at 8,192
    assert out.returncode == 0, out.stderr
    pruned = trials(tmp_path)[1]
    assert pruned.state == optuna.trial.TrialState.PRUNED, out.stdout
    assert max(pruned.intermediate_values) < 20_000  # stopped long before its 40,000 steps


@pytest.mark.parametrize(
    "entry, message",
    [
        ("lr=log:1e-4:1e-2", "the script has no flag --lr"),
        ("learning_rate=log:0:1", "needs LOW < HIGH, both above 0"),
        ("learning_rate=float:2:1", "needs LOW < HIGH"),
        ("learning_rate=uniform:1:2", "write FLAG=log:LOW:HIGH"),
        ("learning_rate=log:1e-4", "write FLAG=log:LOW:HIGH"),
        ("num_steps=int:a:9", "LOW and HIGH must be integers"),
        ("num_steps=choice:", "write FLAG=log:LOW:HIGH"),
    ],
)
def test_a_bad_search_space_entry_is_refused_naming_it(entry, message):
    with pytest.raises(tune_module.Refused, match=message):
        tune_module.parse_space([entry], {"learning_rate", "num_steps"})


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--space", "learning_rate=log:1e-4"], "--space 'learning_rate=log:1e-4': write FLAG=log:LOW:HIGH"),
        (
            ["--space", "learning_rate=log:1e-4:1e-2", "--storage", "nosuchdb://x"],
            "--storage 'nosuchdb://x' cannot be used",
        ),
    ],
)
def test_a_bad_search_space_or_storage_is_one_line_and_exit_2(tmp_path, flags, message):
    out = subprocess.run([*TUNE, *flags], cwd=tmp_path, capture_output=True, text=True)
    lines = out.stderr.strip().splitlines()
    assert (
        out.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0]
    ), lines
