"""Errors of the webhooks API (rendered by the common handler)."""

from __future__ import annotations

from clarin_common.errors import Conflict, NotFound


class WebhookNotFound(NotFound):
    code = "webhook_not_found"
    message = "Webhook not found"


class DeliveryNotFound(NotFound):
    code = "delivery_not_found"
    message = "Delivery not found"


class WebhookLimitReached(Conflict):
    code = "webhook_limit_reached"
    message = "This account has as many webhooks as it may have; delete one first"


class DeliveryInProgress(Conflict):
    code = "delivery_in_progress"
    message = "This delivery is being attempted right now; try again in a moment"
