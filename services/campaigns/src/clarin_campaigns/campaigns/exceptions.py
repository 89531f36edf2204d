"""The errors of campaigns (rendered by the common handler)."""

from __future__ import annotations

from clarin_common.errors import Conflict, NotFound


class CampaignNotFound(NotFound):
    code = "campaign_not_found"
    message = "Campaign not found"


class CampaignState(Conflict):
    code = "campaign_state"
    message = "The campaign cannot do that in its current state"
