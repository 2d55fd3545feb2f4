-- The review policy, annotations, delegation, deadlines and authenticated senders.

-- the policy version that planned each round, and what the submission carried for the
-- departments asked in later stages
ALTER TABLE review_rounds
    ADD COLUMN policy_version    text,
    ADD COLUMN attachments       jsonb NOT NULL DEFAULT '[]',
    ADD COLUMN previous_revision integer,
    ADD COLUMN changes           jsonb NOT NULL DEFAULT '[]';

ALTER TABLE review_requests
    -- the deadline the policy gave the review when the round was planned
    ADD COLUMN due_hours            double precision,
    ADD COLUMN escalate_after_hours double precision,
    ADD COLUMN escalate_to          text,
    ADD COLUMN due_at               timestamptz,
    -- the review of the previous revision whose approval this one keeps
    ADD COLUMN carried_from         uuid REFERENCES review_requests (review_id),
    -- whom the department handed the review to, if it did
    ADD COLUMN assignee             jsonb;

ALTER TABLE verdicts
    ADD COLUMN on_behalf_of jsonb,
    -- the RabbitMQ user that published it, as the broker validated it
    ADD COLUMN user_id      text;
ALTER TABLE verdicts DROP CONSTRAINT verdicts_outcome_check;
ALTER TABLE verdicts ADD CONSTRAINT verdicts_outcome_check CHECK (outcome IN
    ('accepted', 'stale', 'not_requested', 'duplicate', 'round_closed', 'after_decision'));

-- Remarks a department posted while reviewing; only accepted ones reach the salesperson.
CREATE TABLE annotations (
    id           uuid PRIMARY KEY,
    message_id   text        NOT NULL,
    review_id    uuid        NOT NULL REFERENCES review_requests (review_id),
    round_id     uuid        NOT NULL REFERENCES review_rounds (id),
    department   text        NOT NULL,
    reviewer     jsonb       NOT NULL,
    on_behalf_of jsonb,
    annotations  jsonb       NOT NULL,
    outcome      text        NOT NULL,
    user_id      text,
    received_at  timestamptz NOT NULL
);
CREATE INDEX annotations_review ON annotations (review_id, received_at);

-- Every reassignment asked for, whatever it did.
CREATE TABLE assignments (
    id          uuid PRIMARY KEY,
    message_id  text        NOT NULL,
    review_id   uuid        NOT NULL REFERENCES review_requests (review_id),
    round_id    uuid        NOT NULL REFERENCES review_rounds (id),
    department  text        NOT NULL,
    assigned_by jsonb       NOT NULL,
    assignee    jsonb       NOT NULL,
    reason      text,
    outcome     text        NOT NULL,
    user_id     text,
    received_at timestamptz NOT NULL
);
CREATE INDEX assignments_review ON assignments (review_id, received_at);

-- Durable timers: a reminder when a review falls due, an escalation later. Polled with
-- FOR UPDATE SKIP LOCKED, so replicas share them and a restart loses none.
CREATE TABLE timers (
    id         bigserial PRIMARY KEY,
    kind       text        NOT NULL CHECK (kind IN ('overdue', 'escalate')),
    review_id  uuid        NOT NULL REFERENCES review_requests (review_id),
    due_at     timestamptz NOT NULL,
    fire_at    timestamptz NOT NULL,
    fired_at   timestamptz,
    -- sent, or why nothing was sent (the review was answered in time, say)
    outcome    text,
    attempts   integer     NOT NULL DEFAULT 0,
    last_error text,
    UNIQUE (review_id, kind)
);
CREATE INDEX timers_due ON timers (fire_at) WHERE fired_at IS NULL;

-- Customers with an approved order: the policy's `new_customer` condition.
CREATE TABLE known_customers (
    customer_key      text PRIMARY KEY,
    first_order_id    uuid        NOT NULL,
    first_approved_at timestamptz NOT NULL
);
