"""Drift -> retrain -> shadow -> promote (or reject), and rollback: the policy (``policy``), the
candidate and its shadow comparison (``candidate``), and the loop against Kafka (``loop``);
``loop``'s docstring tells the whole flow."""
