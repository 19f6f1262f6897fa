"""The error-code table (`diagnosis.error_codes`) lists every code the API answers with, at the
status it is answered with, and docs/api.md's list is the table's rendering."""

from __future__ import annotations

import ast
import importlib
import pkgutil
from pathlib import Path

from django.core.management import call_command
from rest_framework import exceptions

import diagnosis
from diagnosis.api.permissions import HasScope
from diagnosis.error_codes import (
    ERROR_CODES,
    docs_with_error_codes,
    error_codes_markdown,
)
from diagnosis.exceptions import DomainError, InvalidUploadError

ROOT = Path(diagnosis.__file__).resolve().parent
DOC = ROOT.parent / "docs" / "api.md"
TABLE = {entry.code: entry.status for entry in ERROR_CODES}
# Source the API reaches; the browser views (views/) answer HTML forms with their own codes.
API_SOURCES = [p for p in ROOT.rglob("*.py") if not {"tests", "migrations", "views"} & set(p.parts)]
# DRF exceptions the API raises (authentication, permissions, routing, negotiation, parsing,
# throttling), rendered by the exception handler with their default codes.
DRF_EXCEPTIONS = [
    exceptions.NotAuthenticated,
    exceptions.AuthenticationFailed,
    exceptions.PermissionDenied,
    exceptions.NotFound,
    exceptions.MethodNotAllowed,
    exceptions.NotAcceptable,
    exceptions.UnsupportedMediaType,
    exceptions.Throttled,
    exceptions.ParseError,
]


def _domain_errors() -> set[type[DomainError]]:
    for module in pkgutil.walk_packages(diagnosis.__path__, "diagnosis."):
        if not {"tests", "migrations", "views"} & set(module.name.split(".")):
            importlib.import_module(module.name)
    found: set[type[DomainError]] = set()
    pending = [DomainError]
    while pending:
        cls = pending.pop()
        found.add(cls)
        pending.extend(cls.__subclasses__())
    return found


def _raised_upload_codes() -> set[tuple[str, int]]:
    """(code, status) of every `InvalidUploadError(..., code="...")` (and the DICOM decoder's
    `_invalid(...)` helper) with a literal code, in the API's source."""
    found = set()
    for path in API_SOURCES:
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call):
                continue
            name = getattr(node.func, "id", getattr(node.func, "attr", ""))
            if name not in ("InvalidUploadError", "_invalid"):
                continue
            kwargs = {k.arg: k.value for k in node.keywords}
            code = kwargs.get("code")
            if code is None and name == "_invalid" and len(node.args) > 1:
                code = node.args[1]
            if not isinstance(code, ast.Constant):
                continue  # a code passed through (e.g. the first bad file's)
            status = kwargs.get("status_code")
            found.add(
                (
                    code.value,
                    status.value
                    if isinstance(status, ast.Constant)
                    else InvalidUploadError.status_code,
                )
            )
    return found


def test_table_has_unique_codes_and_http_error_statuses():
    assert len(TABLE) == len(ERROR_CODES)
    assert all(400 <= entry.status < 600 and entry.meaning for entry in ERROR_CODES)


def test_every_domain_error_is_in_the_table_with_its_status():
    missing = {
        (cls.code, cls.status_code)
        for cls in _domain_errors()
        if TABLE.get(cls.code) != cls.status_code
    }
    assert not missing, f"add these to diagnosis/error_codes.py: {sorted(missing)}"


def test_every_upload_code_is_in_the_table_with_its_status():
    raised = _raised_upload_codes()
    assert ("file_too_large", 413) in raised  # the scan sees explicit statuses
    assert ("invalid_dicom", 400) in raised  # and the DICOM helper's default code
    missing = {(code, status) for code, status in raised if TABLE.get(code) != status}
    assert not missing, f"add these to diagnosis/error_codes.py: {sorted(missing)}"


def test_drf_and_handler_codes_are_in_the_table():
    from django.core.exceptions import (
        RequestDataTooBig,
        SuspiciousOperation,
        TooManyFieldsSent,
        TooManyFilesSent,
    )

    from diagnosis.api.exception_handler import _suspicious

    answered = {(exc.default_code, exc.status_code) for exc in DRF_EXCEPTIONS}
    answered.add((HasScope.code, 403))
    answered.add(("invalid", 400))  # serializer validation errors
    for exc in (
        RequestDataTooBig(),
        TooManyFilesSent(),
        TooManyFieldsSent(),
        SuspiciousOperation(),
    ):
        response = _suspicious(exc)
        answered.add((response.data["code"], response.status_code))
    missing = {(code, status) for code, status in answered if TABLE.get(code) != status}
    assert not missing, f"add these to diagnosis/error_codes.py: {sorted(missing)}"


def test_no_code_in_the_table_is_stale():
    """Each listed code occurs as a string in the API's source or is a DRF default code."""
    literals = {
        node.value
        for path in API_SOURCES
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
    }
    drf_codes = {exc.default_code for exc in DRF_EXCEPTIONS}
    stale = set(TABLE) - literals - drf_codes - {"invalid"}
    assert not stale, f"no longer raised anywhere: {sorted(stale)}"


def test_docs_list_is_the_table():
    text = DOC.read_text()
    assert docs_with_error_codes(text) == text, (
        "docs/api.md's error codes differ from diagnosis/error_codes.py: run "
        "`python manage.py api_error_codes --write docs/api.md`"
    )
    for entry in ERROR_CODES:
        assert f"| {entry.status} | `{entry.code}` |" in text


def test_command_writes_the_docs_block(tmp_path):
    target = tmp_path / "api.md"
    target.write_text(
        "# API\n\n<!-- error-codes:start -->\nstale list\n<!-- error-codes:end -->\n\nafter\n"
    )
    call_command("api_error_codes", "--write", str(target))
    text = target.read_text()
    assert "stale list" not in text
    assert error_codes_markdown() in text
    assert text.endswith("<!-- error-codes:end -->\n\nafter\n")
