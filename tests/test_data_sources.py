"""Reading data: every supported file type, and bad rows reported with file and row number."""

from __future__ import annotations

import json

import pytest
from conftest import INSTRUCTIONS

from llmkit import DataError, Recipe
from llmkit.data.load import load_splits
from llmkit.data.sources import read_source


def test_json_list_jsonl_csv_tsv_txt_parquet(tmp_path):
    rows = [{"instruction": "a", "output": "b"}, {"instruction": "c", "output": "d"}]
    (tmp_path / "x.json").write_text(json.dumps(rows))
    (tmp_path / "x.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    (tmp_path / "x.csv").write_text('instruction,output\na,b\n"c","d"\n')
    (tmp_path / "x.tsv").write_text("instruction\toutput\na\tb\nc\td\n")
    (tmp_path / "x.txt").write_text("first line\n\nsecond line\n")
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "x.parquet")
    for ext in ("json", "jsonl", "csv", "tsv", "parquet"):
        assert read_source(str(tmp_path / f"x.{ext}")).rows == rows, ext
    txt = read_source(str(tmp_path / "x.txt"))
    assert txt.rows == [{"text": "first line"}, {"text": "second line"}]
    assert txt.where == [f"{tmp_path}/x.txt:1", f"{tmp_path}/x.txt:3"]


def test_tsv_is_read_without_quote_processing(tmp_path):
    (tmp_path / "s.tsv").write_text('Label\tSMS\nham\t"Quoted" start and "inner"\n')
    assert read_source(str(tmp_path / "s.tsv")).rows[0]["SMS"] == '"Quoted" start and "inner"'


def test_broken_jsonl_line_is_named(tmp_path):
    (tmp_path / "d.jsonl").write_text('{"text": "ok"}\n{"text": oops}\n')
    with pytest.raises(DataError, match=r"d.jsonl:2: is not valid JSON \(Expecting value at column 10\)"):
        read_source(str(tmp_path / "d.jsonl"))


def test_broken_json_array_names_the_line(tmp_path):
    (tmp_path / "d.json").write_text('[\n {"text": "a"},\n {"text": }\n]')
    with pytest.raises(DataError, match=r"d.json:3: is not valid JSON"):
        read_source(str(tmp_path / "d.json"))


def test_csv_row_with_wrong_field_count(tmp_path):
    (tmp_path / "d.csv").write_text("text,label\nfine,1\nbroken\n")
    with pytest.raises(DataError, match=r"d.csv:3: has 1 fields but the header has 2"):
        read_source(str(tmp_path / "d.csv"))


def test_empty_file(tmp_path):
    (tmp_path / "e.jsonl").write_text("\n")
    with pytest.raises(DataError, match="has no rows"):
        read_source(str(tmp_path / "e.jsonl"))


def _recipe(tmp_path, data, **section):
    model = tmp_path / "m"
    model.mkdir(exist_ok=True)
    (model / "config.json").write_text('{"model_type": "gpt2"}')
    return Recipe.from_dict(
        {"model": {"name": str(model)}, "data": {"train": str(data), **section}, "output_dir": str(tmp_path / "o")}
    )


def test_row_missing_a_field_is_reported_with_file_and_row(tmp_path):
    rows = [{"instruction": "a", "output": "b"}] * 3 + [{"instruction": "c"}, {"instruction": "d", "output": ""}]
    (tmp_path / "d.json").write_text(json.dumps(rows))
    with pytest.raises(DataError) as info:
        load_splits(_recipe(tmp_path, tmp_path / "d.json").data)
    message = str(info.value)
    assert "2 rows do not fit format 'alpaca'" in message
    assert "d.json[row 4]: row has no 'output' field" in message
    assert "d.json[row 5]: 'output' is empty" in message


def test_column_mapping_and_missing_column(tmp_path):
    (tmp_path / "d.jsonl").write_text('{"q": "a", "answer": "b"}\n' * 4)
    train, _ = load_splits(
        _recipe(
            tmp_path, tmp_path / "d.jsonl", columns={"instruction": "q", "output": "answer"}, validation_split=0
        ).data
    )
    assert train.rows[0] == {"instruction": "a", "output": "b"}
    with pytest.raises(DataError, match="has no column 'prompt'"):
        load_splits(_recipe(tmp_path, tmp_path / "d.jsonl", columns={"instruction": "prompt"}).data)


def test_validation_split_is_seeded_and_disjoint(tmp_path):
    data = _recipe(tmp_path, INSTRUCTIONS, validation_split=0.1, split_seed=7).data
    train, held = load_splits(data)
    _again_train, again_held = load_splits(data)
    assert held.where == again_held.where and len(held) == 110 and len(train) == 990
    assert not set(train.where) & set(held.where)
    other = load_splits(_recipe(tmp_path, INSTRUCTIONS, validation_split=0.1, split_seed=8).data)[1]
    assert other.where != held.where


def test_too_few_rows_to_split(tmp_path):
    (tmp_path / "one.jsonl").write_text('{"instruction": "a", "output": "b"}\n')
    with pytest.raises(DataError, match="too few to hold out"):
        load_splits(_recipe(tmp_path, tmp_path / "one.jsonl").data)


def test_hub_dataset_offline_is_one_sentence(tmp_path):
    with pytest.raises(DataError, match=r"hub:nobody/no-such-dataset\[train\]: cannot load this hub dataset"):
        read_source(hub="nobody/no-such-dataset")


@pytest.mark.parametrize(
    ("name", "text", "problem"),
    [
        (
            "d.jsonl",
            '{"instruction": "a", "output": "b"}\n\n\n{"instruction": "c"}\n',
            r"d.jsonl:4: row has no 'output'",
        ),
        (
            "d.jsonl",
            '{"instruction": "a", "output": "b"}\n{"instruction": "c", "output": 5}\n',
            r"d.jsonl:2: 'output' must",
        ),
        ("d.jsonl", '{"instruction": "a", "output": "b"}\n{"instruction": "c", \n', r"d.jsonl:2: is not valid JSON"),
        ("d.csv", 'instruction,output\n"a\nb",c\nd\n', r"d.csv:4: has 1 fields but the header has 2"),
        ("d.csv", "instruction,output\na,b\nc,d,e\n", r"d.csv:3: has 3 fields but the header has 2"),
        ("d.tsv", 'instruction\toutput\n"a\tb\n\t\nc\t\n', r"d.tsv:4: 'output' is empty"),
    ],
)
def test_files_read_by_datasets_still_name_the_bad_line(tmp_path, name, text, problem):
    """datasets reads the file; its errors name no line, so the line reader's do (a type that changes between rows,
    broken JSON, a CSV row with too few fields that pandas would fill in); blank lines still count."""
    (tmp_path / name).write_text(text)
    with pytest.raises(DataError, match=problem):
        load_splits(_recipe(tmp_path, tmp_path / name, validation_split=0).data)
