"""Application events (``app.{account}.{type}``), staged in the outbox with the
change they announce (:func:`clarin_common.outbox.stage_events`)."""

from __future__ import annotations

from clarin_common.contract import Chat, Message
from clarin_common.events import (
    ChatReadData,
    ChatUpdatedData,
    HistoryImportingData,
    HistorySyncedData,
    MessageSentData,
    MessageStatusData,
    MessageUpdatedData,
    NewMessageData,
    PresenceData,
    PresenceState,
)
from clarin_common.outbox import Event, app_event

__all__ = ["Event"]


def new_message(account_id: str, message: Message, chat: Chat) -> Event:
    data = NewMessageData(message=message, chat=chat)
    return app_event(account_id, "new_message", data, device_id=message.device_id)


def message_sent(account_id: str, message: Message) -> Event:
    data = MessageSentData(message=message)
    return app_event(account_id, "message_sent", data, device_id=message.device_id)


def message_status(
    account_id: str, message_id: str, chat_id: str, status: str, device_id: str | None = None
) -> Event:
    data = MessageStatusData.model_validate(
        {"message_id": message_id, "chat_id": chat_id, "status": status}
    )
    return app_event(account_id, "message_status", data, device_id=device_id)


def chat_read(account_id: str, chat_id: str, device_id: str | None = None) -> Event:
    return app_event(account_id, "chat_read", ChatReadData(chat_id=chat_id), device_id=device_id)


def message_updated(account_id: str, message: Message) -> Event:
    data = MessageUpdatedData(message=message)
    return app_event(account_id, "message_updated", data, device_id=message.device_id)


def chat_updated(account_id: str, chat: Chat) -> Event:
    return app_event(
        account_id, "chat_updated", ChatUpdatedData(chat=chat), device_id=chat.device_id
    )


def presence(account_id: str, chat_id: str, state: PresenceState) -> Event:
    return app_event(account_id, "presence", PresenceData(chat_id=chat_id, state=state))


def history_importing(account_id: str, device_id: str) -> Event:
    data = HistoryImportingData(device_id=device_id)
    return app_event(account_id, "history_importing", data, device_id=device_id)


def history_synced(account_id: str, device_id: str, chats: int, messages: int) -> Event:
    data = HistorySyncedData(device_id=device_id, chats=chats, messages=messages)
    return app_event(account_id, "history_synced", data, device_id=device_id)
