"""Data preparation at scale: cold preparation, warm (cached) load and peak memory, on synthetic alpaca files.

The files (JSON lines, 100k and 1M rows) are made from data/instruction-data.json, each row's instruction numbered so
no two rows are the same. Each measurement runs `recipes/quickstart.yaml` (SmolLM2-135M-Instruct's tokenizer and
chat template, max_length 256, 5% held out) with `data.train` pointing at the file, in a fresh process:

- **new, cold**: `prepare_recipe` into an empty cache (what `llmkit prepare` and `llmkit train` do first);
- **new, warm**: the same again, read from the cache;
- **before**: the list-based data path of the commit this branch started from (`--baseline COMMIT`, read with
  `git archive`), timed with the command the issue used, `llmkit inspect-data recipes/quickstart.yaml
  data.train=<file>`, which prepares every example in memory.

"prepare" is the task's `prepare` call alone, in-process; "command" is the whole command's wall time (imports and
the tokenizer included). Peak RSS: of the process that trains (self), and the largest of its worker processes.

    python bench/data_prep.py --rows 100000 1000000 --baseline-rows 100000 --output bench/data-results.json
    (or: make bench-data)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RECIPE = REPO / "recipes" / "quickstart.yaml"


def make_rows(n: int, path: Path) -> Path:
    """n alpaca rows as JSON lines, cycling through the repo's 1,100 instructions, each numbered."""
    if path.is_file():
        return path
    source = json.loads((REPO / "data" / "instruction-data.json").read_text())
    tmp = path.with_suffix(".partial")
    with tmp.open("w") as out:
        for i in range(n):
            row = source[i % len(source)]
            out.write(json.dumps({**row, "instruction": f"{row['instruction']} (#{i})"}) + "\n")
    tmp.replace(path)
    return path


def measure(overrides: list[str]) -> None:
    """In a fresh process: prepare the quickstart recipe with `overrides`; print the figures as JSON."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from llmkit import Recipe, models, tasks
    from llmkit.outputs import RunDir
    from llmkit.run import RunEnv

    recipe = Recipe.from_yaml(RECIPE, overrides)
    env = RunEnv(recipe, RunDir.for_output(recipe.output_dir), models.resolve_base(recipe.model, recipe.model_ref()))
    tokenizer, task = env.tokenizer(), tasks.get(recipe.task)
    cpu, started = _cpu(), time.perf_counter()
    prepared = task.prepare(env, tokenizer)  # what `llmkit train` does before the model loads
    seconds, cpu = time.perf_counter() - started, _cpu() - cpu
    print(
        json.dumps(
            {
                "prepare_s": round(seconds, 2),
                "prepare_cpu_s": round(cpu, 1),
                "train_examples": len(prepared.train),
                "rss_self_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
                "rss_workers_mb": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024),
            }
        )
    )


def _cpu() -> float:
    """CPU seconds of this process and of its finished worker processes."""
    own, workers = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + workers.ru_utime + workers.ru_stime


def run(command: list[str], env: dict[str, str] | None = None, cwd: Path = REPO) -> tuple[dict, str, str]:
    """Wall seconds, CPU seconds and peak RSS (MB) of the command's processes, its stdout and the end of its
    stderr; in a wrapper process, so the figures are this command's alone."""
    wrapper = (
        "import resource, subprocess, sys, time; t = time.perf_counter(); "
        "done = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
        "sys.stderr.write(done.stderr[-3000:]); u = resource.getrusage(resource.RUSAGE_CHILDREN); "
        "print(done.stdout); print(done.returncode, time.perf_counter() - t, u.ru_utime + u.ru_stime, "
        "u.ru_maxrss // 1024)"
    )
    done = subprocess.run(
        [sys.executable, "-c", wrapper, *command], capture_output=True, text=True, env=env, cwd=cwd, check=True
    )
    lines = done.stdout.strip().splitlines()
    code, seconds, cpu, rss = lines[-1].split()
    if code != "0":
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr}")
    figures = {"command_s": round(float(seconds), 1), "command_cpu_s": round(float(cpu), 1), "peak_rss_mb": int(rss)}
    return figures, "\n".join(lines[:-1]), done.stderr


def new_path(data: Path, cache: Path) -> dict:
    """A cold preparation into an empty cache, then a warm one reading it."""
    overrides = [f"data.train={data}", f"data.cache_dir={cache}"]
    figures = {}
    for phase in ("cold", "warm"):
        command, out, _ = run([sys.executable, __file__, "--measure", *overrides])
        figures[phase] = {**json.loads(out.strip().splitlines()[-1]), **command}
    shutil.rmtree(cache, ignore_errors=True)
    return figures


def baseline(data: Path, commit: str, scratch: Path) -> dict:
    """`llmkit inspect-data` of the commit before this change (the list-based path), on the same file."""
    source = scratch / "baseline"
    source.mkdir(exist_ok=True)
    archive = subprocess.run(["git", "archive", commit, "llmkit"], cwd=REPO, capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(source)], input=archive.stdout, check=True)
    # -S and another working directory: the editable install's import hook (and the checkout in the current
    # directory) would otherwise win over PYTHONPATH, and this would time the new code
    packages = sysconfig.get_paths()["purelib"]
    env = {**os.environ, "PYTHONPATH": f"{source}{os.pathsep}{packages}", "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-S", "-m", "llmkit", "inspect-data", str(RECIPE), f"data.train={data}"]
    figures, _, err = run(command, env, cwd=scratch)
    if "llmkit: data:" in err:
        raise SystemExit("the baseline ran this checkout's code, not the commit's")
    return {"commit": commit, **figures}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--baseline-rows", type=int, nargs="*", default=[100_000])
    parser.add_argument("--baseline", default="e2e1100", help="commit of the list-based path to compare with")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds where the baseline runs too")
    parser.add_argument("--data-dir", type=Path, default=Path(tempfile.gettempdir()) / "llmkit-bench-data")
    parser.add_argument("--output", type=Path, default=REPO / "bench" / "data-results.json")
    parser.add_argument("--measure", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure is not None:
        return measure(args.measure)
    args.data_dir.mkdir(parents=True, exist_ok=True)
    results = {
        "machine": f"{os.cpu_count()} CPUs, {platform.platform()}",
        "python": platform.python_version(),
        "date": time.strftime("%Y-%m-%d"),
        "recipe": str(RECIPE.relative_to(REPO)),
        "runs": {},
    }
    for n in args.rows:
        data = make_rows(n, args.data_dir / f"alpaca-{n}.jsonl")
        entry: dict = {"file_mb": round(data.stat().st_size / 1e6, 1), "new": [], "before": []}
        rounds = args.rounds if n in args.baseline_rows else 1
        with tempfile.TemporaryDirectory(prefix="llmkit-bench-") as scratch:
            for _ in range(rounds):  # interleaved, so load from other processes falls on both paths alike
                entry["new"].append(new_path(data, Path(scratch) / "cache"))
                if n in args.baseline_rows:
                    entry["before"].append(baseline(data, args.baseline, Path(scratch)))
                print(json.dumps({n: entry}), flush=True)
        results["runs"][str(n)] = entry
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    print(table(results))


def table(results: dict) -> str:
    """The README's table: the median of each figure over the rounds, and every run's own."""

    def cell(runs: list[dict], key: str, unit: str) -> str:
        values = [run[key] for run in runs]
        shown = (
            f"{statistics.median(values):,.1f} {unit}" if unit == "s" else f"{statistics.median(values):,.0f} {unit}"
        )
        return shown + (f" ({' / '.join(f'{v:,}' for v in values)})" if len(values) > 1 else "")

    lines = [
        "| rows | path | prepare (in-process) | whole command | its CPU time | peak RSS, main process | "
        "peak RSS, any process |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for n, entry in results["runs"].items():
        for phase in ("cold", "warm"):
            runs = [r[phase] for r in entry["new"]]
            lines.append(
                f"| {int(n):,} | new, {phase} | {cell(runs, 'prepare_s', 's')} | {cell(runs, 'command_s', 's')} | "
                f"{cell(runs, 'command_cpu_s', 's')} | {cell(runs, 'rss_self_mb', 'MB')} | "
                f"{cell(runs, 'peak_rss_mb', 'MB')} |"
            )
        if entry["before"]:
            runs = entry["before"]
            lines.append(
                f"| {int(n):,} | before: `llmkit inspect-data` at {runs[0]['commit']} | — | "
                f"{cell(runs, 'command_s', 's')} | {cell(runs, 'command_cpu_s', 's')} | — | "
                f"{cell(runs, 'peak_rss_mb', 'MB')} |"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
