-- ingest_ledger: every file ingestion saw, per run, with its outcome and PII redaction counts.
-- A re-run of a night writes rows again for the same files: sum counts over `is_latest` rows
-- (each landed file's last attempt for its night) to count what is stored.
CREATE OR REPLACE VIEW ingest_ledger AS
SELECT
    *,
    row_number() OVER (PARTITION BY ds, source_file ORDER BY finished_at DESC, run_id DESC) = 1 AS is_latest,
    pii_email + pii_phone + pii_cn_id + pii_card + pii_ip + pii_url + coalesce(pii_qq, 0) + coalesce(pii_booking, 0) AS pii_total,
    date_diff('millisecond', started_at, finished_at) / 1000.0       AS duration_s
FROM stg_ingest_ledger;
