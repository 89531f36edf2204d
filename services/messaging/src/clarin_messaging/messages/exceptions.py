"""The errors of messages and media (rendered by the common handler)."""

from __future__ import annotations

from clarin_common.errors import Conflict, NotFound


class DeviceNotFound(NotFound):
    """The device is not one of the caller's account (as the devices service says)."""

    code = "device_not_found"
    message = "Device not found"


class MessageNotFound(NotFound):
    code = "message_not_found"
    message = "Message not found"


class QuotedNotFound(MessageNotFound):
    message = "The message to reply to was not found"


class MessageDeleted(Conflict):
    code = "message_deleted"
    message = "The message was deleted for everyone"


class QuotedDeleted(MessageDeleted):
    message = "That message was deleted for everyone"


class MessageNotSent(Conflict):
    code = "message_not_sent"
    message = "The message is not on WhatsApp"


class MessageNotEditable(Conflict):
    code = "message_not_editable"
    message = "Only your own text messages can be edited"


class EditWindowPassed(Conflict):
    code = "edit_window_passed"
    message = "WhatsApp allows editing a message only in its first 15 minutes"


class MessageNotRevocable(Conflict):
    code = "message_not_revocable"
    message = "Only your own messages can be deleted for everyone"


class WhatsAppRefused(Conflict):
    """The device's worker answered that WhatsApp refused the command
    (``details.reason`` is the worker's code)."""

    code = "whatsapp_refused"
    message = "WhatsApp refused it"


class MediaNotFound(NotFound):
    code = "media_not_found"
    message = "Media not found"


class MediaNotAvailable(NotFound):
    code = "media_not_available"
    message = "The media file is not available"


class MediaPending(Conflict):
    code = "media_pending"
    message = "The file is still being downloaded from WhatsApp"


class MediaTooLarge(Conflict):
    code = "media_too_large"
    message = "The file is too large to download"


class MediaFailed(Conflict):
    code = "media_failed"
    message = "The file could not be downloaded"


class MediaNotRetryable(Conflict):
    code = "media_not_retryable"
    message = "WhatsApp refused to send the file again"
