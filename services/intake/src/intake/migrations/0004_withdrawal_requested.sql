-- A withdrawal is asked of the review-router, which decides it against the round's
-- decision; until it answers, the order is `withdrawal_requested`.
ALTER TABLE orders DROP CONSTRAINT orders_status_check;
ALTER TABLE orders ADD CONSTRAINT orders_status_check CHECK (status IN (
    'draft', 'submitted', 'in_review', 'changes_requested', 'approved', 'contract_drafted',
    'contract_signed', 'withdrawal_requested', 'withdrawn'));

ALTER TABLE orders
    -- the latest withdrawal asked for: who, when, why, and the router's answer
    ADD COLUMN withdrawal  jsonb,
    -- while a withdrawal waits for its answer: the status the review's events have
    -- brought the order to meanwhile (an approval decided before the withdrawal arrived),
    -- which the order takes when the withdrawal is refused
    ADD COLUMN held_status text CHECK (held_status IN (
        'draft', 'submitted', 'in_review', 'changes_requested', 'approved', 'contract_drafted',
        'contract_signed'));
