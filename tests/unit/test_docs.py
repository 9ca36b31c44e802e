"""Docs that describe code are checked against it: the workflows' state contracts are the models'."""

from __future__ import annotations

from pathlib import Path

from lambdas import contracts, models

DOC = Path(__file__).resolve().parents[2] / "docs" / "serverless.md"


def test_the_state_contracts_in_docs_serverless_md_are_generated_from_the_models() -> None:
    text = DOC.read_text()
    for name, table in contracts.tables().items():
        assert table in text, (
            f"docs/serverless.md's {name} contract is stale: run python -m lambdas.contracts"
        )


def test_the_generated_contract_names_every_field_of_each_model() -> None:
    rendered = contracts.fields(models.ResolveOutput)
    for field in models.RestoreState.model_fields:
        assert f'"{field}"' in rendered
    assert contracts.fields(models.SealOutput) == '{"backup_id", "stored_bytes"}'
    assert contracts.fields(models.BackupRequest) == '{"type", "backup_id"?}'


def test_the_committed_openapi_document_is_the_one_the_api_serves() -> None:
    """Regenerate with `python -m lambdas.api > docs/openapi.json` when a route or a model changes."""
    import json

    from lambdas.api import openapi_document

    committed = json.loads((Path(__file__).resolve().parents[2] / "docs" / "openapi.json").read_text())
    assert committed == openapi_document(), (
        "docs/openapi.json is stale: python -m lambdas.api > docs/openapi.json"
    )
    operations = {(path, method) for path, item in committed["paths"].items() for method in item}
    assert operations == {
        ("/api/admin/backup", "post"),
        ("/api/admin/backup/status", "get"),
        ("/api/admin/backup/{backupId}", "get"),
        ("/api/admin/backup/download-url", "post"),
        ("/api/admin/openapi.json", "get"),
        ("/metrics", "get"),
    }
    assert committed["openapi"].startswith("3.1") and committed["security"] == [{"bearer": []}]
    # Every error the API answers is documented in the one shape.
    for item in committed["paths"].values():
        for operation in item.values():
            for status, response in operation["responses"].items():
                if int(status) >= 400:  # (the exposition's 200 is text/plain)
                    schema = response["content"]["application/json"]["schema"]
                    assert schema == {"$ref": "#/components/schemas/ErrorBody"}, (
                        status,
                        operation["summary"],
                    )
