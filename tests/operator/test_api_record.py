"""The rules of the API-call record (the chart's RBAC is checked against it both ways)."""

from __future__ import annotations

from vllm_testkit.api_record import read, verdict, write

GET, LIST, DELETE = ("get", "", "pods"), ("list", "", "pods"), ("delete", "", "secrets")


def test_a_full_run_must_have_seen_exactly_the_record():
    assert verdict({GET, LIST}, {GET, LIST}, full=True, update=False) == (None, None)
    # A made-up entry (say, to justify a `delete secrets` grant) fails a full run ...
    new, failure = verdict({GET, LIST, DELETE}, {GET, LIST}, full=True, update=False)
    assert new is None and "no test made" in failure and "secrets" in failure
    # ... but not a partial one, which cannot know.
    assert verdict({GET, LIST, DELETE}, {GET}, full=False, update=False) == (None, None)


def test_a_call_missing_from_the_record_fails_any_run():
    for full in (True, False):
        new, failure = verdict({GET}, {GET, LIST}, full=full, update=False)
        assert new is None and "missing" in failure and "'list'" in failure


def test_updating_rewrites_from_a_full_run_adds_from_a_partial_one_and_is_never_silent():
    assert verdict({GET, DELETE}, {GET, LIST}, full=True, update=True)[0] == {GET, LIST}
    assert verdict({GET, DELETE}, {LIST}, full=False, update=True)[0] == {GET, LIST, DELETE}
    new, failure = verdict({GET}, {GET, LIST}, full=True, update=True)
    assert new == {GET, LIST} and "review the diff" in failure
    assert verdict({GET}, {GET}, full=True, update=True) == (None, None)


def test_the_file_round_trips(tmp_path):
    path = tmp_path / "calls.json"
    write(path, {LIST, GET})
    assert read(path) == {GET, LIST}
    assert path.read_text().splitlines()[1] == '  ["get", "", "pods"],'
