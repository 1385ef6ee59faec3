-- quarantine_summary: quarantined rows per day, source and single reason (a row with two
-- reasons counts once under each; n_rows counts distinct quarantined rows).
CREATE OR REPLACE VIEW quarantine_summary AS
WITH exploded AS (
    SELECT ds, source, source_file, row_number, trim(unnest(string_split(coalesce(reason, 'unknown'), ';'))) AS reason
    FROM stg_quarantine
)
SELECT
    ds,
    source,
    reason,
    count(*)                                      AS n_rows,
    count(DISTINCT source_file)                   AS n_files
FROM exploded
WHERE reason <> ''
GROUP BY ds, source, reason;
