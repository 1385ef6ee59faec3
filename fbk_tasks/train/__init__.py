"""Training stage: data assembly, golden set, candidates, evaluation, MLflow registry and the gate.

Modules, by capability:

- ``data``: curated partitions + human corrections -> labelled frame, golden set, train/dev split.
- ``baseline``: TF-IDF + logistic regression candidate.
- ``transformer``: fine-tuning loop and batched prediction for ``AutoModelForSequenceClassification``.
- ``pretrain``: WordPiece tokenizer + small BERT masked-LM domain pre-training.
- ``evaluate``: metrics, calibration, slices, confusion matrix.
- ``pyfunc``: the MLflow ``PythonModel`` the scoring stage loads.
- ``registry``: experiments, run logging, idempotent registration, aliases.
- ``gate``: the promotion gate, manual promote and rollback.
- ``verify``: fresh-process reload check (``python -m fbk_tasks.train.verify``).
- ``pipeline``: the steps the DAG and the CLI both call.
"""
