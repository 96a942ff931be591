"""Lines per part of each script, split by top-level definition (each with the blank line after it).

    python benchmarks/size.py
"""

import ast
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PARTS = {  # the parts below the line "Operational parts", by the definitions they hold
    "input checks": "fail check_args check_spaces check_video_support check_atari_id use_bf16",
    "torchrun and run set-up": "Run start_run new_run_dir mean_over_ranks_ gather_from_ranks merge_over_ranks",
    "checkpoints, exact resume, signals": "catch_stop_signals checkpoint_data write_checkpoint stopped_by "
    "restore_checkpoint env_spaces as_data restore_data env_states restore_env_states load_data_file "
    "resumed_args last_checkpoint",
    "logging": "start_logging logs_may_fail log_iteration explained_variance",
    "evaluation, export, finishing": "finish_run evaluate GreedyPolicy export_onnx write_onnx",
    "Args": "Args",
    "train()": "train",
}


def parts(script: str) -> dict:
    source = open(os.path.join(ROOT, script)).read()
    spans = {node.name: (min([node.lineno] + [d.lineno for d in node.decorator_list]), node.end_lineno)
             for node in ast.parse(source).body if isinstance(node, (ast.FunctionDef, ast.ClassDef))}
    lines = source.splitlines()
    sizes = {"docstring, imports, constants": min(start for start, _ in spans.values()) - 1}
    named = {name for names in PARTS.values() for name in names.split()}
    for part, names in PARTS.items():
        sizes[part] = sum(end - start + 2 for name, (start, end) in spans.items() if name in names.split())
    sizes["algorithm (env factory to update)"] = sum(
        end - start + 2 for name, (start, end) in spans.items() if name not in named and name != "main"
        and start < next(i for i, line in enumerate(lines, 1) if line.startswith("# ") and "Operational" in line))
    sizes["the rest (masks and actions, main)"] = len(lines) - sum(sizes.values())
    sizes["total"] = len(lines)
    return sizes


if __name__ == "__main__":
    scripts = ["ppo_discrete.py", "ppo_continuous.py", "ppo_atari.py"]
    table = {script: parts(script) for script in scripts}
    print(f"| part | {' | '.join(scripts)} |\n|---|---|---|---|")
    for part in table[scripts[0]]:
        print(f"| {part} | {' | '.join(f'{table[script][part]:,}' for script in scripts)} |")
