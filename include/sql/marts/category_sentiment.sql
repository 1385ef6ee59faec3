-- category_sentiment: per product category (all days), the champion's label mix.
CREATE OR REPLACE VIEW category_sentiment AS
SELECT
    coalesce(product_category, '(none)')                 AS product_category,
    count(*)                                             AS n_reviews,
    count(DISTINCT product_id)                           AS n_products,
    count(*) FILTER (WHERE predicted_label = 'negative') AS n_negative,
    count(*) FILTER (WHERE predicted_label = 'neutral')  AS n_neutral,
    count(*) FILTER (WHERE predicted_label = 'positive') AS n_positive,
    round(count(*) FILTER (WHERE predicted_label = 'negative') / count(*), 4) AS share_negative,
    round(avg(rating), 3)                                AS avg_rating,
    min(ds)                                              AS first_day,
    max(ds)                                              AS last_day
FROM review_scores
GROUP BY 1;
