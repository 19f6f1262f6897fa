"""The schema declares what the server does, in the forms code generators need: media types,
scopes, headers, limits, id types, descriptions and enums (issue #17)."""

from __future__ import annotations

import pytest

from diagnosis.error_codes import error_codes_for_status

pytestmark = pytest.mark.django_db

DOWNLOADS = [
    "/api/v1/cases/{uuid}/images/{image_id}/file/",
    "/api/v1/cases/{uuid}/images/{image_id}/heatmap/",
]


@pytest.fixture
def schema(clinician, client_for) -> dict:
    response = client_for(clinician).get("/api/schema/?format=json")
    assert response.status_code == 200
    return response.json()


def operations(schema: dict):
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            if method in {"get", "post", "put", "patch", "delete"}:
                yield path, method, operation


def test_uploads_are_multipart_only_and_urlencoded_is_refused(
    schema, clinician, issue_token, bearer
):
    create = schema["paths"]["/api/v1/cases/"]["post"]
    assert set(create["requestBody"]["content"]) == {"multipart/form-data"}
    for path, method, operation in operations(schema):
        if "requestBody" in operation and (path, method) != ("/api/v1/cases/", "post"):
            assert set(operation["requestBody"]["content"]) == {"application/json"}, path
    raw, _ = issue_token(clinician, ["write"])
    response = bearer(raw).post(
        "/api/v1/cases/",
        "patient_ref=P1&body_part=hand",
        content_type="application/x-www-form-urlencoded",
    )
    assert response.status_code == 415
    assert response.json()["code"] == "unsupported_media_type"


def test_downloads_are_binary_png_with_json_errors(schema):
    for path in DOWNLOADS:
        responses = schema["paths"][path]["get"]["responses"]
        assert responses["200"]["content"] == {
            "image/png": {"schema": {"type": "string", "format": "binary"}}
        }
        assert "Content-Disposition" in responses["200"]["headers"]
        errors = {code: r for code, r in responses.items() if code != "200"}
        assert {"401", "403", "404", "429"} <= set(errors)
        for response in errors.values():
            assert set(response["content"]) == {"application/json"}
            assert response["content"]["application/json"]["schema"]["$ref"].endswith("/Error")


SCOPES = {
    "cases_list": "read",
    "cases_create": "write",
    "cases_retrieve": "read",
    "cases_cancel": "write",
    "cases_image_download": "read",
    "cases_heatmap_download": "read",
    "review_queue_list": "review",
    "review_claim": "review",
    "review_release": "review",
    "review_reads_submit": "review",
    "models_list": "admin",
    "models_retrieve": "admin",
    "models_activate": "admin",
    "models_rollback": "admin",
    "training_runs_list": "admin",
    "training_runs_create": "admin",
    "training_runs_retrieve": "admin",
    "training_runs_cancel": "admin",
}


def test_every_operation_names_its_scope_and_has_its_own_description(schema):
    found = {}
    descriptions = set()
    for _, _, operation in operations(schema):
        operation_id = operation["operationId"]
        (scope,) = operation["x-required-scopes"]
        found[operation_id] = scope
        assert f"Requires the `{scope}` token scope" in operation["description"]
        body = operation["description"].split("\n\nRequires")[0]
        assert len(body) > 40, operation_id  # a real description, not only the scope note
        assert "Base:" not in body  # not the viewset's internal docstring
        descriptions.add(body)
    assert found == SCOPES
    assert len(descriptions) == len(SCOPES)


def test_response_headers_and_idempotency_key_limits_are_declared(schema):
    for _, _, operation in operations(schema):
        responses = operation["responses"]
        assert "WWW-Authenticate" in responses["401"]["headers"]
        assert responses["429"]["headers"]["Retry-After"]["schema"]["type"] == "integer"
    create = schema["paths"]["/api/v1/cases/"]["post"]
    (key,) = [p for p in create["parameters"] if p["name"] == "Idempotency-Key"]
    assert key["in"] == "header"
    assert key["schema"]["minLength"] == 1
    assert key["schema"]["maxLength"] == 128
    assert key["schema"]["pattern"] == "^[!-~]{1,128}$"


def test_error_responses_list_the_codes_of_their_status(schema):
    create = schema["paths"]["/api/v1/cases/"]["post"]["responses"]
    assert "`idempotency_key_reused`" in create["422"]["description"]
    for status in ("401", "409", "413", "422"):
        for code in error_codes_for_status(int(status)):
            assert f"`{code}`" in create[status]["description"]


def test_ids_have_one_type_and_path_parameters_keep_the_url_order(schema):
    components = schema["components"]["schemas"]
    assert components["ImageOutput"]["properties"]["id"]["type"] == "integer"
    assert components["ReadInputRequest"]["properties"]["image_id"]["type"] == "integer"
    assert components["CaseDetailOutput"]["properties"]["id"]["format"] == "uuid"
    for path in DOWNLOADS:
        params = schema["paths"][path]["get"]["parameters"]
        path_params = [(p["name"], p["schema"]) for p in params if p["in"] == "path"]
        assert [name for name, _ in path_params] == ["uuid", "image_id"]
        assert path_params[0][1] == {"type": "string", "format": "uuid"}
        assert path_params[1][1]["type"] == "integer"
    for path, _, operation in operations(schema):
        for param in operation.get("parameters", []):
            if param["in"] == "path" and param["name"] == "uuid":
                assert param["schema"]["format"] == "uuid", path
            if param["in"] == "path" and param["name"] == "id":
                assert param["schema"]["type"] == "integer", path


def test_no_null_or_blank_enum_components_and_no_format_parameter(schema):
    components = schema["components"]["schemas"]
    assert "NullEnum" not in components
    assert "BlankEnum" not in components
    label = components["CaseListOutput"]["properties"]["final_label"]
    assert label["nullable"] is True
    assert label["allOf"] == [{"$ref": "#/components/schemas/LabelEnum"}]
    for _, _, operation in operations(schema):
        assert all(p["name"] != "format" for p in operation.get("parameters", []))


def test_format_query_parameter_changes_nothing(clinician, issue_token, bearer, case_with_result):
    """`?format=` is not part of the API: it neither selects a renderer nor answers 404."""
    raw, _ = issue_token(clinician, ["read"])
    api = bearer(raw)
    listed = api.get("/api/v1/cases/?format=png")
    assert listed.status_code == 200
    assert listed["Content-Type"] == "application/json"
    image = case_with_result.images.get()
    url = f"/api/v1/cases/{case_with_result.uuid}/images/{image.pk}/heatmap/"
    for query in ("", "?format=json", "?format=xml"):
        response = api.get(url + query)
        assert response.status_code == 200, query
        assert response["Content-Type"] == "image/png"


def test_optional_request_fields_carry_no_default(schema):
    """A `default` makes generated TypeScript types require the field (openapi-typescript)."""
    components = schema["components"]["schemas"]
    for name in ("CaseCreateInputRequest", "ReadInputRequest"):
        component = components[name]
        for field, spec in component["properties"].items():
            if field not in component.get("required", []):
                assert "default" not in spec, (name, field)
    assert set(components["ReadInputRequest"]["required"]) == {"image_id", "decision"}
