-- model_versions: the registry as of the newest snapshot (taken at each scoring run when it
-- changed); is_champion marks the version the scoring alias points at.
CREATE OR REPLACE VIEW model_versions AS
SELECT
    model_name,
    model_version,
    mlflow_run_id,
    aliases,
    list_contains(aliases, {{ champion_alias }}) AS is_champion,
    tags_json,
    status,
    artifact_source,
    created_at,
    snapshot_at
FROM stg_model_versions
WHERE snapshot_at = (SELECT max(snapshot_at) FROM stg_model_versions);
