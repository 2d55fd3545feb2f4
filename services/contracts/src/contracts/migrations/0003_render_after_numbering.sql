-- A contract is numbered in a short transaction and typeset afterwards, outside any
-- transaction (decision 0026). Until its document is stored it waits here, with its number
-- and terms; the transaction that stores the document moves it to `contracts`, so a
-- contract there always has its document. The approval's delivery is kept so that one whose
-- document can never be typeset is dead-lettered as its approval was before.
CREATE TABLE contract_renders (
    id                uuid PRIMARY KEY,
    number            text        NOT NULL UNIQUE,
    order_id          uuid        NOT NULL,
    revision          integer     NOT NULL CHECK (revision >= 1),
    content           jsonb       NOT NULL,
    number_key        integer     NOT NULL,
    number_seq        bigint      NOT NULL,
    delivery          jsonb,
    attempts          integer     NOT NULL DEFAULT 0,
    -- a renderer's lease: another replica takes the contract over once it has passed
    claimed_until     timestamptz,
    created_at        timestamptz NOT NULL DEFAULT now(),
    UNIQUE (order_id, revision)
);
CREATE INDEX contract_renders_due ON contract_renders (number);

-- A number whose contract could never be typeset is handed back here, and the next draft
-- of its counter takes it before the counter moves on: numbers stay without gaps.
CREATE TABLE contract_numbers_released (
    year  integer NOT NULL,
    seq   bigint  NOT NULL,
    PRIMARY KEY (year, seq)
);
