-- depends: 0001.init
-- when a later WhatsApp contact of the lead was last announced as lead_updated
ALTER TABLE leads ADD COLUMN contact_announced_at timestamptz;
