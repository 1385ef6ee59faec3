-- products: one row per product id, with one name for it (its most frequent, then alphabetical):
-- sources name a product in several languages ("Wireless Earbuds Pro", "无线蓝牙耳机 Pro"), and a
-- name picked per day would split one product's trend across names. Reviews without a product
-- id are not here.
CREATE OR REPLACE VIEW products AS
WITH names AS (
    SELECT product_id, product_name, count(*) AS n
    FROM reviews
    WHERE product_id IS NOT NULL AND product_name IS NOT NULL
    GROUP BY ALL
),
categories AS (
    SELECT product_id, product_category, count(*) AS n
    FROM reviews
    WHERE product_id IS NOT NULL AND product_category IS NOT NULL
    GROUP BY ALL
)
SELECT
    p.product_id,
    (SELECT product_name FROM names n WHERE n.product_id = p.product_id ORDER BY n.n DESC, product_name LIMIT 1) AS product_name,
    (SELECT list(product_name ORDER BY n DESC, product_name) FROM names n WHERE n.product_id = p.product_id) AS product_names,
    (SELECT product_category FROM categories c WHERE c.product_id = p.product_id ORDER BY c.n DESC, product_category LIMIT 1) AS product_category,
    p.n_reviews,
    p.first_day,
    p.last_day
FROM (
    SELECT product_id, count(*) AS n_reviews, min(ds) AS first_day, max(ds) AS last_day
    FROM reviews
    WHERE product_id IS NOT NULL
    GROUP BY product_id
) AS p;
