CREATE TABLE things (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), account_id uuid NOT NULL, data jsonb NOT NULL DEFAULT '{}');
