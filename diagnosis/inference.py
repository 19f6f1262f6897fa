"""The only bridge from diagnosis into ml/ (TensorFlow is imported lazily, in workers)."""
