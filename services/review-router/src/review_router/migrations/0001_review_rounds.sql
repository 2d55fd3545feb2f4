-- One review round per submitted revision of an order.
CREATE TABLE review_rounds (
    id             uuid PRIMARY KEY,
    order_id       uuid        NOT NULL,
    revision       integer     NOT NULL CHECK (revision >= 1),
    status         text        NOT NULL CHECK (status IN
                       ('open', 'approved', 'changes_requested', 'superseded', 'withdrawn')),
    current_stage  integer     NOT NULL,
    -- the stages as planned at submission: [{"number": 1, "departments": ["supervisor"]}, ...]
    plan           jsonb       NOT NULL,
    -- the order and its totals exactly as submitted, so the decision events carry them
    order_document jsonb       NOT NULL,
    totals         jsonb       NOT NULL,
    opened_at      timestamptz NOT NULL,
    decided_at     timestamptz,
    -- what closed the round: the feedback and annotations, or why it was closed undecided
    decision       jsonb,
    -- a re-sent `order.submitted` (new message id, same revision) opens no second round
    UNIQUE (order_id, revision)
);
-- an order is reviewed in one revision at a time
CREATE UNIQUE INDEX review_rounds_one_open ON review_rounds (order_id) WHERE status = 'open';

-- Every verdict received, whatever it did, for the record.
CREATE TABLE verdicts (
    id          uuid PRIMARY KEY,
    message_id  text        NOT NULL,
    review_id   uuid        NOT NULL,
    round_id    uuid        NOT NULL REFERENCES review_rounds (id),
    order_id    uuid        NOT NULL,
    revision    integer     NOT NULL,
    department  text        NOT NULL,
    decision    text        NOT NULL CHECK (decision IN ('approve', 'request_changes')),
    reviewer    jsonb       NOT NULL,
    comment     text,
    annotations jsonb       NOT NULL DEFAULT '[]',
    outcome     text        NOT NULL CHECK (outcome IN
                    ('accepted', 'stale', 'not_requested', 'duplicate', 'round_closed')),
    received_at timestamptz NOT NULL
);
CREATE INDEX verdicts_round ON verdicts (round_id, received_at);
CREATE INDEX verdicts_review ON verdicts (review_id, received_at);

-- One department's review of a round; every department of the plan has a row from the
-- start, the later stages as `not_sent` until their stage opens.
CREATE TABLE review_requests (
    review_id    uuid PRIMARY KEY,
    round_id     uuid        NOT NULL REFERENCES review_rounds (id),
    department   text        NOT NULL,
    stage        integer     NOT NULL,
    status       text        NOT NULL CHECK (status IN
                     ('pending', 'approved', 'changes_requested', 'cancelled', 'not_sent')),
    requested_at timestamptz,
    answered_at  timestamptz,
    cancelled_at timestamptz,
    -- the verdict that answered it
    verdict_id   uuid REFERENCES verdicts (id),
    UNIQUE (round_id, department)
);
CREATE INDEX review_requests_pending ON review_requests (department, requested_at)
    WHERE status = 'pending';
