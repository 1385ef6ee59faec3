-- stg_score_rejections: reviews a model version could not score, with the reason.
CREATE OR REPLACE VIEW stg_score_rejections AS
SELECT
    CAST(review_id AS VARCHAR)          AS review_id,
    CAST(model_name AS VARCHAR)         AS model_name,
    CAST(model_version AS BIGINT)       AS model_version,
    CAST(reason AS VARCHAR)             AS reason,
    CAST(detail AS VARCHAR)             AS detail,
    CAST(scored_at AS TIMESTAMPTZ)      AS scored_at,
    CAST(run_id AS VARCHAR)             AS score_run_id,
    CAST(ds AS DATE)                    AS ds
FROM {{ score_rejections }};
