-- score_coverage: per night, how many of its reviews the served version scored, rejected or has
-- not reached yet. The sentiment marts count scored reviews only; this says what they cover (a
-- new champion part-way through history, a version rejecting much of a night).
CREATE OR REPLACE VIEW score_coverage AS
WITH served AS (
    SELECT model_name, model_version FROM model_versions WHERE is_served
),
scored AS (
    SELECT ds, count(*) AS n FROM review_scores GROUP BY ds
),
rejected AS (
    SELECT j.ds, count(DISTINCT j.review_id) AS n
    FROM stg_score_rejections AS j
    JOIN served AS v ON v.model_name = j.model_name AND v.model_version = j.model_version
    JOIN reviews AS r ON r.ds = j.ds AND r.review_id = j.review_id
    WHERE NOT EXISTS (SELECT 1 FROM review_scores AS s WHERE s.ds = j.ds AND s.review_id = j.review_id)
    GROUP BY j.ds
),
curated AS (
    SELECT ds, count(*) AS n FROM reviews GROUP BY ds
)
SELECT
    c.ds,
    (SELECT any_value(model_version) FROM served)                         AS served_version,
    c.n                                                                   AS n_curated,
    coalesce(s.n, 0)                                                      AS n_scored,
    coalesce(j.n, 0)                                                      AS n_rejected,
    c.n - coalesce(s.n, 0) - coalesce(j.n, 0)                             AS n_unscored,
    round(coalesce(s.n, 0) / c.n, 4)                                      AS share_scored
FROM curated AS c
LEFT JOIN scored AS s USING (ds)
LEFT JOIN rejected AS j USING (ds);
