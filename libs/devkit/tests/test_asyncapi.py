"""The committed AsyncAPI document is what the event models say."""

from __future__ import annotations

from pathlib import Path
from typing import TypeAlias

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


# a node of the YAML document
Node: TypeAlias = dict[str, "Node"] | list["Node"] | str | int | float | bool | None


def _mapping(node: Node) -> dict[str, Node]:
    assert isinstance(node, dict), node
    return node


def _at(node: Node, *path: str) -> Node:
    for part in path:
        node = _mapping(node)[part]
    return node


def _resolve(doc: dict[str, Node], ref: str) -> Node:
    return _at(doc, *ref.removeprefix("#/").split("/"))


def test_every_subject_is_documented_and_refs_resolve() -> None:
    doc = _mapping(yaml.safe_load(DOC.read_text()))
    addresses = {_at(c, "address") for c in _mapping(doc["channels"]).values()}
    for kind in WA_EVENT_MODELS:
        assert f"wa.evt.{{account_id}}.{{device_id}}.{kind}" in addresses
    for type_ in APP_EVENT_MODELS:
        assert f"app.{{account_id}}.{type_}" in addresses
    assert "wa.cmd.{device_id}" in addresses

    def walk(node: Node) -> None:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if ref is not None:
                assert isinstance(ref, str), ref
                _resolve(doc, ref)
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(doc)
    required = _at(doc, "components", "schemas", "Envelope_WaMessage_", "required")
    assert isinstance(required, list), required
    assert {"type", "account_id", "data"} <= set(map(str, required))
