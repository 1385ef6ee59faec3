-- stg_model_versions: snapshot of the MLflow registry taken at each scoring run.
CREATE OR REPLACE VIEW stg_model_versions AS
SELECT
    CAST(model_name AS VARCHAR)         AS model_name,
    CAST(version AS BIGINT)             AS model_version,
    CAST(run_id AS VARCHAR)             AS mlflow_run_id,
    CAST(aliases AS VARCHAR[])          AS aliases,
    CAST(tags AS VARCHAR)               AS tags_json,
    CAST(status AS VARCHAR)             AS status,
    CAST(source AS VARCHAR)             AS artifact_source,
    CAST(created_at AS TIMESTAMPTZ)     AS created_at,
    CAST(served_version AS BIGINT)      AS served_version,
    CAST(snapshot_at AS TIMESTAMPTZ)    AS snapshot_at
FROM {{ model_versions }};
