-- Events that arrived before the order they belong to was here, or before the revision
-- they name became the order's current one. They are applied (projected and put on the
-- timeline, in the order they happened) as soon as the order or revision appears, and
-- removed from here then. An event of an order that never appears (another system's
-- order on the same bus) stays for a bounded time and number (see docs/operations.md).
CREATE TABLE pending_events (
    id          bigserial PRIMARY KEY,
    order_id    uuid        NOT NULL,
    message_id  text        NOT NULL UNIQUE,
    type        text        NOT NULL,
    revision    integer,
    payload     jsonb       NOT NULL,
    occurred_at timestamptz NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX pending_events_order ON pending_events (order_id, occurred_at, id);
CREATE INDEX pending_events_age ON pending_events (received_at, id);
