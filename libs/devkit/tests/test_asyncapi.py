"""The committed AsyncAPI document is what the event models say."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from clarin_common.events import APP_EVENT_MODELS, WA_EVENT_MODELS
from clarin_devkit import asyncapi

ROOT = Path(__file__).resolve().parents[3]
DOC = ROOT / "docs" / "asyncapi.yaml"


def test_committed_document_matches_models() -> None:
    assert DOC.exists(), "docs/asyncapi.yaml is missing: run `make asyncapi`"
    assert asyncapi.main(["--check", str(DOC)]) == 0, "docs/asyncapi.yaml is stale: `make asyncapi`"


def test_check_fails_on_a_stale_document(tmp_path: Path) -> None:
    stale = tmp_path / "asyncapi.yaml"
    stale.write_text(DOC.read_text().replace("wa_message_id", "wa_msg_id"))
    assert asyncapi.main(["--check", str(stale)]) == 1


def _resolve(doc: dict[str, Any], ref: str) -> Any:
    node: Any = doc
    for part in ref.removeprefix("#/").split("/"):
        node = node[part]
    return node


def test_every_subject_is_documented_and_refs_resolve() -> None:
    doc = yaml.safe_load(DOC.read_text())
    addresses = {c["address"] for c in doc["channels"].values()}
    for kind in WA_EVENT_MODELS:
        assert f"wa.evt.{{account_id}}.{{device_id}}.{kind}" in addresses
    for type_ in APP_EVENT_MODELS:
        assert f"app.{{account_id}}.{type_}" in addresses
    assert "wa.cmd.{device_id}" in addresses

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if "$ref" in node:
                _resolve(doc, node["$ref"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(doc)
    envelope = doc["components"]["schemas"]["Envelope_WaMessage_"]
    assert set(envelope["required"]) >= {"type", "account_id", "data"}
