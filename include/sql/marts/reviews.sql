-- reviews: one row per review_id (the most recently ingested copy when a review was re-ingested).
-- A review_id lives in one partition (ingestion quarantines an id another partition holds), so
-- the window runs per (ds, review_id): a filter on ds then prunes the Parquet files read.
CREATE OR REPLACE VIEW reviews AS
SELECT * EXCLUDE (rn)
FROM (
    SELECT *, row_number() OVER (PARTITION BY ds, review_id ORDER BY ingested_at DESC, source_file, row_number) AS rn
    FROM stg_reviews
)
WHERE rn = 1;
