"""`task: grpo` and `task: rloo`: online RL with TRL's GRPOTrainer / RLOOTrainer — the model samples
`num_generations` completions per prompt, the recipe's rewards score them, and each completion's advantage is its
reward against its group's (RLOO: against the other completions' mean).

What llmkit adds: the prompts (`llmkit.data.prompts`), the rewards (`llmkit.rewards`: built-ins, user functions and
reward runs, each failing with one sentence), the reference under an adapter (the base with the adapter disabled, as
for DPO), and a held-out measurement before and after training: every reward on a greedy completion per prompt.
"""

from __future__ import annotations

from typing import Any

import datasets
from transformers import PreTrainedTokenizerBase

from llmkit import rewards as reward_functions
from llmkit.console import say
from llmkit.data.cache import key_for
from llmkit.data.prepared import Prepared, prepare_splits
from llmkit.data.prompts import build_prompts, prompt_ids, prompt_uses_chat, to_trl
from llmkit.data.sources import Rows
from llmkit.fit import fit
from llmkit.generation import configure, generate
from llmkit.models import Trained
from llmkit.recipe import Recipe
from llmkit.recipe.rl import OnlineSection, columns_needed
from llmkit.rewards import greedy
from llmkit.run import RunEnv, TaskResult, build_model, total_steps, training_args
from llmkit.tasks.preference import is_peft, trl_defaults, use_disabled_adapter

# What the reward curve in metrics.json keeps of each logged step (TRL's names), besides each reward's mean and std.
CURVE = ("reward", "reward_std", "kl", "completions/mean_length", "completions/clipped_ratio", "loss")


def _trl(task: str) -> tuple[type, type]:
    """The TRL config and trainer classes of an online task (imported only when one runs)."""
    if task == "rloo":
        from trl import RLOOConfig, RLOOTrainer

        return RLOOConfig, RLOOTrainer
    from trl import GRPOConfig, GRPOTrainer

    return GRPOConfig, GRPOTrainer


def section_of(recipe: Recipe) -> OnlineSection:
    section = getattr(recipe, recipe.task)
    assert isinstance(section, OnlineSection)
    return section


def prepare(env: RunEnv, tokenizer: PreTrainedTokenizerBase) -> Prepared:
    """Rows → prompts in TRL's layout with their other columns; rows without a column a built-in reward reads, and
    prompts past data.max_length, are handled before any model loads."""
    data = env.recipe.data
    needed = columns_needed(section_of(env.recipe))
    return prepare_splits(
        data,
        lambda rows: build_prompts(rows, data, tokenizer, needed),
        f"(all longer than data.max_length={data.max_length})",
        unit="prompts",
        key=key_for(env.recipe, tokenizer, head=env.head, needed=dict(needed)),  # the checks depend on the rewards
    )


def run(env: RunEnv) -> TaskResult:
    task, section = env.recipe.task, section_of(env.recipe)
    config_class, trainer_class = _trl(task)
    datasets.disable_progress_bars()
    tokenizer = env.tokenizer()
    prepared = prepare(env, tokenizer)
    rewards = reward_functions.build(section, tokenizer, task)  # user code imported, reward runs checked, then models
    held_out = prepared.held_out.to_list() if prepared.held_out else None  # answered prompt by prompt
    sampled_eval = bool(held_out) and env.recipe.training.eval_strategy not in (None, "no")  # TRL's own, when asked
    args = training_args(env, config_class, evaluate=sampled_eval, **options(env), reward_weights=rewards.weights)
    completions = len(prepared.train) * args.num_generations * args.num_iterations
    built = build_model(env, tokenizer, total_steps=total_steps(completions, args))
    trainer = trainer_class(
        model=built.model,
        reward_funcs=rewards.functions,
        args=args,
        train_dataset=prepared.train,
        eval_dataset=prepared.held_out if sampled_eval else None,
        processing_class=tokenizer,
    )
    say(f"reference: {reference(trainer, prompt_ids(prepared.train[0]['prompt'], tokenizer))}")

    metrics: dict[str, Any] = {}
    if held_out:
        before = greedy.evaluate(built.model, tokenizer, held_out, rewards, args.max_completion_length)
        metrics.update({f"eval_greedy_{k}_before": v for k, v in before.items()})
        say(f"held-out, greedy, before training: {_describe(before)}")
    metrics.update(fit(trainer, env, built))
    metrics.update(reward_curve(trainer.state.log_history, rewards.labels))
    if held_out:
        after = greedy.evaluate(built.model, tokenizer, held_out, rewards, args.max_completion_length)
        metrics.update({f"eval_greedy_{k}": v for k, v in after.items()})
        say(f"held-out, greedy, after training:  {_describe(after)} ({len(held_out)} prompts)")
    if is_peft(built.model) and "ref" in built.model.peft_config:
        built.model.delete_adapter("ref")  # TRL's frozen copy of the initial adapter is not part of the result
    return TaskResult(metrics, built, tokenizer, data=prepared.sources, manifest={"rewards": rewards.records})


def options(env: RunEnv) -> dict[str, Any]:
    """GRPOConfig keys from the recipe over llmkit's defaults; every step is logged unless the recipe says otherwise,
    since each step's rewards are the learning curve."""
    keys = {k: v for k, v in section_of(env.recipe).kwargs().items() if k != "rewards"}
    defaults = {
        **trl_defaults(env),
        "logging_steps": env.recipe.training.logging_steps or 1,
        "include_num_input_tokens_seen": "no",  # TRL counts prompt and completion tokens itself
    }
    return {**defaults, **keys}


def reference(trainer: Any, probe_ids: list[int]) -> str:
    """What the KL penalty compares the policy with, said in one line; under an adapter, the base with the adapter
    disabled (TRL's copy of a fresh adapter is dropped)."""
    model = trainer.model
    if trainer.beta == 0:
        return "none (beta is 0: no KL penalty)"
    if is_peft(model):
        return use_disabled_adapter(model, probe_ids)
    trainer.ref_model.requires_grad_(False)
    return "a frozen copy of the base model"


def reward_curve(history: list[dict[str, Any]], labels: list[str]) -> dict[str, Any]:
    """Each logged training step's rewards (mean and std of each), KL and completion length as `reward_curve`, and
    the last of them as `train_*`."""
    keys = [*CURVE, *(f"rewards/{label}/{stat}" for label in labels for stat in ("mean", "std"))]
    curve = [{"step": e["step"], **{k: e[k] for k in keys if k in e}} for e in history if "reward" in e]
    last = {f"train_{k}": v for k, v in curve[-1].items() if k != "step"} if curve else {}
    return {**last, "reward_curve": curve}


def _describe(metrics: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.4g}" for k, v in metrics.items())


# ---------------------------------------------------------------- llmkit eval / llmkit predict / llmkit generate


def evaluate(env: RunEnv, trained: Trained, rows: Rows, prefix: str) -> dict[str, float]:
    """Every reward on a greedy completion of each prompt of `rows` (`llmkit eval`), as measured after training."""
    section, data = section_of(env.recipe), env.recipe.data
    examples, _, stats = build_prompts(rows, data, trained.tokenizer, columns_needed(section))
    say(f"{prefix}: {stats.summary(rows.name)}")
    rewards = reward_functions.build(section, trained.tokenizer, env.recipe.task)
    limit = section.max_completion_length or reward_functions.DEFAULT_MAX_COMPLETION
    scores = greedy.evaluate(trained.model, trained.tokenizer, examples, rewards, limit)
    return {f"{prefix}_greedy_{k}": v for k, v in scores.items()}


def predict(recipe: Recipe, trained: Trained, rows: list[dict[str, Any]], origins: list[str]) -> list[dict[str, Any]]:
    """The model's answer to each row's prompt, rendered as in training and decoded with the `generation` settings."""
    data, tokenizer = recipe.data, trained.tokenizer
    use_chat = prompt_uses_chat(data.template, tokenizer)
    prompts = [prompt_ids(to_trl(row, use_chat, data.system_prompt)["prompt"], tokenizer) for row in rows]
    configure(trained.model, recipe.generation, tokenizer)
    return [{"generation": text} for text in generate(trained.model, tokenizer, prompts, len(prompts))]
