"""The AsyncAPI 3.0 document of Clarin's NATS events, generated from the models.

``python -m clarin_devkit.asyncapi`` prints it; ``--write PATH`` writes it and
``--check PATH`` fails when the committed document and the models disagree.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from clarin_common.events import (
    APP_EVENT_MODELS,
    WA_EVENT_MODELS,
    CommandReply,
    DisconnectCommand,
    EditCommand,
    Envelope,
    LogoutCommand,
    MarkReadCommand,
    PairPhoneCommand,
    ReactCommand,
    RetryMediaCommand,
    RevokeCommand,
    SendMediaCommand,
    SendTextCommand,
    TypingCommand,
)

VERSION = "1.0.0"
DEFAULT_PATH = Path("docs/asyncapi.yaml")

_WA_DOC = {
    "message": "A message seen on WhatsApp, in either direction.",
    "receipt": "Delivered/read receipts for outbound messages.",
    "sent": "An outbound message accepted by WhatsApp (or refused).",
    "status": "A device's connection status changed.",
    "qr": "A new QR code to scan for a device being linked.",
    "media": "The file of an earlier message was fetched (or why it was not).",
    "edit": "A message was edited (by the contact, or by our number: from_me).",
    "revoke": "A message was deleted for everyone.",
    "reaction": "A reaction to a message was set, replaced or removed (emoji '').",
    "presence": "A contact is typing, stopped, online or away (relayed, never stored).",
    "history": "A batch of the history WhatsApp sends after linking (last: the final one).",
}
_APP_DOC = {
    "new_message": "A message was stored (inbound or outbound).",
    "message_sent": "WhatsApp accepted an outbound message.",
    "message_status": "An outbound message was delivered, read or failed.",
    "message_updated": (
        "A stored message changed (media arrived or failed, edited, deleted, reactions)."
    ),
    "device_status": "A device's status changed (full device).",
    "qr_code": "A QR code to show while linking a device.",
    "chat_read": "A chat was marked read.",
    "chat_updated": "A conversation's status, assignee or labels changed.",
    "lead_created": "A lead was created (by an agent or by a first WhatsApp message).",
    "lead_updated": "A lead changed.",
    "lead_deleted": "A lead was deleted.",
    "presence": "A contact of a chat is typing, stopped, online or away (not stored).",
    "history_importing": "A history import started for a device.",
    "history_synced": "A history import finished: chats and messages added.",
    "campaign_progress": "A campaign's status or counters changed (at most once a second).",
}


def _camel(*parts: str) -> str:
    words = "_".join(parts).split("_")
    return words[0] + "".join(w.capitalize() for w in words[1:])


def build_document() -> dict[str, Any]:
    message_models: dict[str, type[BaseModel]] = {}
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    id_header = {
        "type": "object",
        "properties": {"Nats-Msg-Id": {"type": "string", "description": "Equals the envelope id."}},
    }

    def add(
        channel: str,
        address: str,
        params: list[str],
        model: type[BaseModel],
        doc: str,
        action: str = "receive",
        headers: bool = True,
        reply: type[BaseModel] | None = None,
    ) -> None:
        name = model.__name__.replace("[", "_").replace("]", "")
        message_models[name] = model
        msg: dict[str, Any] = {
            "name": name,
            "summary": doc,
            "contentType": "application/json",
            "payload": {"$ref": f"#/components/schemas/{name}"},
        }
        msg["headers"] = id_header
        messages[name] = msg
        channels[channel] = {
            "address": address,
            "parameters": {p: {"description": _PARAM_DOC[p]} for p in params},
            "messages": {name: {"$ref": f"#/components/messages/{name}"}},
            "description": doc,
        }
        op: dict[str, Any] = {
            "action": action,
            "channel": {"$ref": f"#/channels/{channel}"},
            "summary": doc,
        }
        operations[_camel(action, channel)] = op

    for kind, model in WA_EVENT_MODELS.items():
        add(
            _camel("wa", kind),
            f"wa.evt.{{account_id}}.{{device_id}}.{kind}",
            ["account_id", "device_id"],
            Envelope[model],  # type: ignore[valid-type]
            f"Stream WA_EVENTS. {_WA_DOC[kind]}",
        )
    for type_, model in APP_EVENT_MODELS.items():
        add(
            _camel("app", type_),
            f"app.{{account_id}}.{type_}",
            ["account_id"],
            Envelope[model],  # type: ignore[valid-type]
            f"Stream APP_EVENTS, published after commit. {_APP_DOC[type_]}",
        )
    add(
        "waOutbox",
        "wa.out.{device_id}.{priority}",
        ["device_id", "priority"],
        Envelope[SendTextCommand],
        "Stream WA_OUTBOX (a work queue): a queued send for the worker that holds the "
        "device; the envelope id is the message id. Media sends carry SendMediaCommand.",
        action="send",
    )
    commands: list[type[BaseModel]] = [
        SendTextCommand,
        SendMediaCommand,
        MarkReadCommand,
        RetryMediaCommand,
        ReactCommand,
        EditCommand,
        RevokeCommand,
        TypingCommand,
        PairPhoneCommand,
        DisconnectCommand,
        LogoutCommand,
    ]
    for command in commands:
        message_models[command.__name__] = command
        messages[command.__name__] = {
            "name": command.__name__,
            "contentType": "application/json",
            "payload": {"$ref": f"#/components/schemas/{command.__name__}"},
        }
    message_models["CommandReply"] = CommandReply
    messages["CommandReply"] = {
        "name": "CommandReply",
        "contentType": "application/json",
        "payload": {"$ref": "#/components/schemas/CommandReply"},
    }
    channels["waCommand"] = {
        "address": "wa.cmd.{device_id}",
        "parameters": {"device_id": {"description": _PARAM_DOC["device_id"]}},
        "messages": {c.__name__: {"$ref": f"#/components/messages/{c.__name__}"} for c in commands}
        | {"CommandReply": {"$ref": "#/components/messages/CommandReply"}},
        "description": "Request/reply commands to the worker that owns the device; "
        "no responders means the device is not connected.",
    }
    operations["sendWaCommand"] = {
        "action": "send",
        "channel": {"$ref": "#/channels/waCommand"},
        "messages": [{"$ref": f"#/channels/waCommand/messages/{c.__name__}"} for c in commands],
        "reply": {
            "channel": {"$ref": "#/channels/waCommand"},
            "messages": [{"$ref": "#/channels/waCommand/messages/CommandReply"}],
        },
    }

    refs, schemas = models_json_schema(
        [(m, "validation") for m in message_models.values()],
        ref_template="#/components/schemas/{model}",
    )
    for name, model in message_models.items():
        messages[name]["payload"] = refs[(model, "validation")]
    components_schemas = schemas.get("$defs", {})
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "Clarin events",
            "version": VERSION,
            "description": (
                "NATS subjects of Clarin. Every event is an envelope "
                "{id, type, account_id, device_id, occurred_at, data}; id is unique and "
                "is also the Nats-Msg-Id header. Generated from clarin_common.events; "
                "do not edit by hand."
            ),
        },
        "defaultContentType": "application/json",
        "servers": {
            "nats": {
                "host": "localhost:4222",
                "protocol": "nats",
                "description": "NATS with JetStream",
            }
        },
        "channels": dict(sorted(channels.items())),
        "operations": dict(sorted(operations.items())),
        "components": {
            "messages": dict(sorted(messages.items())),
            "schemas": dict(sorted(components_schemas.items())),
        },
    }


_PARAM_DOC = {
    "priority": "interactive (sent first) or bulk (campaigns).",
    "account_id": "The account (tenant) id.",
    "device_id": "The device (linked WhatsApp number) id.",
}


def render() -> str:
    return yaml.safe_dump(build_document(), sort_keys=False, allow_unicode=True, width=100)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--write", type=Path, help="write the document to this path")
    group.add_argument("--check", type=Path, help="fail if this file differs from the models")
    args = parser.parse_args(argv)
    text = render()
    if args.write:
        args.write.parent.mkdir(parents=True, exist_ok=True)
        args.write.write_text(text, encoding="utf-8")
    elif args.check:
        current = args.check.read_text(encoding="utf-8") if args.check.exists() else ""
        if current != text:
            print(f"{args.check} is out of date: run `make asyncapi`", file=sys.stderr)
            return 1
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
