-- The relay takes the due rows in id order, a batch at a time. `outbox_pending`
-- (next_attempt_at, id) made every batch read all the due rows and sort them by id, so a
-- backlog of n rows cost n reads per batch; an index on id over the pending rows alone
-- walks them in the order taken and stops after one batch, however many sent rows the table
-- keeps.
CREATE INDEX outbox_due ON outbox (id) WHERE sent_at IS NULL;
DROP INDEX outbox_pending;
