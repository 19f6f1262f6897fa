"""Case progress: the one module that changes `Case.status`, and the moves it allows."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from diagnosis.exceptions import InvalidStateError
from diagnosis.models import Case
from diagnosis.services import case_progress
from diagnosis.services.case_progress import CANCELLABLE, TRANSITIONS, case_move
from diagnosis.services.cases import case_cancel
from diagnosis.tests import factories

S = Case.Status
DIAGNOSIS = Path(case_progress.__file__).resolve().parents[1]


def test_every_status_has_its_moves_listed():
    assert set(TRANSITIONS) == set(S.values)
    assert all(to <= set(S.values) for to in TRANSITIONS.values())
    assert TRANSITIONS[S.REVIEWED] == frozenset()
    assert TRANSITIONS[S.CANCELLED] == frozenset()


def test_cancellable_is_every_open_status():
    assert frozenset(S.values) - CANCELLABLE == {S.REVIEWED, S.CANCELLED}


@pytest.mark.parametrize(
    ("start", "to"),
    [
        (S.REVIEWED, S.PREDICTED),
        (S.CANCELLED, S.QUEUED),
        (S.PREDICTED, S.QUEUED),
        (S.PREDICTING, S.RECEIVED),
        (S.RECEIVED, S.REVIEWED),
    ],
)
def test_case_move_refuses_a_move_not_listed(start, to):
    case = factories.CaseFactory.build(status=start)
    with pytest.raises(InvalidStateError):
        case_move(case, to)
    assert case.status == start


def test_case_move_stamps_arrival_and_reason():
    case = factories.CaseFactory.build(status=S.FAILED, status_reason="boom")
    fields = case_move(case, S.QUEUED, reason="")
    assert case.status == S.QUEUED
    assert case.status_reason == ""
    assert case.queued_at is not None
    assert set(fields) == {"status", "updated_at", "queued_at", "status_reason"}
    fields = case_move(case, S.PREDICTING)
    assert set(fields) == {"status", "updated_at"}  # the reason is kept when none is given


@pytest.mark.django_db
def test_cancel_goes_through_case_progress():
    case = factories.CaseFactory(status=S.REVIEWED)
    with pytest.raises(InvalidStateError):
        case_cancel(case=case, user=case.created_by)
    case = factories.CaseFactory(status=S.PREDICTED)
    case_cancel(case=case, user=case.created_by)
    case.refresh_from_db()
    assert case.status == S.CANCELLED
    assert case.status_reason == "Cancelled by the submitter."


def _status_writes(path: Path) -> list[str]:
    """Places in one module that write a case status: `x.status = Case.Status.X`, or an
    `.update(status=Case.Status.X)` call."""

    def names_case_status(node: ast.AST) -> bool:
        return any(
            isinstance(n, ast.Attribute)
            and n.attr == "Status"
            and isinstance(n.value, ast.Name)
            and n.value.id == "Case"
            for n in ast.walk(node)
        )

    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if node.value is not None and names_case_status(node.value):
                found += [
                    f"{path.name}:{node.lineno}"
                    for t in targets
                    if isinstance(t, ast.Attribute) and t.attr == "status"
                ]
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in {"update", "bulk_update", "update_or_create"}
        ):
            found += [
                f"{path.name}:{node.lineno}"
                for kw in node.keywords
                if kw.arg == "status" and names_case_status(kw.value)
            ]
    return found


def test_the_scan_finds_a_status_write(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text(
        "case.status = Case.Status.REVIEWED\n"
        "Case.objects.filter(pk=1).update(status=Case.Status.FAILED)\n"
        "if case.status == Case.Status.REVIEWED:\n    pass\n"
        "Case.objects.filter(status=Case.Status.QUEUED)\n"
    )
    assert _status_writes(sample) == ["sample.py:1", "sample.py:2"]


def test_only_case_progress_changes_case_status():
    modules = [
        p
        for p in DIAGNOSIS.rglob("*.py")
        if "tests" not in p.relative_to(DIAGNOSIS).parts
        and "migrations" not in p.relative_to(DIAGNOSIS).parts
        and p.name != "case_progress.py"
    ]
    assert len(modules) > 30
    assert [w for p in modules for w in _status_writes(p)] == []
