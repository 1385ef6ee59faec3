-- stg_ingest_ledger: one row per source file and ingestion run.
CREATE OR REPLACE VIEW stg_ingest_ledger AS
SELECT
    CAST(run_id AS VARCHAR)             AS run_id,
    CAST(ds AS DATE)                    AS ds,
    CAST(source AS VARCHAR)             AS source,
    CAST(source_file AS VARCHAR)        AS source_file,
    CAST(file_sha256 AS VARCHAR)        AS file_sha256,
    CAST(status AS VARCHAR)             AS status,
    CAST(rows_read AS BIGINT)           AS rows_read,
    CAST(rows_curated AS BIGINT)        AS rows_curated,
    CAST(rows_quarantined AS BIGINT)    AS rows_quarantined,
    CAST(rows_duplicate AS BIGINT)      AS rows_duplicate,
    CAST(pii_email AS BIGINT)           AS pii_email,
    CAST(pii_phone AS BIGINT)           AS pii_phone,
    CAST(pii_cn_id AS BIGINT)           AS pii_cn_id,
    CAST(pii_card AS BIGINT)            AS pii_card,
    CAST(pii_ip AS BIGINT)              AS pii_ip,
    CAST(pii_url AS BIGINT)             AS pii_url,
    CAST(pii_qq AS BIGINT)              AS pii_qq,           -- NULL in ledger rows written before QQ was a type
    CAST(pii_booking AS BIGINT)         AS pii_booking,      -- the same for booking references
    CAST(error AS VARCHAR)              AS error,
    CAST(started_at AS TIMESTAMPTZ)     AS started_at,
    CAST(finished_at AS TIMESTAMPTZ)    AS finished_at
FROM {{ ledger }};
