"""Tracking side: where finished trials go and how they are read back — MLflow runs, the results database, its
queries and reports, the diagnosis and plots. Never imports studies, training or TensorFlow; it may import sweeps
(the vocabulary of names), which knows nothing of storage.
"""
