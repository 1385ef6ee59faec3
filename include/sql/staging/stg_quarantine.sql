-- stg_quarantine: rows ingestion refused, every canonical column as text plus the reasons.
CREATE OR REPLACE VIEW stg_quarantine AS
SELECT
    CAST(review_id AS VARCHAR)          AS review_id,
    CAST(product_id AS VARCHAR)         AS product_id,
    CAST(product_category AS VARCHAR)   AS product_category,
    CAST(rating AS VARCHAR)             AS rating_raw,
    CAST(text AS VARCHAR)               AS review_text,
    CAST(language AS VARCHAR)           AS language,
    CAST(source AS VARCHAR)             AS source,
    CAST(reason AS VARCHAR)             AS reason,
    CAST(raw_record AS VARCHAR)         AS raw_record,
    CAST(source_file AS VARCHAR)        AS source_file,
    TRY_CAST(row_number AS BIGINT)      AS row_number,
    CAST(ds AS DATE)                    AS ds
FROM {{ quarantine }};
