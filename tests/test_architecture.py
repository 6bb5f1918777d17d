"""The shape of the code, as docs/design.md promises it: every task satisfies the contract, the top-level modules
import one another without a cycle, no module grows past ~400 lines, and adding a task or a method is one file and
one registry line — checked by doing both on a copy of the package."""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, sft_recipe, write_recipe

PACKAGE = REPO / "llmkit"
MAX_LINES = 400


def test_every_registered_task_satisfies_the_contract():
    from llmkit import tasks
    from llmkit.recipe import TASKS

    for name in TASKS:
        module = tasks.get(name)
        assert isinstance(module, tasks.Task), name
    evaluates = {name for name in TASKS if isinstance(tasks.get(name), tasks.Evaluates)}
    predicts = {name for name in TASKS if isinstance(tasks.get(name), tasks.Predicts)}
    assert evaluates == predicts == {"sft", "classification", "seq2seq", "reward", "grpo", "rloo"}


def _imports(path: Path) -> set[str]:
    """The llmkit modules `path` imports, at module level or inside functions, except under `if TYPE_CHECKING`."""
    tree = ast.parse(path.read_text())
    typing_only = {
        id(node)
        for block in ast.walk(tree)
        if isinstance(block, ast.If) and "TYPE_CHECKING" in ast.unparse(block.test)
        for stmt in block.body
        for node in ast.walk(stmt)
    }
    package = ".".join(path.relative_to(REPO).with_suffix("").parts)
    found = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = package.split(".")[: -node.level]
                name = ".".join([*base, node.module] if node.module else base)
            else:
                name = node.module or ""
            found.add(name)
            found |= {f"{name}.{alias.name}" for alias in node.names}
    return {name for name in found if name.startswith("llmkit.")}


def _top(module: str) -> str:
    return module.split(".")[1]


def test_top_level_modules_import_one_another_without_a_cycle():
    graph: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        if path == PACKAGE / "__init__.py" or path.name == "__main__.py":
            continue  # the package root re-exports the public API; __main__ is the CLI
        source = _top("llmkit." + ".".join(path.relative_to(PACKAGE).with_suffix("").parts))
        targets = {_top(name) for name in _imports(path)} - {source}
        graph.setdefault(source, set()).update(
            t for t in targets if (PACKAGE / t).exists() or (PACKAGE / f"{t}.py").exists()
        )

    cycle = _find_cycle(graph)
    assert cycle is None, f"import cycle between top-level modules: {' → '.join(cycle)}"


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_no_module_is_a_god_file():
    long = {
        str(p.relative_to(REPO)): n for p in PACKAGE.rglob("*.py") if (n := len(p.read_text().splitlines())) > MAX_LINES
    }
    assert not long, f"modules over {MAX_LINES} lines: {long}"


# ---------------------------------------------------------------- extension points, done for real on a copy


def _copy_package(tmp_path: Path) -> Path:
    root = tmp_path / "pkg"
    shutil.copytree(PACKAGE, root / "llmkit", ignore=shutil.ignore_patterns("__pycache__"))
    return root


def _llmkit(root: Path, cwd: Path, *argv: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run([sys.executable, "-m", "llmkit", *argv], cwd=cwd, env=env, capture_output=True, text=True)


# The whole of "add a task" (docs/design.md): this file, and the registry line below.
LM_TASK = '''"""`task: lm`: continued pre-training on plain text, every token trained."""

from __future__ import annotations

from transformers import Trainer

from llmkit.data.collate import Collator
from llmkit.fit import fit
from llmkit.heldout import predicted_tokens, weigh_eval_loss
from llmkit.run import RunEnv, TaskResult, build_model, total_steps, training_args
from llmkit.tasks.sft import prepare


def run(env: RunEnv) -> TaskResult:
    tokenizer = env.tokenizer()
    data = prepare(env, tokenizer)
    args = training_args(env, evaluate=bool(data.held_out))
    built = build_model(env, tokenizer, total_steps=total_steps(len(data.train), args))
    trainer = Trainer(
        model=built.model,
        args=args,
        train_dataset=data.train,
        eval_dataset=data.held_out,
        data_collator=Collator(tokenizer.pad_token_id),
    )
    weigh_eval_loss(trainer, predicted_tokens)  # eval_loss: the mean over the held-out split's predicted tokens
    return TaskResult(fit(trainer, env, built), built, tokenizer, data=data.sources)
'''
LM_REGISTRY_LINE = (
    'TASKS["lm"] = TaskSpec(module="lm", families=("gpt2", "llama"), head="causal_lm", formats=("text",), '
    'doc="continued pre-training on plain text")\n'
)

# The whole of "add a method": this file, and one `register(...)` line.
LOHA_METHOD = '''"""LoHa: low-rank Hadamard-product updates (Hyeon-Woo et al., 2022), through peft's LoHaConfig."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from llmkit.methods.base import MethodConfig, MethodContext
from llmkit.methods.peft_common import TargetModules, peft_task_kwargs, target_modules


class LohaMethod(MethodConfig):
    """LoHa (Hyeon-Woo et al., 2022): the update is the Hadamard product of two low-rank products."""

    name: Literal["loha"] = "loha"
    r: int = Field(8, gt=0, description="rank of each low-rank factor")
    alpha: float = Field(8, gt=0, description="scaling numerator (peft's LoHaConfig.alpha)")
    target_modules: TargetModules = "all-linear"

    mergeable = True

    def upstream_config(self, ctx: MethodContext) -> Any:
        from peft import LoHaConfig

        return LoHaConfig(
            r=self.r, alpha=self.alpha, target_modules=target_modules(self.target_modules), **peft_task_kwargs(ctx)
        )

    def apply(self, model: Any, ctx: MethodContext) -> Any:
        from peft import get_peft_model

        return get_peft_model(model, self.upstream_config(ctx))
'''


@pytest.mark.e2e
def test_a_new_task_is_one_file_and_one_registry_line(tiny_dirs, instructions_small, tmp_path):
    root = _copy_package(tmp_path)
    (root / "llmkit" / "tasks" / "lm.py").write_text(LM_TASK)
    registry = root / "llmkit" / "recipe" / "tasks.py"
    registry.write_text(registry.read_text() + "\n" + LM_REGISTRY_LINE)
    text = tmp_path / "text.jsonl"
    rows = json.loads(instructions_small.read_text())
    text.write_text("".join(json.dumps({"text": r["instruction"] + " " + r["output"]}) + "\n" for r in rows))
    recipe = sft_recipe(tiny_dirs["gpt2"], text, tmp_path / "run", task="lm")
    recipe["data"]["format"] = "text"
    recipe["training"]["max_steps"] = 4
    path = write_recipe(tmp_path, recipe)

    done = _llmkit(root, tmp_path, "train", str(path))
    assert done.returncode == 0, done.stderr[-3000:]
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert set(manifest["data"]) == {"train", "validation"}, "the manifest records what the task read"
    assert json.loads((tmp_path / "run" / "llmkit.json").read_text())["task"] == "lm"
    refused = _llmkit(root, tmp_path, "validate", str(path), f"model.name={tiny_dirs['bert']}")
    assert "task: 'lm' cannot run on a bert model" in refused.stderr, "the registry line is what validate checks"


@pytest.mark.e2e
def test_a_new_method_is_one_file_and_one_registry_line(tiny_dirs, instructions_small, tmp_path):
    root = _copy_package(tmp_path)
    (root / "llmkit" / "methods" / "loha.py").write_text(LOHA_METHOD)
    registry = root / "llmkit" / "methods" / "__init__.py"
    source = registry.read_text().replace(
        "register(LlamaAdapterMethod)\n", "register(LlamaAdapterMethod)\nregister(LohaMethod)\n"
    )
    source = source.replace(
        "from llmkit.methods.lora import", "from llmkit.methods.loha import LohaMethod\nfrom llmkit.methods.lora import"
    )
    registry.write_text(source)
    recipe = sft_recipe(tiny_dirs["llama"], instructions_small, tmp_path / "run", method={"name": "loha", "r": 4})
    recipe["training"]["max_steps"] = 4
    path = write_recipe(tmp_path, recipe)

    done = _llmkit(root, tmp_path, "train", str(path))
    assert done.returncode == 0, done.stderr[-3000:]
    assert "loha:" in done.stderr and "parameters train" in done.stderr
    merged = _llmkit(root, tmp_path, "merge", str(tmp_path / "run"), "--output", str(tmp_path / "merged"))
    assert merged.returncode == 0, merged.stderr[-3000:]
    assert (tmp_path / "merged" / "config.json").is_file()
    explained = _llmkit(root, tmp_path, "explain")
    assert "## method: loha" in explained.stdout, "the reference follows the registry"
