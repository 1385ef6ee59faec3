-- model_versions: the registry as of the newest snapshot (taken at each scoring run when it
-- changed); is_champion marks the version the scoring alias points at, is_served the version
-- whose scores review_scores shows (the last scoring run's; the champion's once it has scored).
CREATE OR REPLACE VIEW model_versions AS
SELECT
    model_name,
    model_version,
    mlflow_run_id,
    aliases,
    list_contains(aliases, {{ champion_alias }}) AS is_champion,
    coalesce(model_version = served_version, list_contains(aliases, {{ champion_alias }})) AS is_served,
    json_extract_string(tags_json, '$."fbk.candidate"')                               AS candidate,
    json_extract_string(tags_json, '$."fbk.gate.verdict"')                            AS gate_verdict,
    json_extract_string(tags_json, '$."fbk.gate.reason"')                             AS gate_reason,
    TRY_CAST(json_extract_string(tags_json, '$."fbk.gate.candidate_f1"') AS DOUBLE)   AS golden_macro_f1,
    TRY_CAST(json_extract_string(tags_json, '$."fbk.gate.champion_f1"') AS DOUBLE)    AS champion_macro_f1_at_gate,
    TRY_CAST(json_extract_string(tags_json, '$."fbk.gate.at"') AS TIMESTAMPTZ)        AS gate_at,
    tags_json,
    status,
    artifact_source,
    created_at,
    snapshot_at
FROM stg_model_versions
WHERE snapshot_at = (SELECT max(snapshot_at) FROM stg_model_versions);
