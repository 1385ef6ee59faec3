"""fbk_tasks: the pipeline's logic as plain typed functions, runnable without Airflow."""
