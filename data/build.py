"""Rebuild the derived data sets in data/ from the originals in ../shared/data (see data/README.md).

    python data/build.py            # from the repository root; writes the same files byte for byte

Not part of llmkit: the files it writes are committed, so recipes work on a fresh clone without ../shared.
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

from sklearn.model_selection import train_test_split

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared" / "data"
OUT = REPO / "data"
SEED = 123  # the book's seed for its SMS split


def sms_spam() -> None:
    """UCI SMS Spam Collection → stratified 70 / 10 / 20 train / validation / test, all 5,574 messages kept."""
    lines = (SHARED / "sms-spam-collection.tsv").read_text(encoding="utf-8").splitlines()
    header, rows = lines[0], [line.split("\t", 1) for line in lines[1:] if line.strip()]
    labels = [label for label, _ in rows]
    train, rest = train_test_split(rows, test_size=0.3, random_state=SEED, stratify=labels)
    validation, test = train_test_split(rest, test_size=2 / 3, random_state=SEED, stratify=[label for label, _ in rest])
    target = OUT / "sms-spam"
    target.mkdir(exist_ok=True)
    for name, part in (("train", train), ("validation", validation), ("test", test)):
        text = header + "\n" + "".join(f"{label}\t{sms}\n" for label, sms in part)
        (target / f"{name}.tsv").write_text(text, encoding="utf-8")


def response_quality() -> None:
    """The book's DPO data as sentence pairs: (prompt, response) → chosen or rejected. Split 80 / 10 / 10 by
    prompt, so both answers to a prompt land in the same split; prompts whose two answers are equal are left out."""
    rows = json.loads((SHARED / "instruction-data-with-preference.json").read_text(encoding="utf-8"))
    rows = [r for r in rows if r["chosen"].strip() != r["rejected"].strip()]
    order = list(range(len(rows)))
    random.Random(SEED).shuffle(order)
    n_val = n_test = len(rows) // 10
    parts = {"validation": order[:n_val], "test": order[n_val : n_val + n_test], "train": order[n_val + n_test :]}
    target = OUT / "response-quality"
    target.mkdir(exist_ok=True)
    for name, indices in parts.items():
        lines = []
        for i in sorted(indices):
            r = rows[i]
            prompt = r["instruction"] + (f"\n\n{r['input']}" if r["input"] else "")
            for label in ("chosen", "rejected"):
                lines.append(json.dumps({"prompt": prompt, "response": r[label], "label": label}, ensure_ascii=False))
        (target / f"{name}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")


# One summary per passage of "The Verdict" (Edith Wharton, 1908, public domain), written for llmkit. Passages are
# consecutive paragraphs grouped until they reach 70 words (see verdict_passages).
VERDICT_SUMMARIES = [
    "The narrator, Rickham, recalls that the fashionable painter Jack Gisburn gave up painting at the height of his "
    "fame, married a rich widow and settled on the Riviera, to the dismay of admirers such as Mrs. Thwing and "
    "Hermia Croft.",
    "The women who had made Gisburn mourned him, other painters hardly did, Claude Nutley wrote a flattering "
    "obituary of his career, and the price of his pictures went up.",
    "Three years later, idling on the Riviera, the narrator wonders why Gisburn gave up painting, noting that his "
    "wife cannot be blamed because he quit before he married her.",
    "Curious why Mrs. Gisburn never led her husband back to the easel, the narrator visits the couple's villa near "
    "Monte Carlo.",
    "Mrs. Gisburn welcomes the narrator warmly; he finds her uninteresting, and wonders what life with such an "
    "ordinary woman is doing to Jack, who had always been surrounded by adoring women.",
    "Gisburn quietly enjoys his wife's wealth, spending it with elegant disdain on Renaissance bronzes and "
    "eighteenth-century pictures.",
    "When Mrs. Gisburn praises Jack's sensitivity to beauty, the narrator notices that Jack, for the first time, "
    "resents such tributes and winces at his own pose as an object of admiration.",
    "Jack remarks that people now say such things about Victor Grindle, and the narrator wonders whether jealousy "
    "of the rising Grindle explains his retirement, but Grindle's fame came only afterwards.",
    "The narrator asks Mrs. Gisburn why Jack stopped painting, and she answers simply that he no longer has to and "
    "she wants him to enjoy himself.",
    "Seeing none of Jack's pictures in the house, the narrator learns that out of modesty he sent them all away "
    "except his wife's portrait, and asks to see it.",
    "While her husband smokes on the terrace, Mrs. Gisburn nervously leads the narrator upstairs through the grand "
    "hall to see the portrait.",
    "The portrait hangs in the darkest corner of her boudoir, because Jack would not let it stay over the mantelpiece.",
    "Straining to see it, the narrator finds in the portrait all of Gisburn's false virtuosity: showy, strong "
    "effects that distract from the real business of painting.",
    "Mrs. Gisburn says it is his last picture but one, the other having been destroyed, and Jack appears, looking, "
    "like his pictures, cleverer than he is.",
    "Jack lightly says Rickham found him out long ago and shows him round the house, proud of its luxurious modern "
    "conveniences.",
    "The narrator thinks this comfortable end was predictable, yet Jack is so charming that he wants to urge him to "
    "be dissatisfied with his leisure, until something unexpected stops him.",
    "Jack shows the narrator his own plain brown study, which has no sign of ever having been a studio, proof of how "
    "completely he has broken with his old life.",
    "Asked whether he ever paints or etches now, Jack says never, but his pained look shows that he thinks of "
    "nothing else.",
    "Above the mantelpiece the narrator sees a small sketch of a tired old donkey standing in the rain and "
    "recognises it as a Stroud.",
    "Jack explains that Mrs. Stroud gave him the sketch after asking him, then the fashionable painter, to paint "
    "her husband's portrait when he died.",
    "Jack describes Mrs. Stroud as a woman who believed in her husband but craved fashionable approval, and calls "
    "Stroud the only whole artist he ever knew.",
    "Jack says he came to know Stroud only after his death, and that the donkey sketch, which he forced himself to "
    "face, is the reason he gave up painting.",
    "Now seriously wanting to understand Gisburn, the narrator asks how it happened, and Jack agrees to tell him, "
    "suspecting that Rickham always loathed his work.",
    "Jack recalls how pleased he was by Mrs. Stroud's note, admitting that he had always felt Stroud was unique but "
    "had repeated the common view that he was a failure.",
    "Jack went to the Strouds' house vain and condescending, offering to paint the portrait for nothing and posing "
    "to himself like one of his own sitters.",
    "Left alone with the body, Jack saw that Stroud, whom he had once thought dingy and insignificant, was superb.",
    "As he began to paint, Jack felt that the dead Stroud was watching and judging his way of working, and his "
    "strokes grew nervous and uncertain.",
    "Jack's bravura tricks failed him, because the dead man seemed to look past the showy passages at the hard "
    "ones he had always shirked or covered up.",
    "The donkey sketch, Stroud's last work, made while recovering from an earlier heart attack, showed Jack years "
    "of patient, scornful persistence in every line.",
    "Comparing himself with Stroud, Jack realised that he had never known how to paint and had hidden it under "
    "showy colour, and his technique collapsed under the dead man's gaze.",
    "Jack gave up the portrait, told Mrs. Stroud he was too moved to paint it, and suggested Grindle instead, which "
    "is how Grindle's fame began.",
    "Jack says Stroud would have given him the sketch himself, refuses to start painting again, and jokes that he "
    "is still painting through Grindle.",
]


def verdict_passages(min_words: int = 70) -> list[str]:
    paragraphs = [p.strip() for p in (SHARED / "the-verdict.txt").read_text(encoding="utf-8").split("\n\n")]
    groups: list[list[str]] = []
    current: list[str] = []
    for paragraph in filter(None, paragraphs):
        current.append(paragraph)
        if sum(len(p.split()) for p in current) >= min_words:
            groups.append(current)
            current = []
    if current:
        groups[-1] += current
    return ["\n".join(group) for group in groups]


def verdict_summaries() -> None:
    passages = verdict_passages()
    assert len(passages) == len(VERDICT_SUMMARIES), (len(passages), len(VERDICT_SUMMARIES))
    lines = [
        json.dumps({"passage": p, "summary": s}, ensure_ascii=False)
        for p, s in zip(passages, VERDICT_SUMMARIES, strict=True)
    ]
    (OUT / "verdict-summaries.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")


MMLU_CHOICES = re.compile(r"^\(A\) (.+?) \(B\) (.+?) \(C\) (.+?) \(D\) (.+?)$")  # one line, or one line each:
MMLU_CHOICE = re.compile(r"^\(([ABCD])\) (.+)$")
MMLU_ANSWER = re.compile(r"The answer is \(([ABCD])\)\.?\s*$")


def mmlu_question(block: str) -> tuple[str, list[str], int] | None:
    """One 'Q: ...\n(A) .. (D) ..\nA: ... The answer is (X).' block → (question, choices, answer index), or None when
    it does not parse cleanly: other than four choices (A)-(D) on one line or on four lines of their own, no final
    answer, a control character other than a line break or a tab, or a LaTeX command cut by a line break after a $
    (its backslash escape was lost, and half of the previous answer's explanation went into the question)."""
    question, sep, answer = block.partition("\nA: ")
    lines = question.split("\n")
    final = MMLU_ANSWER.search(answer)
    if one_line := MMLU_CHOICES.match(lines[-1]):
        text, choices = lines[:-1], list(one_line.groups())
    else:
        each = [MMLU_CHOICE.match(line) for line in lines[-4:]]
        if not all(each) or [m.group(1) for m in each] != list("ABCD"):
            return None
        text, choices = lines[:-4], [m.group(2) for m in each]
    text = "\n".join(text).strip()
    if not sep or not final or not text or re.search(r"\$\n[a-z]", question):
        return None
    if any(ord(c) < 32 and c not in "\n\t" for c in question):
        return None
    return text, choices, "ABCD".index(final.group(1))


def mmlu_dev() -> None:
    """The MMLU dev questions (5 per subject, 57 subjects) that lm-evaluation-harness carries as chain-of-thought
    prompts in lm_eval/tasks/mmlu/flan_cot_fewshot/_cot_prompts.json, as an offline lm-eval task's data: subject,
    question, four choices, answer index. Needs the lm-eval package (pip install 'llmkit[eval]')."""
    import lm_eval

    source = Path(lm_eval.__file__).parent / "tasks" / "mmlu" / "flan_cot_fewshot" / "_cot_prompts.json"
    prompts = json.loads(source.read_text(encoding="utf-8"))
    rows, blocks = [], 0
    for subject, prompt in prompts.items():
        for block in prompt.split("\n\nQ: ")[1:]:
            blocks += 1
            parsed = mmlu_question(block.strip())
            if parsed:
                question, choices, answer = parsed
                rows.append(
                    {"subject": subject.replace("_", " "), "question": question, "choices": choices, "answer": answer}
                )
    target = OUT / "mmlu-dev" / "mmlu_dev.jsonl"
    target.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    print(f"mmlu-dev: kept {len(rows)} of {blocks} questions from {len(prompts)} subjects")


if __name__ == "__main__":
    sms_spam()
    response_quality()
    verdict_summaries()
    mmlu_dev()
    print("wrote data/sms-spam/, data/response-quality/, data/verdict-summaries.jsonl")
