"""Write one-step arithmetic word problems with their answers, for GRPO with a verifiable reward (data/README.md).

    python data/arithmetic.py       # from the repository root; writes data/arithmetic/{train,test}.jsonl

Each row is `{"prompt": ..., "answer": ...}`: the answer is computed here, so `exact_match: answer` can check a
completion. Seeded, so the files are the same on every run. Not part of llmkit.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

OUT = Path(__file__).resolve().parent / "arithmetic"
SEED = 2024
SIZES = {"train": 2000, "test": 200}
ASK = " Think briefly, then end with 'Answer: <number>'."

NAMES = ["Ana", "Ben", "Chen", "Dara", "Eli", "Fatima", "Gus", "Hana", "Ivan", "Jo", "Kofi", "Lena", "Mateo", "Nora"]
THINGS = ["apples", "marbles", "stickers", "books", "pencils", "shells", "coins", "cards", "stamps", "cookies"]


def problem(rng: random.Random) -> tuple[str, int]:
    """One problem and its answer: addition, subtraction, multiplication or exact division, numbers up to 50."""
    name, thing = rng.choice(NAMES), rng.choice(THINGS)
    kind = rng.choice(["add", "sub", "mul", "div"])
    if kind == "add":
        a, b = rng.randint(2, 50), rng.randint(2, 50)
        return f"{name} has {a} {thing} and gets {b} more. How many {thing} does {name} have now?", a + b
    if kind == "sub":
        a = rng.randint(10, 50)
        b = rng.randint(1, a - 1)
        return f"{name} has {a} {thing} and gives away {b}. How many {thing} are left?", a - b
    if kind == "mul":
        a, b = rng.randint(2, 9), rng.randint(2, 12)
        return f"{name} buys {a} bags with {b} {thing} in each bag. How many {thing} is that in total?", a * b
    per, groups = rng.randint(2, 10), rng.randint(2, 9)
    return f"{name} shares {per * groups} {thing} equally among {groups} friends. How many does each friend get?", per


def main() -> None:
    rng = random.Random(SEED)
    OUT.mkdir(exist_ok=True)
    seen: set[str] = set()
    for split, size in SIZES.items():
        rows = []
        while len(rows) < size:
            text, answer = problem(rng)
            if text in seen:  # no problem appears twice, nor in both splits
                continue
            seen.add(text)
            rows.append({"prompt": text + ASK, "answer": str(answer)})
        (OUT / f"{split}.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))


if __name__ == "__main__":
    main()
