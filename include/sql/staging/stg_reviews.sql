-- stg_reviews: curated reviews as written by ingestion, typed. Rename/cast only.
CREATE OR REPLACE VIEW stg_reviews AS
SELECT
    CAST(review_id AS VARCHAR)          AS review_id,
    CAST(product_id AS VARCHAR)         AS product_id,
    CAST(product_name AS VARCHAR)       AS product_name,
    CAST(product_category AS VARCHAR)   AS product_category,
    CAST(rating AS TINYINT)             AS rating,
    CAST(title AS VARCHAR)              AS title,
    CAST(text AS VARCHAR)               AS review_text,
    CAST(language AS VARCHAR)           AS language,
    CAST(created_at AS TIMESTAMPTZ)     AS created_at,
    CAST(source AS VARCHAR)             AS source,
    CAST(source_file AS VARCHAR)        AS source_file,
    CAST(ingested_at AS TIMESTAMPTZ)    AS ingested_at,
    CAST(label AS VARCHAR)              AS source_label,
    CAST(row_number AS BIGINT)          AS row_number,
    CAST(ds AS DATE)                    AS ds
FROM {{ curated }};
