-- Every notification is a delivery: the in-app inbox is delivered when it is written; email
-- and chat robots are sent by the delivery worker, retried, and marked failed at last.
ALTER TABLE notifications
    ADD COLUMN subject         text        NOT NULL DEFAULT '',
    ADD COLUMN html            text,
    ADD COLUMN markdown        text,
    ADD COLUMN language        text        NOT NULL DEFAULT 'zh',
    ADD COLUMN recipient_name  text,
    -- the email address, or the robot's name in the contacts file
    ADD COLUMN address         text,
    ADD COLUMN status          text        NOT NULL DEFAULT 'delivered'
        CHECK (status IN ('pending', 'sending', 'delivered', 'failed')),
    ADD COLUMN attempts        integer     NOT NULL DEFAULT 0,
    -- when pending: due time; when sending: the end of the worker's lease on it
    ADD COLUMN next_attempt_at timestamptz NOT NULL DEFAULT now(),
    ADD COLUMN last_error      text,
    ADD COLUMN delivered_at    timestamptz,
    ADD COLUMN failed_at       timestamptz,
    ADD COLUMN updated_at      timestamptz NOT NULL DEFAULT now();

UPDATE notifications SET delivered_at = created_at, subject = title WHERE channel = 'inbox';

CREATE INDEX notifications_due ON notifications (channel, next_attempt_at)
    WHERE status IN ('pending', 'sending');
CREATE INDEX notifications_by_status ON notifications (status, created_at DESC);

-- One row per message sent (or being sent) to a rate-limited chat robot: the sliding window
-- the platform counts. Shared by every replica through the database.
CREATE TABLE rate_slots (
    id          bigserial   PRIMARY KEY,
    target      text        NOT NULL,
    delivery_id uuid        NOT NULL,
    claimed_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    -- when the call returned: the platform had the message by then
    finished_at timestamptz
);
CREATE INDEX rate_slots_target ON rate_slots (target, claimed_at);

-- Wake the delivery workers of this schema when a delivery becomes due.
CREATE FUNCTION deliveries_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify(TG_TABLE_SCHEMA || '_deliveries', NEW.channel);
    RETURN NULL;
END $$;
CREATE TRIGGER deliveries_notify AFTER INSERT OR UPDATE OF status ON notifications
    FOR EACH ROW WHEN (NEW.status = 'pending') EXECUTE FUNCTION deliveries_notify();
