-- Identities every service honours: local accounts, API keys of company systems, sessions.

CREATE TABLE accounts (
    username        text        PRIMARY KEY,
    display_name    text        NOT NULL,
    email           text,
    password_hash   text,                    -- argon2id; NULL: no local password (SSO only)
    roles           text[]      NOT NULL DEFAULT '{}',
    team            text[]      NOT NULL DEFAULT '{}',  -- salespeople a sales manager sees
    disabled        boolean     NOT NULL DEFAULT false,
    failed_logins   integer     NOT NULL DEFAULT 0,
    locked_until    timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE api_keys (
    id              text        PRIMARY KEY,   -- the public part of the key, ofk_<id>_<secret>
    name            text        NOT NULL UNIQUE,
    secret_sha256   bytea       NOT NULL,      -- the secret is 256 random bits: a fast hash is enough
    scopes          text[]      NOT NULL,
    created_by      text        NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    expires_at      timestamptz,
    last_used_at    timestamptz,
    revoked_at      timestamptz,
    revoked_by      text
);

CREATE TABLE sessions (
    token_sha256    bytea       PRIMARY KEY,
    username        text        NOT NULL REFERENCES accounts ON DELETE CASCADE,
    csrf_token      text        NOT NULL,
    source          text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    expires_at      timestamptz NOT NULL
);
CREATE INDEX sessions_expiry ON sessions (expires_at);

-- Where each service logs in as its own role (deploy/postgres/initdb), they are members
-- of orderflow_services, and every service reads and updates this schema whoever created it.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'orderflow_services') THEN
        GRANT USAGE, CREATE ON SCHEMA auth TO orderflow_services;
        GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA auth TO orderflow_services;
    END IF;
END
$$;
