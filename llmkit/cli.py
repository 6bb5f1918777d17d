"""`llmkit` command line: parse, validate, call the same functions the Python API exposes.

User errors (LlmkitError) print as one sentence each and exit non-zero; anything else is a bug and keeps its
traceback. Commands import torch only when they need it, so `--help` and `validate` stay fast.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence

from llmkit import __version__
from llmkit.errors import LlmkitError


def positive(text: str) -> int:
    """argparse type for counts: a whole number of at least 1 (0 batches or tokens is a mistake, not a no-op)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got '{text}'") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _recipe_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("recipe", help="path to a recipe YAML file")
    _overrides(parser, "override recipe values, e.g. training.max_steps=10 output_dir=/tmp/run")


def _run_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", help="a finished run (output_dir of llmkit train) or <run>/checkpoints/checkpoint-N")
    _overrides(parser, "change the run's recipe, e.g. data.test=new.jsonl generation.max_new_tokens=32")
    parser.add_argument("--recipe", help="read data and settings from this recipe instead of the run's own")
    parser.add_argument("--checkpoint", help=argparse.SUPPRESS)  # llmkit 0.1's shape, answered by _run_first


def _overrides(parser: argparse.ArgumentParser, help: str) -> None:
    parser.add_argument("overrides", nargs="*", metavar="key.path=value", help=help)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="llmkit", description="Fine-tune BERT, GPT-2, T5 and Llama-style models from one YAML recipe."
    )
    parser.add_argument("--version", action="version", version=f"llmkit {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("train", help="train a recipe and write the model, metrics and manifest to output_dir")
    _recipe_args(p)

    p = sub.add_parser("validate", help="check a recipe (all problems at once) and print it resolved")
    _recipe_args(p)

    p = sub.add_parser("plan", help="will it fit? parameters and peak memory from the model config, no weights loaded")
    _recipe_args(p)
    p.add_argument("--device", help="cpu or cuda:<memory>GB, e.g. cuda:80GB (default: this machine's GPU, else cpu)")

    p = sub.add_parser("explain", help="print every recipe key with its type, default and meaning (docs/recipe.md)")
    p.add_argument("section", nargs="?", help="only this section: model, data, method, method.lora, training, ...")

    p = sub.add_parser("prepare", help="read, check, tokenise and cache the recipe's data (e.g. on a CPU node)")
    _recipe_args(p)

    p = sub.add_parser("inspect-data", help="show one rendered training example with its label mask")
    _recipe_args(p)
    p.add_argument("--index", type=int, default=0, help="which example (default 0)")
    p.add_argument("--split", choices=("train", "validation"), default="train")
    p.add_argument("--tokens", action="store_true", help="also list every token with its label")

    p = sub.add_parser("eval", help="a finished run's task metrics on one split of its data, as JSON")
    _run_args(p)
    p.add_argument("--split", choices=("train", "validation", "test"), help="default: test if the recipe has one")
    p.add_argument("--output", help="JSON file to write (default: eval-<split>.json in the run directory)")
    p.add_argument(
        "--samples",
        type=positive,
        metavar="N",
        help="sft, seq2seq: also generate for the split's first N prompts; prompt, reference and generation side by "
        "side in samples-<split>.jsonl next to the JSON, and a preview",
    )

    p = sub.add_parser(
        "benchmark",
        help="lm-evaluation-harness tasks on a run or any decoder; --baseline adds the run's base model and the delta",
    )
    p.add_argument("model", help="a finished run directory, a packaged:<alias>, a model directory or a hub id")
    p.add_argument(
        "--tasks",
        action="append",
        required=True,
        help="lm-eval task or group names, each NAME or NAME:N-SHOT; local task files (.yaml); or the preset "
        "open-llm-leaderboard (arc_challenge:25, hellaswag:10, mmlu:5, truthfulqa_mc2:0); comma-separated or repeated",
    )
    p.add_argument("--num-fewshot", "--num_fewshot", type=int, help="n-shot for the tasks that do not give one")
    p.add_argument("--limit", type=float, help="examples per task (a fraction if below 1): quick checks, not figures")
    p.add_argument("--batch-size", "--batch_size", type=positive, default=1, help="requests per forward (default 1)")
    p.add_argument(
        "--apply-chat-template", "--apply_chat_template", action="store_true", help="prompt in the chat template"
    )
    p.add_argument(
        "--fewshot-as-multiturn",
        "--fewshot_as_multiturn",
        action=argparse.BooleanOptionalAction,
        help="few-shot examples as chat turns (default: on with --apply-chat-template, as in lm_eval)",
    )
    p.add_argument("--baseline", action="store_true", help="also evaluate the model the run was trained from")
    p.add_argument("--log-samples", "--log_samples", action="store_true", help="also write every sample's log")
    p.add_argument("--output", help="JSON file to write (default: benchmark.json in a run directory)")

    p = sub.add_parser("predict", help="labels, reward scores or generations for every row of a file, as JSON lines")
    _run_args(p)
    p.add_argument("--input", required=True, help="rows in the run's format (jsonl, csv, tsv, txt, json, parquet)")
    p.add_argument("--output", required=True, help="JSON lines file to create: each input row plus its prediction")
    p.add_argument("--batch-size", type=positive, default=16, help="rows per forward pass (default 16)")

    p = sub.add_parser("generate", help="generate text from a finished sft, seq2seq, grpo or rloo run, in its template")
    p.add_argument("run_dir", help="the run's output directory")
    p.add_argument("--prompt", action="append", required=True, help="what to ask; repeat for several prompts")
    p.add_argument("--max-new-tokens", type=int, help="override the run's generation.max_new_tokens")

    p = sub.add_parser("merge", help="fold a finished run's adapter into its base; save a plain transformers model")
    p.add_argument("run_dir", help="a finished run (the output_dir of `llmkit train`)")
    p.add_argument("--output", required=True, help="directory for the merged model (must not exist or be empty)")
    p.add_argument(
        "--dtype", choices=("float32", "bfloat16", "float16"), help="dtype to write (default: the base model's)"
    )

    p = sub.add_parser(
        "rationales",
        help="rationale distillation, step 1: a teacher explains each input; writes JSONL as it goes, resumable",
    )
    p.add_argument("--teacher", required=True, help="hub id, directory, .gguf, packaged:<alias> or llmkit run")
    p.add_argument("--data", required=True, help="json, jsonl, csv, tsv or parquet file of inputs")
    p.add_argument("--output", required=True, help="JSONL to append to (rerun to continue an interrupted run)")
    p.add_argument("--input-column", default="input", help="column holding the input text (default: input)")
    p.add_argument("--label-column", help="column holding the gold label, if any; it becomes the label")
    p.add_argument("--prompt", help="prompt template with {input} (and {label}); default asks for 'Answer: ...'")
    p.add_argument("--max-new-tokens", type=positive, default=128)
    p.add_argument("--batch-size", type=positive, default=4)
    p.add_argument("--limit", type=positive, help="stop once this many inputs are done in total")
    return parser


def parse(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Like parse_args, but key=value overrides may also follow the options (`eval RUN --split test k=v`)."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and hasattr(args, "overrides") and all("=" in e and not e.startswith("-") for e in extra):
        args.overrides += extra
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv)
    if not sys.stderr.isatty():  # a log file gets plain lines, not bars redrawn with carriage returns
        os.environ.setdefault("TQDM_DISABLE", "1")
    try:
        return COMMANDS[args.command](args)
    except LlmkitError as exc:
        if os.environ.get("RANK", "0") == "0":  # under torchrun every process has the same sentence to say
            print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(
            "interrupted; a run with checkpoints continues with training.resume_from_checkpoint=true", file=sys.stderr
        )
        return 130


def _load(args: argparse.Namespace):
    from llmkit.recipe import Recipe

    return Recipe.from_yaml(args.recipe, args.overrides)


def cmd_train(args: argparse.Namespace) -> int:
    recipe = _load(args)
    from llmkit.console import is_main_process
    from llmkit.progress import summary
    from llmkit.stopping import Preempted
    from llmkit.trainer import train

    try:
        result = train(recipe, source=args.recipe)
    except Preempted as exc:
        raise Preempted(exc.signum, exc.step, exc.checkpoint, resume_command(args)) from None
    if is_main_process():
        print(summary(result.metrics))
        print(f"output: {result.output_dir}")
    return 0


def resume_command(args: argparse.Namespace) -> str:
    """The command that continues a preempted run: this one, resuming (under torchrun, its worker command)."""
    import shlex

    kept = [o for o in args.overrides if not o.startswith("training.resume_from_checkpoint=")]
    command = shlex.join(["llmkit", "train", args.recipe, *kept, "training.resume_from_checkpoint=true"])
    world = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    return f"torchrun --nproc_per_node {world} -m {command}" if world > 1 else command


def cmd_validate(args: argparse.Namespace) -> int:
    recipe = _load(args)
    print(f"# {args.recipe}: valid", file=sys.stderr)
    if recipe.data.train is None:
        print(
            f"# {args.recipe} has no data.train: it trains only from Python, with its rows passed as "
            "llmkit.Trainer(recipe, train=rows) (docs/python-api.md); llmkit train needs data.train",
            file=sys.stderr,
        )
    print(recipe.to_yaml(), end="")
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    recipe = _load(args)
    from llmkit.plan import plan, render

    print(render(plan(recipe, args.device)))
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    from llmkit.recipe.explain import reference

    print(reference(args.section), end="")
    return 0


def cmd_prepare(args: argparse.Namespace) -> int:
    recipe = _load(args)
    from llmkit.prepare import prepare_data

    print(prepare_data(recipe))
    return 0


def cmd_inspect_data(args: argparse.Namespace) -> int:
    recipe = _load(args)
    from llmkit.inspect_data import show_example

    print(show_example(recipe, index=args.index, split=args.split, tokens=args.tokens))
    return 0


def _run_first(args: argparse.Namespace) -> None:
    """llmkit 0.1 took the recipe first (`llmkit eval RECIPE --checkpoint RUN`); say the new shape in one sentence."""
    if args.checkpoint is not None or args.run.endswith((".yaml", ".yml")):
        run = args.checkpoint or "RUN"
        raise LlmkitError(
            f"llmkit {args.command} takes the run directory first: llmkit {args.command} {run} ... (it reads "
            f"{run}/recipe.yaml; add --recipe R.yaml to read data and settings from another recipe)."
        )


def cmd_eval(args: argparse.Namespace) -> int:
    _run_first(args)
    from llmkit.evaluation import evaluate_run

    report, _ = evaluate_run(args.run, args.split, args.output, args.overrides, args.recipe, args.samples)
    print(json.dumps(report, indent=2))
    return 0


def cmd_benchmark(args: argparse.Namespace) -> int:
    from llmkit.benchmark.harness import Settings
    from llmkit.benchmark.report import table
    from llmkit.benchmark.run import benchmark

    limit = args.limit
    settings = Settings(
        limit=int(limit) if limit is not None and limit >= 1 and limit.is_integer() else limit,
        batch_size=args.batch_size,
        apply_chat_template=args.apply_chat_template,
        fewshot_as_multiturn=args.fewshot_as_multiturn,
        log_samples=args.log_samples,
    )
    outcome = benchmark(
        args.model, args.tasks, num_fewshot=args.num_fewshot, settings=settings, baseline=args.baseline,
        output=args.output,
    )  # fmt: skip
    print(table(outcome.rows))
    for path in outcome.written:
        print(f"wrote {path}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    _run_first(args)
    from llmkit.predict import predict_file

    written = predict_file(args.run, args.input, args.output, args.batch_size, args.overrides, args.recipe)
    print(f"{written} predictions: {args.output}")
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    from llmkit.predict import generate_from_run

    texts = generate_from_run(args.run_dir, args.prompt, args.max_new_tokens)
    if len(texts) == 1:
        print(texts[0])
    else:
        for prompt, text in zip(args.prompt, texts, strict=True):
            print(f"### {prompt}\n{text}\n")
    return 0


def cmd_merge(args: argparse.Namespace) -> int:
    from llmkit.merge import merge

    output, dtype = merge(args.run_dir, args.output, args.dtype)
    print(f"output: {output} ({dtype})")
    return 0


def cmd_rationales(args: argparse.Namespace) -> int:
    from pathlib import Path

    from llmkit.distill.generate import DEFAULT_PROMPT, generate_rationales

    summary = generate_rationales(
        args.teacher,
        args.data,
        args.output,
        input_column=args.input_column,
        label_column=args.label_column,
        prompt=args.prompt or DEFAULT_PROMPT,
        max_new_tokens=args.max_new_tokens,
        batch_size=args.batch_size,
        limit=args.limit,
    )
    print(summary.line(Path(args.output)))
    return 0


COMMANDS = {
    "train": cmd_train,
    "validate": cmd_validate,
    "plan": cmd_plan,
    "explain": cmd_explain,
    "prepare": cmd_prepare,
    "inspect-data": cmd_inspect_data,
    "eval": cmd_eval,
    "benchmark": cmd_benchmark,
    "predict": cmd_predict,
    "generate": cmd_generate,
    "merge": cmd_merge,
    "rationales": cmd_rationales,
}


if __name__ == "__main__":
    sys.exit(main())
