"""Lines per part of each script, split by top-level definition (each with the blank line after it), in the
order a script reads: what the algorithm takes first, then the parts below the line "Operational parts";
then the barest form each script could take with every feature kept: its code alone (no docstring, comment
or blank line), plus a one-line docstring for each Args field (every flag must have one) and a blank line
before each top-level definition.

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
    "files and flags (checkpoint data, loading, resumed flags)": "new_run_dir start_logging env_spaces "
    "as_data restore_data load_data_file resumed_args env_states saves_state own_mujoco plainly_wrapped "
    "restore_env_states training_device set_numerics gather_from_ranks",
    "evaluation, export, main": "evaluate GreedyPolicy export_onnx write_onnx evaluate_saved_model "
    "parse_args main",
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


def print_table(title: str, count, scripts: list[str]):
    """A markdown table: a row per entry of count(script), a column per script."""
    table = {script: count(script) for script in scripts}
    print(f"| {title} | {' | '.join(scripts)} |\n|---|---|---|---|")
    for row in table[scripts[0]]:
        print(f"| {row} | {' | '.join(f'{table[script][row]:,}' for script in scripts)} |")


if __name__ == "__main__":
    scripts = ["ppo_discrete.py", "ppo_continuous.py", "ppo_atari.py"]
    print_table("part", parts, scripts)
    print()
    print_table("barest form", barest, scripts)
