"""Hyper-parameter tuning: an Optuna study over a script's flags. Each trial trains the script with sampled
flags once per seed, one run after another; the objective is the mean over seeds of the mean of each run's
last --last episodic returns. A TPE sampler picks the flags; a median pruner, fed the runs' episodic returns
as they are printed, stops trials that fall below the median of the trials before them at the same step.

    python benchmarks/tune.py ppo_discrete.py --env-id CartPole-v1 --total-timesteps 100000 --n-trials 50
    python benchmarks/tune.py ppo_continuous.py --env-id Hopper-v5 --space learning_rate=log:1e-5:1e-3 \\
        --space "hidden_sizes=choice:64 64,256 256" --seeds 1 2 3 -- --num-envs 4   # flags after -- are fixed
    optuna-dashboard sqlite:///benchmarks/results/tune/ppo_discrete_CartPole-v1.db         # to watch it

The study is kept in --storage (by default a SQLite file under benchmarks/results/tune/): run the same command
again and it goes on; run it in several processes, or on several machines with one database URL that they all
reach (e.g. --storage postgresql://user:password@host/db), and they share the study. At the end it prints the
best trial as a command line and writes the study's trials to a CSV beside the SQLite file (or to --csv).

A search space entry is FLAG=KIND:ARGS, the flag as in the script (dashes or underscores): log:LOW:HIGH and
float:LOW:HIGH (a float, log-uniform or uniform), int:LOW:HIGH, choice:A,B,... (values as typed on the command
line; a value with spaces gives several words, as in "hidden_sizes=choice:64 64,256 256").
"""

import argparse
import ast
import math
import os
import random
import subprocess
import sys
import tempfile
import time

import optuna
import sqlalchemy

from learning import ROOT, read_the_run

# what rl-zoo3's sample_ppo_params searches, in these scripts' flags; --space adds to it or replaces an entry
COMMON_SPACE = {
    "learning_rate": "log:1e-5:3e-3",
    "gamma": "choice:0.9,0.95,0.98,0.99,0.995,0.999,0.9999",
    "gae_lambda": "choice:0.8,0.9,0.92,0.95,0.98,0.99,1.0",
    "clip_coef": "choice:0.1,0.2,0.3,0.4",
    "ent_coef": "log:1e-8:0.1",
    "update_epochs": "choice:1,5,10,20",
    "num_minibatches": "choice:1,2,4,8,16,32",
    "max_grad_norm": "choice:0.3,0.5,0.7,1,2,5",
    "vf_coef": "float:0.1:1",
}
SPACES = {
    "ppo_discrete.py": {
        **COMMON_SPACE,
        "num_steps": "choice:32,64,128,256,512,1024",
        "hidden_sizes": "choice:64 64,256 256",
        "activation": "choice:Tanh,ReLU",
    },
    "ppo_continuous.py": {
        **COMMON_SPACE,
        "num_steps": "choice:256,512,1024,2048,4096",
        "hidden_sizes": "choice:64 64,256 256",
        "activation": "choice:Tanh,ReLU",
        "log_std_init": "float:-3:0",
    },
    "ppo_atari.py": {
        key: COMMON_SPACE[key] for key in ["learning_rate", "clip_coef", "ent_coef", "update_epochs"]
    },
}
REPORTS_PER_RUN = 10  # the pruner sees each run's mean return at 10 evenly spaced steps


class Refused(Exception):
    """A bad command line: printed as one line, exit 2."""


def parse_space(entries: list[str], flags: set) -> dict:
    """FLAG=KIND:ARGS entries -> {flag: (kind, values)}, each checked."""
    space = {}
    for entry in entries:
        name, _, spec = entry.partition("=")
        name = name.strip().lstrip("-").replace("-", "_")
        kind, _, rest = spec.partition(":")
        if name not in flags:
            raise Refused(f"--space {entry!r}: the script has no flag --{name.replace('_', '-')}")
        if kind == "choice" and rest:
            space[name] = (kind, rest.split(","))
            continue
        if kind not in ("log", "float", "int") or rest.count(":") != 1:
            raise Refused(
                f"--space {entry!r}: write FLAG=log:LOW:HIGH, float:LOW:HIGH, int:LOW:HIGH or choice:A,B,..."
            )
        try:
            low, high = (int(x) if kind == "int" else float(x) for x in rest.split(":"))
        except ValueError:
            raise Refused(
                f"--space {entry!r}: LOW and HIGH must be {'integers' if kind == 'int' else 'numbers'}"
            ) from None
        if not (math.isfinite(low) and math.isfinite(high) and low < high and (kind != "log" or low > 0)):
            raise Refused(f"--space {entry!r}: needs LOW < HIGH{', both above 0' if kind == 'log' else ''}")
        space[name] = (kind, [low, high])
    return space


def sample(trial: optuna.Trial, space: dict) -> list[str]:
    """The trial's flags, as command-line words."""
    words = []
    for name, (kind, values) in space.items():
        if kind == "choice":
            value = trial.suggest_categorical(name, values)
        elif kind == "int":
            value = trial.suggest_int(name, *values)
        else:
            value = trial.suggest_float(name, *values, log=kind == "log")
        words += [f"--{name.replace('_', '-')}", *str(value).split()]
    return words


def train_once(command: list[str], trial: optuna.Trial, first_step: int, total: int) -> list[float]:
    """Runs one training in a fresh directory, reporting its printed mean return at each report step (counted
    from first_step); returns its episodic returns, or raises TrialPruned (the run is stopped)."""
    report_every = max(total // REPORTS_PER_RUN, 1)
    next_report = report_every
    with tempfile.TemporaryDirectory() as workdir, open(os.path.join(workdir, "stderr"), "w+") as stderr:
        process = subprocess.Popen(  # stderr to a file: a full pipe nobody reads would block the run
            command,
            cwd=workdir,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        for line in process.stdout:
            if not line.startswith("step ") or "mean return" not in line:
                continue
            step = int(line.split()[1].replace(",", ""))
            value = float(line.rsplit(":", 1)[1])
            while step >= next_report and math.isfinite(value):
                trial.report(value, first_step + next_report)
                next_report += report_every
                if trial.should_prune():
                    process.kill()
                    process.wait()
                    raise optuna.TrialPruned(f"pruned at step {first_step + next_report - report_every:,}")
        if process.wait() != 0:
            stderr.seek(0)
            lines = stderr.read().strip().splitlines() or ["no message"]
            raise RuntimeError(f"a run failed (exit {process.returncode}): {lines[-1]}")
        _, events = read_the_run(workdir)
        return [event.value for event in events.Scalars("charts/episodic_return")]


def make_objective(args, space: dict, fixed: list[str]):
    def objective(trial: optuna.Trial) -> float:
        command = [
            sys.executable,
            os.path.join(ROOT, args.script),
            *fixed,
            "--checkpoint-every",
            "0",
            *sample(trial, space),
        ]
        scores = []
        for index, seed in enumerate(args.seeds):
            try:
                returns = train_once(
                    [*command, "--seed", str(seed)], trial, index * args.total_timesteps, args.total_timesteps
                )
                if not returns:
                    raise RuntimeError(f"seed {seed} ended no episode: raise --total-timesteps")
            except RuntimeError as error:
                trial.set_user_attr("error", str(error))
                raise
            scores.append(sum(returns[-args.last :]) / len(returns[-args.last :]))
        trial.set_user_attr("seed_scores", scores)
        return sum(scores) / len(scores)

    return objective


def best_command(args, study: optuna.Study, fixed: list[str]) -> str:
    """The best trial's flags, as a command to run from the repository root."""
    words = [f"--{name.replace('_', '-')} {value}" for name, value in study.best_trial.params.items()]
    return " ".join(["python", args.script, *fixed, *words])


def main():
    parser = argparse.ArgumentParser(
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="after --: fixed flags passed to every run",
    )
    parser.add_argument("script", choices=sorted(SPACES), help="the training script")
    parser.add_argument("--env-id", required=True)
    parser.add_argument("--total-timesteps", type=int, required=True, help="the budget of each run")
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2], help="one run per seed in each trial")
    parser.add_argument(
        "--n-trials",
        type=int,
        default=20,
        help="the trials this process runs (0: only report the study's best trial and write its CSV)",
    )
    parser.add_argument("--n-jobs", type=int, default=1, help="trials run at once in this process")
    parser.add_argument(
        "--last", type=int, default=100, help="the objective: the mean of each run's last N returns"
    )
    parser.add_argument(
        "--space",
        action="append",
        default=[],
        metavar="FLAG=KIND:ARGS",
        help="a search space entry, added to the script's or replacing one of its entries",
    )
    parser.add_argument("--only-space", action="store_true", help="search only the --space entries given")
    parser.add_argument("--study", help="the study's name (default: script and env)")
    parser.add_argument(
        "--storage", help="an Optuna storage URL (default: a SQLite file under benchmarks/results/tune)"
    )
    parser.add_argument(
        "--csv", help="where to write the trials (default: beside the SQLite file, or in the cwd)"
    )
    parser.add_argument("--startup-trials", type=int, default=5, help="trials completed before any is pruned")
    parser.add_argument(
        "--warmup-steps",
        type=int,
        help="steps of a trial before it may be pruned (default: half of its first run)",
    )
    argv = sys.argv[1:]
    cut = argv.index("--") if "--" in argv else len(argv)
    args = parser.parse_args(argv[:cut])
    try:
        run_study(args, fixed_flags=argv[cut + 1 :])
    except Refused as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None


def script_flags(path: str) -> set:
    """The fields of the script's Args, read from its source (importing it would take seconds)."""
    (args_class,) = [
        node
        for node in ast.parse(open(path).read()).body
        if isinstance(node, ast.ClassDef) and node.name == "Args"
    ]
    return {node.target.id for node in args_class.body if isinstance(node, ast.AnnAssign)}


def run_study(args, fixed_flags: list[str]):
    flags = script_flags(os.path.join(ROOT, args.script))
    default_space = {} if args.only_space else SPACES[args.script]
    given = parse_space(args.space, flags)
    space = {
        **parse_space([f"{key}={spec}" for key, spec in default_space.items() if key not in given], flags),
        **given,
    }
    if not space:
        raise Refused("the search space is empty: give --space FLAG=KIND:ARGS")
    if min(args.total_timesteps, args.n_jobs, args.last, args.n_trials + 1) <= 0 or not args.seeds:
        raise Refused(
            "--total-timesteps, --n-jobs, --last and --seeds must be positive, --n-trials not negative"
        )
    fixed = ["--env-id", args.env_id, "--total-timesteps", str(args.total_timesteps), *fixed_flags]
    study_name = args.study or f"{args.script[: -len('.py')]}_{args.env_id.replace('/', '-')}"
    out_dir = os.path.join(ROOT, "benchmarks", "results", "tune")
    storage = args.storage or f"sqlite:///{os.path.join(out_dir, study_name)}.db"
    if not args.storage:
        os.makedirs(out_dir, exist_ok=True)
    csv_path = args.csv or (
        storage[len("sqlite:///") : -len(".db")] + "_trials.csv"
        if storage.startswith("sqlite:///") and storage.endswith(".db")
        else f"{study_name}_trials.csv"
    )
    warmup = args.total_timesteps // 2 if args.warmup_steps is None else args.warmup_steps
    for attempt in range(3):  # workers started together race to create the database's tables: the last waits
        try:
            # SQLite: a writer waits up to 60 s for another's lock, instead of failing after 5
            engine = {"connect_args": {"timeout": 60}} if storage.startswith("sqlite:") else None
            study = optuna.create_study(
                study_name=study_name,
                storage=optuna.storages.RDBStorage(storage, engine_kwargs=engine),
                load_if_exists=True,
                direction="maximize",
                sampler=optuna.samplers.TPESampler(n_startup_trials=args.startup_trials),
                pruner=optuna.pruners.MedianPruner(
                    n_startup_trials=args.startup_trials, n_warmup_steps=warmup
                ),
            )
            break
        except Exception as error:  # SQLAlchemy and Optuna raise many kinds for a URL they cannot use
            race = isinstance(error, sqlalchemy.exc.IntegrityError) or "already exists" in str(error)
            if attempt == 2 or not (race or "locked" in str(error)):
                raise Refused(f"--storage {storage!r} cannot be used: {str(error).splitlines()[0]}") from None
            time.sleep(1 + random.random())
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # say_how_it_ended says how each trial ended
    study.optimize(
        make_objective(args, space, fixed),
        n_trials=args.n_trials,
        n_jobs=args.n_jobs,
        catch=(RuntimeError,),
        callbacks=[say_how_it_ended],
    )
    study.trials_dataframe().to_csv(csv_path, index=False)
    print(f"trials written to {csv_path}")
    if any(trial.state == optuna.trial.TrialState.COMPLETE for trial in study.trials):
        print(f"best trial {study.best_trial.number}: {study.best_value:.2f}, with:")
        print(best_command(args, study, fixed))


def say_how_it_ended(study: optuna.Study, trial: optuna.trial.FrozenTrial):
    if trial.state == optuna.trial.TrialState.COMPLETE:
        print(f"trial {trial.number}: {trial.value:.2f} {trial.params}", flush=True)
    else:
        why = trial.user_attrs.get("error", "")
        print(f"trial {trial.number}: {trial.state.name.lower()} {trial.params} {why}".rstrip(), flush=True)


if __name__ == "__main__":
    main()
