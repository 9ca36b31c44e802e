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
