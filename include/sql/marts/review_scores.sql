-- review_scores: the serving model's score for each review, with the review's attributes: the
-- version the last full scoring run used (the champion, except in the run during which the alias
-- moved). One row per review: while a forced rescore writes new files beside the version's older
-- ones (removed when the run finishes, kept if it fails), the latest score wins (a rescore's
-- scored_at is when it ran). Scores sit under their review's partition, so the join and the
-- window run per ds and a filter on ds prunes both sides.
CREATE OR REPLACE VIEW review_scores AS
SELECT
    r.review_id,
    r.ds,
    r.product_id,
    r.product_name,
    r.product_category,
    r.rating,
    r.source_label,
    r.language,
    r.source,
    r.created_at,
    CAST(timezone('UTC', r.created_at) AS DATE) AS created_date,  -- the review's UTC day, whatever the session's time zone
    r.review_text,
    s.model_name,
    s.model_version,
    s.predicted_label,
    s.confidence,
    s.prob_negative,
    s.prob_neutral,
    s.prob_positive,
    s.scored_at,
    s.score_run_id
FROM stg_scores AS s
JOIN model_versions AS m
  ON m.model_name = s.model_name AND m.model_version = s.model_version AND m.is_served
JOIN reviews AS r
  ON r.ds = s.ds AND r.review_id = s.review_id
QUALIFY row_number() OVER (PARTITION BY s.ds, s.review_id ORDER BY s.scored_at DESC, s.score_run_id DESC) = 1;
