"""Caption-quality metrics."""
