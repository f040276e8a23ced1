"""Cross-framework parity suite (JAX backend vs PyTorch reference); ``checks`` is shared with ``run.py parity``."""
