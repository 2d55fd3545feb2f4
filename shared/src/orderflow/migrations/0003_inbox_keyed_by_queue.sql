-- The inbox key of a consumer is its queue's name (decision 0027). Three subscribers had a
-- name of their own, typed by hand; their rows take the queue's name, so a message applied
-- before the upgrade is still a duplicate after it. The other consumers' names were their
-- queues' already: intake.commands, intake.projection, review-router.order-submitted,
-- review-router.withdrawal-requests, review-router.verdicts, contracts.order-approved,
-- notifier.contract-drafted, notifier.review-sent, notifier.review-overdue,
-- notifier.review-escalated. Runs in every service's schema; only the notifier's has rows.
CREATE TEMPORARY TABLE inbox_renamed (old text PRIMARY KEY, new text NOT NULL) ON COMMIT DROP;
INSERT INTO inbox_renamed VALUES
    ('notifier.changes-requested', 'notifier.order-changes-requested'),
    ('notifier.approved', 'notifier.order-approved'),
    ('notifier.withdrawal-refused', 'notifier.order-withdrawal-refused');

-- a message under both names (an old replica still running during a rolling upgrade
-- claimed it again) keeps one row, so the rename cannot break the primary key
DELETE FROM inbox i USING inbox_renamed r
 WHERE i.consumer = r.old
   AND EXISTS (SELECT 1 FROM inbox n WHERE n.consumer = r.new AND n.message_id = i.message_id);

UPDATE inbox i SET consumer = r.new FROM inbox_renamed r WHERE i.consumer = r.old;
