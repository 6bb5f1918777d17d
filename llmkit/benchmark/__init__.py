"""`llmkit benchmark`: lm-evaluation-harness tasks on a run (or any decoder), before and after fine-tuning.

tasks.py   which tasks: lm-eval names with their n-shot, local task files, the open-llm-leaderboard preset; every
           bad one is one sentence before any model loads (torch-free until a task is resolved)
harness.py the harness itself: `simple_evaluate` with its `HFLM` around the model llmkit loaded, seeds fixed
report.py  its results as rows (task, metric, value, stderr, n-shot, samples), the table, the JSON, the delta
run.py     the command and the recipe's `evaluation.benchmarks`: load, evaluate, baseline, record in the run
"""
