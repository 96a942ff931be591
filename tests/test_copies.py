"""The three scripts share no module: what is the same in them is copied, and the copies must stay
byte-identical. Every top-level definition and module-level assignment that two scripts both make is compared,
except those a script makes its own."""

import ast
import functools
import itertools
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = ["ppo_discrete", "ppo_continuous", "ppo_atari"]
# what each kind of problem defines its own way; everything else that two scripts both define is a copy
OWN = {
    "Args",
    "make_env",
    "Agent",
    "make_agent",
    "EnvState",
    "Rollout",
    "Batch",
    "restart_episodes",
    "sample_actions",
    "collect_rollout",
    "make_batch",
    "ppo_loss",
    "policy_kl",
    "train",
    "check_args",
    "check_spaces",
    "random_action",
    "env_states",
    "restore_env_states",
    "check_agent",
    "check_video_support",
    "evaluate",
    "GreedyPolicy",
    "export_onnx",
    "evaluate_saved_model",
    "CHECKPOINT_FORMAT",
    "NETWORK_FLAGS",
    "PRESETS",
}
# ppo_atari.py alone runs under torchrun: its harness and its update are its own; it has no --preset (its
# defaults are CleanRL's Atari settings), so its main is its own
OWN_IN = {
    "ppo_atari": {
        "Run",
        "fail",
        "update",
        "make_envs",
        "check_env",
        "load_data_file",
        "start_logging",
        "NO_LOGS",
        "main",
        "training_device",
    }
}


def definitions(script: str) -> dict:
    """Top-level function, class and assigned name -> its source text (a copy the caller may change)."""
    return dict(read_definitions(script))


@functools.cache
def read_definitions(script: str) -> dict:
    source = open(os.path.join(ROOT, f"{script}.py"), "rb").read()
    lines = source.splitlines(keepends=True)

    def text(node):  # ast.get_source_segment of a top-level node (which starts a line), without its slowness
        whole = b"".join(lines[node.lineno - 1 : node.end_lineno])
        return whole[: len(whole) - len(lines[node.end_lineno - 1]) + node.end_col_offset].decode()

    found = {}
    for node in ast.parse(source).body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            found[node.name] = text(node)
        elif isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
            found[node.targets[0].id] = text(node)
    return found


def drifted_copies(first: str, ours: dict, second: str, theirs: dict) -> list[str]:
    shared = set(ours) & set(theirs) - OWN - OWN_IN.get(first, set()) - OWN_IN.get(second, set())
    assert len(shared) >= 15  # the formulas and the harness
    return [name for name in sorted(shared) if ours[name] != theirs[name]]


@pytest.mark.parametrize("first,second", list(itertools.combinations(SCRIPTS, 2)))
def test_shared_definitions_are_byte_identical(first, second):
    drifted = drifted_copies(first, definitions(first), second, definitions(second))
    assert not drifted, f"{first}.py and {second}.py differ in {drifted}: make the copies the same again"


def test_a_drifted_copy_is_caught():
    atari = definitions("ppo_atari")
    atari["iteration_schedule"] = atari["iteration_schedule"].replace("(iteration - 1.0)", "iteration")
    assert drifted_copies("ppo_discrete", definitions("ppo_discrete"), "ppo_atari", atari) == [
        "iteration_schedule"
    ]


def test_module_level_code_is_compared():
    assert "NO_LOGS" in definitions("ppo_discrete") and "MASKED_LOGIT" in definitions("ppo_discrete")
    continuous = definitions("ppo_continuous")
    continuous["NO_LOGS"] = continuous["NO_LOGS"].replace("None", "0", 1)
    assert drifted_copies("ppo_discrete", definitions("ppo_discrete"), "ppo_continuous", continuous) == [
        "NO_LOGS"
    ]


def test_no_script_defines_what_it_never_uses():
    for script in SCRIPTS:
        source = open(os.path.join(ROOT, f"{script}.py")).read()
        unused = [
            name for name in definitions(script) if source.count(name) == 1 and name not in ("Args", "main")
        ]
        assert not unused, f"{script}.py defines {unused} and never uses them"
