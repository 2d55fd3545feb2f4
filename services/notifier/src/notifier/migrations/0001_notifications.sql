CREATE TABLE notifications (
    id          uuid PRIMARY KEY,
    -- one notification per (event, recipient, channel), however often the event arrives
    event_id    text        NOT NULL,
    event_type  text        NOT NULL,
    recipient   text        NOT NULL,
    channel     text        NOT NULL,
    order_id    uuid,
    title       text        NOT NULL,
    body        text        NOT NULL,
    link        text        NOT NULL,
    data        jsonb       NOT NULL DEFAULT '{}',
    created_at  timestamptz NOT NULL DEFAULT now(),
    read_at     timestamptz,
    UNIQUE (event_id, recipient, channel)
);
CREATE INDEX notifications_inbox ON notifications (recipient, created_at DESC);
