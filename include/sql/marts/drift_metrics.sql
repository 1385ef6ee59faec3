-- drift_metrics: what the drift stage writes to <data>/drift/ds=D/ (one row per signal x scope
-- and a decision row); a typed empty view with the same columns until the first measurement.
CREATE OR REPLACE VIEW drift_metrics AS
SELECT * REPLACE (CAST(ds AS DATE) AS ds)
FROM {{ drift }};
