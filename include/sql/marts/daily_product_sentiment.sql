-- daily_product_sentiment: per day (ingestion partition) and product, the served model's label
-- mix. A product carries its one name from `products` every day (a source may name it in several
-- languages). Reviews without a product id (sources that have none) are grouped by category
-- instead of into one row for all of them.
CREATE OR REPLACE VIEW daily_product_sentiment AS
SELECT
    ds                                                   AS day,
    product_id,
    coalesce(any_value(p.product_name), any_value(s.product_name)) AS product_name,
    coalesce(any_value(p.product_category), any_value(s.product_category)) AS product_category,
    count(*)                                             AS n_reviews,
    count(*) FILTER (WHERE predicted_label = 'negative') AS n_negative,
    count(*) FILTER (WHERE predicted_label = 'neutral')  AS n_neutral,
    count(*) FILTER (WHERE predicted_label = 'positive') AS n_positive,
    round(count(*) FILTER (WHERE predicted_label = 'negative') / count(*), 4) AS share_negative,
    round(avg(rating), 3)                                AS avg_rating,
    round(avg(confidence), 4)                            AS avg_confidence,
    any_value(model_version)                             AS model_version
FROM review_scores AS s
LEFT JOIN products AS p USING (product_id)
GROUP BY ds, product_id, CASE WHEN product_id IS NULL THEN s.product_category END;
