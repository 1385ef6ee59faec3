-- reviews: one row per review_id (the most recently ingested copy when a review was re-ingested).
CREATE OR REPLACE VIEW reviews AS
SELECT * EXCLUDE (rn)
FROM (
    SELECT *, row_number() OVER (PARTITION BY review_id ORDER BY ingested_at DESC, ds DESC, source_file, row_number) AS rn
    FROM stg_reviews
)
WHERE rn = 1;
