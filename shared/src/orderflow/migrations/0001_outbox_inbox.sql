-- The reliability recipe's tables, created in every service's schema.

-- Messages caused by a state change, written in the same transaction as the change and
-- published by the relay after commit.
CREATE TABLE outbox (
    id             bigserial PRIMARY KEY,
    message_id     uuid        NOT NULL UNIQUE,
    exchange       text        NOT NULL,
    routing_key    text        NOT NULL,
    message_type   text        NOT NULL,
    correlation_id text,
    reply_to       text,
    mandatory      boolean     NOT NULL DEFAULT true,
    headers        jsonb       NOT NULL DEFAULT '{}',
    body           bytea       NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    attempts       integer     NOT NULL DEFAULT 0,
    last_error     text,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    sent_at        timestamptz
);
CREATE INDEX outbox_pending ON outbox (next_attempt_at, id) WHERE sent_at IS NULL;

-- Messages a consumer has already applied: a redelivery finds its row and does nothing.
CREATE TABLE inbox (
    consumer     text        NOT NULL,
    message_id   text        NOT NULL,
    message_type text,
    received_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, message_id)
);

-- Wake the relays of this schema when a transaction that wrote to the outbox commits.
CREATE FUNCTION outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify(TG_TABLE_SCHEMA || '_outbox', '');
    RETURN NULL;
END $$;
CREATE TRIGGER outbox_notify AFTER INSERT ON outbox
    FOR EACH STATEMENT EXECUTE FUNCTION outbox_notify();
