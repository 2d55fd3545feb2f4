-- The documents of a contract: the PDF typeset when it was drafted and the signed copy the
-- customer returned. Stored once and never changed; the SHA-256 taken when they were stored
-- is checked every time they are served.
CREATE TABLE contract_documents (
    id           uuid PRIMARY KEY,
    contract_id  uuid        NOT NULL REFERENCES contracts (id),
    kind         text        NOT NULL CHECK (kind IN ('drafted', 'signed_copy')),
    media_type   text        NOT NULL,
    file_name    text,
    size         bigint      NOT NULL CHECK (size >= 0),
    sha256       text        NOT NULL CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    content      bytea       NOT NULL,
    created_at   timestamptz NOT NULL,
    UNIQUE (contract_id, kind)
);
-- a PDF is compressed already: store it as it is rather than try again
ALTER TABLE contract_documents ALTER COLUMN content SET STORAGE EXTERNAL;

CREATE FUNCTION contract_documents_are_immutable() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'contract document % is immutable: % refused', OLD.id, TG_OP
        USING ERRCODE = 'integrity_constraint_violation';
END;
$$;
CREATE TRIGGER contract_documents_immutable
    BEFORE UPDATE OR DELETE ON contract_documents
    FOR EACH ROW EXECUTE FUNCTION contract_documents_are_immutable();

-- The hashes are kept on the contract as well, so a document altered together with its own
-- row's hash still fails the check.
ALTER TABLE contracts
    ADD COLUMN document_sha256    text CHECK (document_sha256 ~ '^[0-9a-f]{64}$'),
    ADD COLUMN sent_at            timestamptz,
    ADD COLUMN sent_by            text,
    ADD COLUMN signed_at          timestamptz,
    ADD COLUMN signed_copy_sha256 text CHECK (signed_copy_sha256 ~ '^[0-9a-f]{64}$'),
    ADD COLUMN voided_at          timestamptz,
    ADD COLUMN void_reason        text,
    ADD COLUMN voided_by          text,
    ADD CONSTRAINT signed_has_copy
        CHECK (status <> 'signed' OR signed_copy_sha256 IS NOT NULL),
    ADD CONSTRAINT voided_has_reason
        CHECK (status <> 'voided' OR void_reason IS NOT NULL);
