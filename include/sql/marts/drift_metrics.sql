-- drift_metrics: whatever the drift stage writes under <data>/drift/ (a typed empty view until then).
CREATE OR REPLACE VIEW drift_metrics AS
SELECT * FROM {{ drift }};
