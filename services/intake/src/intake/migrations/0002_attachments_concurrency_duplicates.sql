-- Attachments and their bytes, the files of each revision, the edit counter behind the
-- ETag, likely duplicates across channels, and intake's own actions for the timeline.

-- Every change intake makes to an order (an edit, a file, a submission, a withdrawal)
-- counts one up; with the current revision it is the ETag a PUT must send back.
ALTER TABLE orders ADD COLUMN version integer NOT NULL DEFAULT 1 CHECK (version >= 1);

-- The customer's purchase-order reference, normalised per customer, and the older orders
-- found with the same one when this order arrived (or changed its reference).
ALTER TABLE orders ADD COLUMN duplicate_key text;
ALTER TABLE orders ADD COLUMN possible_duplicate_of uuid[] NOT NULL DEFAULT '{}';
CREATE INDEX orders_by_duplicate_key ON orders (duplicate_key) WHERE duplicate_key IS NOT NULL;
CREATE INDEX orders_flagged_duplicate ON orders (created_at DESC)
    WHERE cardinality(possible_duplicate_of) > 0;

-- The bytes, content-addressed: the same file uploaded twice is stored once. Kept in
-- PostgreSQL rather than on a filesystem because every intake replica must serve every
-- file (the services are stateless; a filesystem would need a volume shared by all
-- replicas), and because the bytes then commit or roll back with the attachment row: a
-- refused or failed upload leaves nothing behind, a committed row always has its bytes,
-- and one backup holds both. Chunks keep memory bounded: a file is written and read
-- 256 KiB at a time, never whole.
CREATE TABLE blobs (
    sha256     text        PRIMARY KEY CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    size       bigint      NOT NULL CHECK (size >= 0),
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE blob_chunks (
    sha256 text    NOT NULL REFERENCES blobs (sha256) ON DELETE CASCADE,
    seq    integer NOT NULL CHECK (seq >= 0),
    data   bytea   NOT NULL,
    PRIMARY KEY (sha256, seq)
);
-- PDFs, images and office files are compressed already: store out of line, uncompressed
ALTER TABLE blob_chunks ALTER COLUMN data SET STORAGE EXTERNAL;

CREATE TABLE attachments (
    id           uuid        PRIMARY KEY,
    order_id     uuid        NOT NULL REFERENCES orders (id) ON DELETE CASCADE,
    kind         text        NOT NULL CHECK (kind IN (
                     'requirements_spec', 'drawing', 'customer_confirmation', 'contract',
                     'other')),
    name         text        NOT NULL CHECK (length(name) BETWEEN 1 AND 300),
    content_type text        NOT NULL,
    size         bigint      NOT NULL CHECK (size > 0),
    sha256       text        NOT NULL REFERENCES blobs (sha256),
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX attachments_by_order ON attachments (order_id, created_at, id);
CREATE INDEX attachments_by_blob ON attachments (sha256);

-- Which files belong to which revision. The open revision's list changes with uploads and
-- deletions; a submitted revision's list is frozen with it, as the departments saw it.
CREATE TABLE revision_attachments (
    order_id      uuid    NOT NULL,
    revision      integer NOT NULL,
    attachment_id uuid    NOT NULL REFERENCES attachments (id),
    PRIMARY KEY (order_id, revision, attachment_id),
    FOREIGN KEY (order_id, revision) REFERENCES revisions (order_id, revision)
        ON DELETE CASCADE
);
CREATE INDEX revision_attachments_by_attachment ON revision_attachments (attachment_id);

CREATE FUNCTION revision_attachments_frozen() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    target_order    uuid;
    target_revision integer;
BEGIN
    IF TG_OP = 'INSERT' THEN
        target_order := NEW.order_id; target_revision := NEW.revision;
    ELSE
        target_order := OLD.order_id; target_revision := OLD.revision;
    END IF;
    IF EXISTS (SELECT 1 FROM revisions r
               WHERE r.order_id = target_order AND r.revision = target_revision
                 AND r.submitted_at IS NOT NULL) THEN
        RAISE EXCEPTION 'revision % of order % is submitted; its files cannot change',
            target_revision, target_order USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    RETURN CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
END $$;
CREATE TRIGGER revision_attachments_frozen BEFORE INSERT OR UPDATE OR DELETE
    ON revision_attachments FOR EACH ROW EXECUTE FUNCTION revision_attachments_frozen();

-- What intake itself did to an order (created, revised, a file added or removed); with
-- the consumed events (order_events) it makes the order's timeline.
CREATE TABLE order_activity (
    id          bigserial PRIMARY KEY,
    order_id    uuid        NOT NULL REFERENCES orders (id) ON DELETE CASCADE,
    type        text        NOT NULL,
    revision    integer,
    payload     jsonb       NOT NULL DEFAULT '{}',
    occurred_at timestamptz NOT NULL
);
CREATE INDEX order_activity_timeline ON order_activity (order_id, occurred_at, id);
