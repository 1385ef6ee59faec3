-- score_rejections: reviews a model version could not score (never silently dropped).
CREATE OR REPLACE VIEW score_rejections AS
SELECT * FROM stg_score_rejections;
