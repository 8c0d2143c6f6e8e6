"""Training: losses (pure functions) and, later, DeepSpeed trainer actors."""
