-- Orders, their revisions, idempotency keys and the event log behind the read model.

CREATE TABLE orders (
    id                 uuid PRIMARY KEY,
    status             text        NOT NULL CHECK (status IN (
                           'draft', 'submitted', 'in_review', 'changes_requested', 'approved',
                           'contract_drafted', 'contract_signed', 'withdrawn')),
    salesperson_id     text        NOT NULL,
    external_ref       text,
    customer_name      text,
    -- where the order came from: api, console or bus
    channel            text        NOT NULL,
    current_revision   integer     NOT NULL CHECK (current_revision >= 1),
    -- the latest revision sent to review; NULL while the order was never submitted
    submitted_revision integer CHECK (submitted_revision <= current_revision),
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    -- the latest request for changes: revision, every department's feedback, annotations
    change_request     jsonb,
    approved_at        timestamptz,
    contract_id        uuid,
    contract_number    text,
    contract_signed_at timestamptz,
    withdrawn_at       timestamptz
);
CREATE INDEX orders_by_status ON orders (status, created_at DESC);
CREATE INDEX orders_by_salesperson ON orders (salesperson_id, created_at DESC);
CREATE INDEX orders_by_external_ref ON orders (external_ref) WHERE external_ref IS NOT NULL;

-- Every version of the order document. Reviews and verdicts name a revision, so once
-- submitted a revision never changes; a trigger makes sure of it.
CREATE TABLE revisions (
    order_id     uuid        NOT NULL REFERENCES orders (id) ON DELETE CASCADE,
    revision     integer     NOT NULL CHECK (revision >= 1),
    document     jsonb       NOT NULL,
    totals       jsonb       NOT NULL,
    channel      text        NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    submitted_at timestamptz,
    PRIMARY KEY (order_id, revision)
);

CREATE FUNCTION revisions_immutable() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.submitted_at IS NOT NULL THEN
        RAISE EXCEPTION 'revision % of order % is submitted and cannot change',
            OLD.revision, OLD.order_id USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    RETURN CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
END $$;
CREATE TRIGGER revisions_immutable BEFORE UPDATE OR DELETE ON revisions
    FOR EACH ROW EXECUTE FUNCTION revisions_immutable();

-- A retried POST with the same Idempotency-Key finds its order here. The key is claimed
-- before the order row exists (in the same transaction), hence the deferred reference.
CREATE TABLE idempotency_keys (
    key         text        PRIMARY KEY,
    fingerprint text        NOT NULL,
    order_id    uuid        NOT NULL REFERENCES orders (id) ON DELETE CASCADE
                            DEFERRABLE INITIALLY DEFERRED,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- Every event consumed for the read model, with what it did: the order's timeline.
CREATE TABLE order_events (
    id           bigserial PRIMARY KEY,
    order_id     uuid        NOT NULL REFERENCES orders (id) ON DELETE CASCADE,
    message_id   text        NOT NULL UNIQUE,
    type         text        NOT NULL,
    revision     integer,
    payload      jsonb       NOT NULL,
    occurred_at  timestamptz NOT NULL,
    recorded_at  timestamptz NOT NULL DEFAULT now(),
    outcome      text        NOT NULL
);
CREATE INDEX order_events_timeline ON order_events (order_id, occurred_at, id);
