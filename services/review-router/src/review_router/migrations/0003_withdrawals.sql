-- Withdrawals, decided here against the round's decision under the order's lock: one row
-- per request, with what it decided. A `withdrawn` row is the order's tombstone: an
-- `order.submitted` of that revision or an older one that arrives later (the two travel in
-- separate queues) opens no review.
CREATE TABLE withdrawals (
    id           bigserial PRIMARY KEY,
    order_id     uuid        NOT NULL,
    revision     integer     NOT NULL CHECK (revision >= 1),
    outcome      text        NOT NULL CHECK (outcome IN ('withdrawn', 'refused')),
    reason       text,
    requested_by text,
    requested_at timestamptz NOT NULL,
    decided_at   timestamptz NOT NULL,
    -- the round the withdrawal closed, or whose decision refused it; NULL when none was open
    round_id     uuid REFERENCES review_rounds (id),
    -- why it was refused, as the salesperson is told
    refusal      text
);
CREATE INDEX withdrawals_order ON withdrawals (order_id, revision);
