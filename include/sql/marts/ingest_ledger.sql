-- ingest_ledger: every file ingestion saw, per run, with its outcome and PII redaction counts.
CREATE OR REPLACE VIEW ingest_ledger AS
SELECT
    *,
    pii_email + pii_phone + pii_cn_id + pii_card + pii_ip + pii_url AS pii_total,
    date_diff('millisecond', started_at, finished_at) / 1000.0       AS duration_s
FROM stg_ingest_ledger;
