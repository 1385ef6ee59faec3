-- daily_product_sentiment: per day (ingestion partition) and product, the champion's label mix.
-- Reviews without a product id (sources that have none) are grouped by category instead of
-- into one row for all of them.
CREATE OR REPLACE VIEW daily_product_sentiment AS
SELECT
    ds                                                   AS day,
    product_id,
    any_value(product_name)                              AS product_name,
    any_value(product_category)                          AS product_category,
    count(*)                                             AS n_reviews,
    count(*) FILTER (WHERE predicted_label = 'negative') AS n_negative,
    count(*) FILTER (WHERE predicted_label = 'neutral')  AS n_neutral,
    count(*) FILTER (WHERE predicted_label = 'positive') AS n_positive,
    round(count(*) FILTER (WHERE predicted_label = 'negative') / count(*), 4) AS share_negative,
    round(avg(rating), 3)                                AS avg_rating,
    round(avg(confidence), 4)                            AS avg_confidence,
    any_value(model_version)                             AS model_version
FROM review_scores
GROUP BY ds, product_id, CASE WHEN product_id IS NULL THEN product_category END;
