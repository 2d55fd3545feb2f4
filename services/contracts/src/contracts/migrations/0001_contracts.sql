CREATE TABLE contracts (
    id                uuid PRIMARY KEY,
    number            text        NOT NULL UNIQUE,
    order_id          uuid        NOT NULL,
    revision          integer     NOT NULL CHECK (revision >= 1),
    status            text        NOT NULL DEFAULT 'drafted'
                      CHECK (status IN ('drafted', 'sent', 'signed', 'voided', 'superseded')),
    -- the terms exactly as drafted (domain.ContractContent), what a renderer renders;
    -- content_version says which shape of it
    content           jsonb       NOT NULL,
    content_version   integer     NOT NULL,
    language          text        NOT NULL,
    salesperson_id    text        NOT NULL,
    currency          text        NOT NULL,
    total             numeric(20, 2) NOT NULL,
    drafted_at        timestamptz NOT NULL,
    status_changed_at timestamptz NOT NULL,
    superseded_by     uuid REFERENCES contracts (id),
    -- a re-delivered or repeated approval of a revision never makes a second contract
    UNIQUE (order_id, revision)
);
CREATE INDEX contracts_of_salesperson ON contracts (salesperson_id, drafted_at DESC);

-- Contract numbers are handed out gap-free: the counter moves in the transaction that
-- stores the contract, so a draft that rolls back gives its number back. `year` is the
-- calendar year of the numbers (0: one counter for a pattern without a year).
CREATE TABLE contract_number_sequences (
    year      integer PRIMARY KEY CHECK (year >= 0),
    next_seq  bigint  NOT NULL CHECK (next_seq >= 1)
);
