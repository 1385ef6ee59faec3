-- stg_scores: every model version's scores (one row per review and model version).
CREATE OR REPLACE VIEW stg_scores AS
SELECT
    CAST(review_id AS VARCHAR)          AS review_id,
    CAST(model_name AS VARCHAR)         AS model_name,
    CAST(model_version AS BIGINT)       AS model_version,
    CAST(label AS VARCHAR)              AS predicted_label,
    CAST(confidence AS DOUBLE)          AS confidence,
    CAST(prob_negative AS DOUBLE)       AS prob_negative,
    CAST(prob_neutral AS DOUBLE)        AS prob_neutral,
    CAST(prob_positive AS DOUBLE)       AS prob_positive,
    CAST(scored_at AS TIMESTAMPTZ)      AS scored_at,
    CAST(run_id AS VARCHAR)             AS score_run_id,
    CAST(ds AS DATE)                    AS ds
FROM {{ scores }};
