-- Who did it: the authenticated caller of an HTTP request (its id, kind, how it signed in
-- and the client address) or, for an order sent over the bus, the broker user that
-- published the command. Rows written before authentication came keep NULL.
ALTER TABLE order_activity ADD COLUMN actor jsonb;
ALTER TABLE order_events ADD COLUMN actor jsonb;
ALTER TABLE orders ADD COLUMN created_by jsonb;
ALTER TABLE orders ADD COLUMN withdrawn_by jsonb;

-- The events intake publishes because of a request (a submission, a withdrawal), with who
-- made the request: the event comes back through the bus for the timeline, and its entry
-- takes the actor from here (matched by message id) rather than from anything in the body.
CREATE TABLE published_actors (
    message_id text        PRIMARY KEY,
    actor      jsonb       NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
