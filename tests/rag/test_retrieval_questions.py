"""Reading retrieval questions (``tunegraph eval retrieval QUESTIONS.jsonl``)."""

import pytest

from rag.retrieval import QuestionsError, RetrievalQuestion, read_questions


def test_questions_are_read_and_blank_lines_skipped(tmp_path):
    path = tmp_path / "q.jsonl"
    path.write_text('{"q": "Hood torque?", "must": "25 Nm"}\n\n{"q": "Fuse F12?", "must": 15}\n')
    assert read_questions(path) == [
        RetrievalQuestion("Hood torque?", "25 Nm"),
        RetrievalQuestion("Fuse F12?", "15"),
    ]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (
            b'{"q": "a", "must": "b"}\n{"q": "only"}\n',
            'line 2: need a JSON object with "q" and "must"',
        ),
        (b"{oops\n", "line 1: need a JSON object"),
        (b"\n\n", "holds no questions"),
        ('{"q": "Drehmoment für", "must": "x"}'.encode("latin-1"), "not UTF-8"),
    ],
)
def test_a_bad_file_names_the_file_and_line(tmp_path, content, message):
    path = tmp_path / "q.jsonl"
    path.write_bytes(content)
    with pytest.raises(QuestionsError, match=message) as raised:
        read_questions(path)
    assert str(path) in str(raised.value)
