"""`llmkit` command line: parse, validate, call the same functions the Python API exposes.

User errors (LlmkitError) print as one sentence each and exit non-zero; anything else is a bug and keeps its
traceback. Commands import torch only when they need it, so `--help` and `validate` stay fast.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence

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
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="key.path=value",
        help="override recipe values, e.g. training.max_steps=10 output_dir=/tmp/run",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="llmkit", description="Fine-tune BERT, GPT-2, T5 and Llama-style models from one YAML recipe."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("train", help="train a recipe and write the model, metrics and manifest to output_dir")
    _recipe_args(p)

    p = sub.add_parser("validate", help="check a recipe (all problems at once) and print it resolved")
    _recipe_args(p)

    sub.add_parser("explain", help="print every recipe key with its type, default and meaning (docs/recipe.md)")

    p = sub.add_parser("prepare", help="read, check, tokenise and cache the recipe's data (e.g. on a CPU node)")
    _recipe_args(p)

    p = sub.add_parser("inspect-data", help="show one rendered training example with its label mask")
    _recipe_args(p)
    p.add_argument("--index", type=int, default=0, help="which example (default 0)")
    p.add_argument("--split", choices=("train", "validation"), default="train")
    p.add_argument("--tokens", action="store_true", help="also list every token with its label")

    p = sub.add_parser("eval", help="a trained model's task metrics on one split of the recipe's data, as JSON")
    _recipe_args(p)
    p.add_argument("--checkpoint", required=True, help="a finished run directory, or <run>/checkpoints/checkpoint-N")
    p.add_argument("--split", choices=("train", "validation", "test"), help="default: test if the recipe has one")
    p.add_argument("--output", help="JSON file to write (default: eval-<split>.json in the checkpoint directory)")

    p = sub.add_parser("predict", help="labels or generations for every row of a file, as JSON lines")
    _recipe_args(p)
    p.add_argument("--checkpoint", required=True, help="a finished run directory, or <run>/checkpoints/checkpoint-N")
    p.add_argument("--input", required=True, help="rows in the recipe's format (jsonl, csv, tsv, txt, json, parquet)")
    p.add_argument("--output", required=True, help="JSON lines file to create: each input row plus its prediction")
    p.add_argument("--batch-size", type=int, default=16, help="rows per forward pass (default 16)")

    p = sub.add_parser("generate", help="generate text from a finished sft or seq2seq run, in its prompt template")
    p.add_argument("run_dir", help="the run's output directory")
    p.add_argument("--prompt", action="append", required=True, help="what to ask; repeat for several prompts")
    p.add_argument("--max-new-tokens", type=int, help="override the run's generation.max_new_tokens")

    p = sub.add_parser("merge", help="fold a finished run's adapter into its base; save a plain transformers model")
    p.add_argument("run_dir", help="a finished run (the output_dir of `llmkit train`)")
    p.add_argument("--output", required=True, help="directory for the merged model (must not exist or be empty)")

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
    """Like parse_args, but key=value overrides may also follow the options (`eval r.yaml --checkpoint d k=v`)."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and hasattr(args, "overrides") and all("=" in e and not e.startswith("-") for e in extra):
        args.overrides += extra
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv)
    # bitsandbytes warns at import, on CPUs without an optional hub kernel, about a fallback it then uses correctly.
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
    try:
        return COMMANDS[args.command](args)
    except LlmkitError as exc:
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
    from llmkit.trainer import train

    result = train(recipe, source=args.recipe)
    summary = {k: v for k, v in result.metrics.items() if isinstance(v, (int, float)) and v is not None}
    print("\n".join(f"{k}: {v:.4g}" if isinstance(v, float) else f"{k}: {v}" for k, v in summary.items()))
    print(f"output: {result.output_dir}")
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    recipe = _load(args)
    print(f"# {args.recipe}: valid", file=sys.stderr)
    print(recipe.to_yaml(), end="")
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    from llmkit.recipe.explain import reference

    print(reference(), end="")
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


def cmd_eval(args: argparse.Namespace) -> int:
    recipe = _load(args)
    from llmkit.evaluation import evaluate_checkpoint

    report, _ = evaluate_checkpoint(recipe, args.checkpoint, args.split, args.output)
    print(json.dumps(report, indent=2))
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    recipe = _load(args)
    from llmkit.predict import predict_file

    written = predict_file(recipe, args.checkpoint, args.input, args.output, args.batch_size)
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

    print(f"output: {merge(args.run_dir, args.output)}")
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
    "explain": cmd_explain,
    "prepare": cmd_prepare,
    "inspect-data": cmd_inspect_data,
    "eval": cmd_eval,
    "predict": cmd_predict,
    "generate": cmd_generate,
    "merge": cmd_merge,
    "rationales": cmd_rationales,
}


if __name__ == "__main__":
    sys.exit(main())
