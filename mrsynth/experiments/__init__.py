"""Studies built from whole trainings and evaluations (cross-validation); above ``training`` and
``evaluation`` in the import order, below ``commands``."""
