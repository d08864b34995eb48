"""Spec language (pure Python, both sides): the sweep spec, its search space, pruners and vocabulary. Knows nothing
of storage or TensorFlow."""
