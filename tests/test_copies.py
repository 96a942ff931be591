"""The three scripts share no module: what is the same in them is copied, and the copies must stay byte-identical.
Every top-level definition that two scripts both make is compared, except those a script makes its own."""

import ast
import itertools
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = ["ppo_discrete", "ppo_continuous", "ppo_atari"]
# what each kind of problem defines its own way; everything else that two scripts both define is a copy
OWN = {"Args", "make_env", "make_envs", "Agent", "EnvState", "Rollout", "Batch", "restart_episodes", "collect_rollout",
       "make_batch", "ppo_loss", "train", "check_spaces", "env_states", "restore_env_states", "evaluate",
       "GreedyPolicy", "export_onnx"}
OWN_IN = {"ppo_continuous": {"sample_actions"}}  # a Gaussian's, not the categorical's of the other two


def definitions(script: str) -> dict:
    """Top-level function and class name -> its source text."""
    source = open(os.path.join(ROOT, f"{script}.py")).read()
    return {node.name: ast.get_source_segment(source, node) for node in ast.parse(source).body
            if isinstance(node, (ast.FunctionDef, ast.ClassDef))}


def drifted_copies(first: str, ours: dict, second: str, theirs: dict) -> list[str]:
    shared = set(ours) & set(theirs) - OWN - OWN_IN.get(first, set()) - OWN_IN.get(second, set())
    assert len(shared) >= 20  # the formulas and the operational parts
    return [name for name in sorted(shared) if ours[name] != theirs[name]]


@pytest.mark.parametrize("first,second", list(itertools.combinations(SCRIPTS, 2)))
def test_shared_definitions_are_byte_identical(first, second):
    drifted = drifted_copies(first, definitions(first), second, definitions(second))
    assert not drifted, f"{first}.py and {second}.py differ in {drifted}: make the copies the same again"


def test_a_drifted_copy_is_caught():
    atari = definitions("ppo_atari")
    atari["linear_decay"] = atari["linear_decay"].replace("(iteration - 1.0)", "iteration")
    assert drifted_copies("ppo_discrete", definitions("ppo_discrete"), "ppo_atari", atari) == ["linear_decay"]
