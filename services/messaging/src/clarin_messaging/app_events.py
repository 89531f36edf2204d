"""Application events (``app.{account}.{type}``) published after commit."""

from __future__ import annotations

from typing import Any

from clarin_common.contract import Chat, Message
from clarin_common.events import (
    ChatReadData,
    ChatUpdatedData,
    Envelope,
    HistoryImportingData,
    HistorySyncedData,
    MessageSentData,
    MessageStatusData,
    MessageUpdatedData,
    NewMessageData,
    PresenceData,
    PresenceState,
    app_envelope,
    app_event_subject,
)

Event = tuple[str, Envelope[Any]]


def new_message(account_id: str, message: Message, chat: Chat) -> Event:
    return (
        app_event_subject(account_id, "new_message"),
        app_envelope(
            account_id,
            "new_message",
            NewMessageData(message=message, chat=chat),
            device_id=message.device_id,
        ),
    )


def message_sent(account_id: str, message: Message) -> Event:
    return (
        app_event_subject(account_id, "message_sent"),
        app_envelope(
            account_id,
            "message_sent",
            MessageSentData(message=message),
            device_id=message.device_id,
        ),
    )


def message_status(
    account_id: str, message_id: str, chat_id: str, status: str, device_id: str | None = None
) -> Event:
    return (
        app_event_subject(account_id, "message_status"),
        app_envelope(
            account_id,
            "message_status",
            MessageStatusData.model_validate(
                {"message_id": message_id, "chat_id": chat_id, "status": status}
            ),
            device_id=device_id,
        ),
    )


def chat_read(account_id: str, chat_id: str, device_id: str | None = None) -> Event:
    return (
        app_event_subject(account_id, "chat_read"),
        app_envelope(account_id, "chat_read", ChatReadData(chat_id=chat_id), device_id=device_id),
    )


def message_updated(account_id: str, message: Message) -> Event:
    return (
        app_event_subject(account_id, "message_updated"),
        app_envelope(
            account_id,
            "message_updated",
            MessageUpdatedData(message=message),
            device_id=message.device_id,
        ),
    )


def chat_updated(account_id: str, chat: Chat) -> Event:
    return (
        app_event_subject(account_id, "chat_updated"),
        app_envelope(
            account_id, "chat_updated", ChatUpdatedData(chat=chat), device_id=chat.device_id
        ),
    )


def presence(account_id: str, chat_id: str, state: PresenceState) -> Event:
    return (
        app_event_subject(account_id, "presence"),
        app_envelope(account_id, "presence", PresenceData(chat_id=chat_id, state=state)),
    )


def history_importing(account_id: str, device_id: str) -> Event:
    return (
        app_event_subject(account_id, "history_importing"),
        app_envelope(
            account_id,
            "history_importing",
            HistoryImportingData(device_id=device_id),
            device_id=device_id,
        ),
    )


def history_synced(account_id: str, device_id: str, chats: int, messages: int) -> Event:
    return (
        app_event_subject(account_id, "history_synced"),
        app_envelope(
            account_id,
            "history_synced",
            HistorySyncedData(device_id=device_id, chats=chats, messages=messages),
            device_id=device_id,
        ),
    )
