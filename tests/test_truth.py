import json

import pytest

from core.errors import DataError
from data_prep.truth import read_label_file, read_truth, write_label_file


def write(tmp_path, text, name="truth.txt", encoding="utf-8"):
    path = tmp_path / name
    path.write_bytes(text.encode(encoding))
    return path


def test_txt_with_bom_crlf_spanish_and_whitespace(tmp_path):
    path = write(tmp_path, "\ufeffu1:::Mujer:::centro:::estudiante\r\n u2 ::: male ::: WEST ::: arts\r\n\r\n")
    table = read_truth(path)
    assert table.index.tolist() == ["u1", "u2"]
    assert table.loc["u1"].tolist() == ["female", "center", "student"]
    assert table.loc["u2"].tolist() == ["male", "west", "arts"]


def test_csv_header_and_extra_columns(tmp_path):
    path = write(tmp_path, "user_id,gender,location,occupation,p\nu1,hombre,norte,salud,0.3\n", "t.csv")
    parsed = read_label_file(path)
    assert parsed.format == "csv"
    assert parsed.table[["user_id", "gender", "location", "occupation", "line"]].values.tolist() == [
        ["u1", "male", "north", "health", 2]]


def test_jsonl(tmp_path):
    rows = [{"user_id": "a", "gender": "female", "location": "west", "occupation": "sports"}]
    path = write(tmp_path, "\n".join(json.dumps(r) for r in rows) + "\n", "s.jsonl")
    assert read_truth(path).loc["a"].tolist() == ["female", "west", "sports"]


def test_every_problem_is_reported_with_its_line(tmp_path):
    path = write(tmp_path, "\n".join([
        "u1:::female:::center:::student",
        "u2:::femal:::center:::student",
        "u3:::male:::center",
        "u1:::male:::north:::arts",
        ":::male:::north:::arts",
    ]) + "\n")
    parsed = read_label_file(path)
    assert [(p.line, p.message) for p in parsed.problems] == [
        (2, "unknown gender label 'femal' (did you mean 'female'?); expected one of: female, male"),
        (3, "malformed line: expected 4 fields separated by ':::' "
            "(user_id:::gender:::location:::occupation), found 3"),
        (4, "duplicate user 'u1' (first seen on line 1)"),
        (5, "empty user_id"),
    ]
    with pytest.raises(DataError) as info:
        read_truth(path)
    message = str(info.value)
    assert f"{path}:2: error: unknown gender label 'femal'" in message
    assert f"{path}:4: error: duplicate user 'u1'" in message
    assert len(info.value.problems) == 4


def test_empty_file(tmp_path):
    path = write(tmp_path, "\r\n \n")
    with pytest.raises(DataError, match="file is empty"):
        read_truth(path)


def test_unrecognised_format(tmp_path):
    path = write(tmp_path, "hello world\n")
    with pytest.raises(DataError, match=r"truth.txt:1: cannot tell the format"):
        read_truth(path)


def test_not_utf8(tmp_path):
    path = write(tmp_path, "u1:::female:::center:::student\nu\xe9:::male:::north:::arts\n", encoding="latin-1")
    with pytest.raises(DataError, match=r"truth.txt:2: not UTF-8 text"):
        read_truth(path)


def test_csv_missing_column(tmp_path):
    path = write(tmp_path, "user_id,gender,location\nu1,female,center\n", "t.csv")
    with pytest.raises(DataError, match=r"t.csv:1: error: CSV header lacks column\(s\): occupation"):
        read_truth(path)


def test_malformed_json_line(tmp_path):
    path = write(tmp_path, '{"user_id": "a", "gender": "female", "location": "west", "occupation": "arts"}\n{oops\n', "s.jsonl")
    assert [p.line for p in read_label_file(path).problems] == [2]


@pytest.mark.parametrize("fmt", ["txt", "csv", "jsonl"])
def test_write_then_read_round_trip(tmp_path, fmt):
    path = write(tmp_path, "u1:::mujer:::centro:::arte\nu2:::male:::west:::health\n")
    table = read_truth(path)
    out = tmp_path / f"out.{fmt}"
    write_label_file(table, out, fmt=fmt)
    assert read_truth(out).equals(table)
