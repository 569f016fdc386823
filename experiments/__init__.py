"""Entry points and the machinery around training: loops, logging, checkpoints."""
