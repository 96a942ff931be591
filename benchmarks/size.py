"""Lines per part of each script, split by top-level definition (each with the blank line after it), in the
order a script reads: what the algorithm takes first, then the parts below the line "Operational parts";
then the barest form each script could take with every feature kept: its code alone (no docstring, comment
or blank line), plus a one-line docstring for each Args field (every flag must have one) and a blank line
before each top-level definition; then what each feature costs: the definitions (functions, classes,
methods, module constants) that exist only for it and its flags in Args, the lines that call them not counted.

    python benchmarks/size.py
"""

import ast
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PARTS = {  # the named parts, by the definitions they hold; the algorithm is every other one above the line
    "Args": "Args",
    "train()": "train",
    "the Run (run set-up, signals, resume, logging, checkpoints)": "Run lock_run_dir quiet_log_thread "
    "send_videos",
    "input checks": "Failed fail check_args check_env check_spaces check_atari_id check_video_support "
    "check_optimizer check_saved check_compile check_memory check_autoreset check_agent random_action "
    "what_is_not_a_file flag_name first_line",
    "files and flags (checkpoint data, loading, resumed flags)": "new_run_dir start_logging as_data "
    "restore_data load_data_file resumed_args env_states saves_state own_mujoco plainly_wrapped "
    "restore_env_states run_device set_numerics gather_from_ranks",
    "evaluation, export, main": "evaluate GreedyPolicy export_onnx write_onnx evaluate_saved_model "
    "parse_args main",
}

FEATURES = {  # definitions (Class.method for a method) and Args fields that exist only for the feature
    "checkpoints: writing, reading with checksums and weights_only, verifying, restoring, refusing a "
    "mismatch": "Run.restore Run.load_agent Run.checkpoint_data Run.write Run.last_checkpoint "
    "check_optimizer lock_run_dir as_data restore_data load_data_file what_is_not_a_file check_saved "
    "resumed_args CHECKPOINT_FORMAT NETWORK_FLAGS checkpoint_every resume",
    "the envs' own state saved for an exact resume": "env_states saves_state own_mujoco plainly_wrapped "
    "restore_env_states",
    "input checks: flags, env, spaces, memory, video, ONNX": "check_args check_env check_spaces "
    "check_atari_id check_video_support check_memory check_autoreset check_agent random_action first_line",
    "evaluation (--eval-episodes) and of a saved model (--load-model)": "evaluate evaluate_saved_model "
    "load_model eval_episodes eval_greedy",
    "masks, MultiDiscrete and MultiBinary actions, Dict observations": "MaskInInfo action_nvec env_actions "
    "observation_and_mask mask_logits masked_log_probs MASKED_LOGIT",
    "observation and reward normalization, saved with the model": "RunningMeanStd normalize scale_rewards "
    "norm_obs clip_obs norm_reward clip_reward",
    "ONNX export": "GreedyPolicy export_onnx write_onnx",
    "device choice, TF32, determinism and bf16 on CUDA": "training_device run_device set_numerics use_bf16 "
    "cuda tf32 torch_deterministic precision",
    "objective variants (KL penalties, PPOG, entropy decay, clip annealing)": "categorical_kl gaussian_kl "
    "adapted_kl_beta policy_kl objective kl_beta kl_target ent_coef_decay ent_coef_min anneal_clip",
    "torchrun": "mean_over_processes average_gradients gather_from_ranks",
    "env worker processes": "EnvWorkers async_envs",
    "surviving failed log writes": "Run.logs_may_fail quiet_log_thread NO_LOGS",
    "stop signals": "Run.__enter__ Run.on_signal STOP_SIGNALS",
    "presets (parse_args, the flag, the PRESETS table)": "parse_args PRESETS ZOO_MUJOCO preset",
    "W&B (--track), videos sent to it": "send_videos track wandb_project_name wandb_entity",
    "torch.compile": "check_compile compile",
}


def parts(script: str) -> dict:
    source = open(os.path.join(ROOT, script)).read()
    lines = source.splitlines()
    nodes = [node for node in ast.parse(source).body if isinstance(node, (ast.FunctionDef, ast.ClassDef))]
    starts = {node.name: min([node.lineno] + [d.lineno for d in node.decorator_list]) for node in nodes}
    line_count = {node.name: node.end_lineno - starts[node.name] + 2 for node in nodes}
    operational = next(number for number, line in enumerate(lines, 1)
                       if line.startswith("# ") and "Operational parts" in line)
    named = {part: names.split() for part, names in PARTS.items()}
    every_named = {name for names in named.values() for name in names}
    sizes = {"docstring, imports, constants": min(starts.values()) - 1,
             "algorithm (env factory to update), above the line": sum(
                 count for name, count in line_count.items()
                 if name not in every_named and starts[name] < operational)}
    sizes.update({part: sum(line_count.get(name, 0) for name in names) for part, names in named.items()})
    sizes["the rest (constants between definitions)"] = len(lines) - sum(sizes.values())
    sizes["above the line, Args included"] = operational - 1
    sizes["total"] = len(lines)
    return sizes


def barest(script: str) -> dict:
    source = open(os.path.join(ROOT, script)).read()
    tree = ast.parse(source)
    docstrings, field_docs = set(), set()  # line numbers
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.ClassDef)) and ast.get_docstring(node):
            docstrings.update(range(node.body[0].lineno, node.body[0].end_lineno + 1))
    args = next(node for node in tree.body if isinstance(node, ast.ClassDef) and node.name == "Args")
    for statement in args.body:
        if isinstance(statement, ast.Expr) and isinstance(statement.value, ast.Constant):
            field_docs.update(range(statement.lineno, statement.end_lineno + 1))
    documentation = docstrings | field_docs
    code = [number for number, line in enumerate(source.splitlines(), 1) if line.strip()
            and not line.strip().startswith("#") and number not in documentation]
    fields = sum(isinstance(statement, ast.AnnAssign) for statement in args.body)
    definitions = sum(isinstance(node, (ast.FunctionDef, ast.ClassDef)) for node in tree.body)
    return {"code alone": len(code), "Args fields (a one-line docstring each)": fields,
            "top-level definitions (a blank line each)": definitions,
            "barest form": len(code) + fields + definitions}


def features(script: str) -> dict:
    """The lines of each feature's own definitions and flags; "-" where the script has none of them."""
    source = open(os.path.join(ROOT, script)).read()
    tree = ast.parse(source)
    lines = {}  # name -> its line count (a definition with the blank line after it)
    definitions = [(node, "") for node in tree.body]
    definitions += [(node, f"{parent.name}.") for parent in tree.body if isinstance(parent, ast.ClassDef)
                    for node in parent.body]
    for node, prefix in definitions:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            start = min([node.lineno] + [decorator.lineno for decorator in node.decorator_list])
            lines[prefix + node.name] = node.end_lineno - start + 2
        elif isinstance(node, ast.Assign) and not prefix and isinstance(node.targets[0], ast.Name):
            lines[node.targets[0].id] = node.end_lineno - node.lineno + 1
    args = next(node for node in tree.body if isinstance(node, ast.ClassDef) and node.name == "Args")
    for statement, doc in zip(args.body, args.body[1:]):
        if isinstance(statement, ast.AnnAssign):
            lines[statement.target.id] = doc.end_lineno - statement.lineno + 1  # the field and its docstring
    costs = {feature: [lines[name] for name in names.split() if name in lines]
             for feature, names in FEATURES.items()}
    return {feature: sum(counts) if counts else "-" for feature, counts in costs.items()}


def print_table(title: str, count, scripts: list[str]):
    """A markdown table: a row per entry of count(script), a column per script."""
    table = {script: {row: f"{value:,}" if isinstance(value, int) else value for row, value in
                      count(script).items()} for script in scripts}
    print(f"| {title} | {' | '.join(scripts)} |\n|---|---|---|---|")
    for row in table[scripts[0]]:
        print(f"| {row} | {' | '.join(str(table[script][row]) for script in scripts)} |")


if __name__ == "__main__":
    scripts = ["ppo_discrete.py", "ppo_continuous.py", "ppo_atari.py"]
    print_table("part", parts, scripts)
    print()
    print_table("barest form", barest, scripts)
    print()
    print_table("feature", features, scripts)
