"""The style rules a reader relies on, checked on the three scripts: no line over 110 characters, no nested
conditional expressions, no values packed into one assignment (`a, b = x, y`: one assignment a line), no
`hasattr` on the flags (a copy carries no other script's knowledge), and a `train()` that reads as the loop:
at most 45 lines, at most 6 of them reaching the harness (the run object); nothing above the line
"Operational parts" uses what is defined below it, but train() the Run."""

import ast
import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def problems(source: str) -> list[str]:
    """Where source breaks the rules, one entry each (line number and what)."""
    found = [f"{number}: {len(line)} characters" for number, line in enumerate(source.split("\n"), 1)
             if len(line) > 110]
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, ast.IfExp) and ast.IfExp in (type(node.body), type(node.orelse)):
            found.append(f"{node.lineno}: a nested conditional expression")
        if (isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Tuple)
                and isinstance(node.value, ast.Tuple)):
            found.append(f"{node.lineno}: values packed into one assignment")
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "hasattr"
                and ast.unparse(node.args[0]) == "args"):
            found.append(f"{node.lineno}: hasattr on args")
        if isinstance(node, ast.FunctionDef) and node.name == "train":
            lines = source.split("\n")[node.lineno - 1 : node.end_lineno]
            harness = [line for line in lines if re.search(r"\b[Rr]un\.", line)]
            if len(lines) > 45 or len(harness) > 6:
                found.append(f"{node.lineno}: train() of {len(lines)} lines, {len(harness)} reaching the run")
    return found + used_from_below_the_line(source, tree)


def used_from_below_the_line(source: str, tree: ast.Module) -> list[str]:
    """Where a definition above the line "Operational parts" uses a name defined below it (train() may use
    the Run)."""
    marks = [number for number, line in enumerate(source.split("\n"), 1)
             if line.startswith("# ") and "Operational parts" in line]
    if not marks:
        return []
    below = {node.name for node in tree.body if isinstance(node, (ast.FunctionDef, ast.ClassDef))
             and node.lineno > marks[0]}
    below |= {target.id for node in tree.body if isinstance(node, ast.Assign) and node.lineno > marks[0]
              for target in node.targets if isinstance(target, ast.Name)}
    found = []
    for definition in tree.body:
        allowed = {"Run"} if getattr(definition, "name", None) == "train" else set()
        if definition.lineno < marks[0]:
            found += [f"{name.lineno}: {name.id}, defined below the line, used above it"
                      for name in ast.walk(definition) if isinstance(name, ast.Name)
                      and isinstance(name.ctx, ast.Load) and name.id in below - allowed]
    return found


@pytest.mark.parametrize("script", ["ppo_discrete.py", "ppo_continuous.py", "ppo_atari.py"])
def test_script_keeps_the_style_rules(script):
    with open(os.path.join(ROOT, script)) as file:
        assert problems(file.read()) == []


def test_each_rule_is_caught():
    lines = ["a, b = 1, 2", "c = 1 if a else 2 if b else 3", "d = hasattr(args, 'x')", "e = 0" + " " * 106]
    assert sorted(problems("\n".join(lines))) == [
        "1: values packed into one assignment", "2: a nested conditional expression", "3: hasattr on args",
        "4: 111 characters"]
    loop = ["def train():", "    with Run.start() as run:", *[f"        run.part_{i}()" for i in range(5)]]
    assert problems("\n".join(loop)) == []  # 6 lines reach the run
    assert problems("\n".join([*loop, "        run.more()"])) == ["1: train() of 8 lines, 7 reaching the run"]
    harness = ["# === Operational parts ===", "class Run: pass", "def fail(): pass", "NO_LOGS = None"]
    assert problems("\n".join([*loop, *harness])) == []
    above = ["def update():", "    fail()", "def train():", "    x = Run, NO_LOGS"]
    assert problems("\n".join([*above, *harness])) == [
        "2: fail, defined below the line, used above it", "4: NO_LOGS, defined below the line, used above it"]
    long_loop = [*loop, *["        x = 1"] * 39]
    assert problems("\n".join(long_loop)) == ["1: train() of 46 lines, 6 reaching the run"]
