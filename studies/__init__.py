"""Orchestration: the only package that imports sweeps and tracking.

`from studies import launch` is the Python entry point. The API is loaded lazily so that executor processes, which
import `studies.executor`, do not pay for Optuna and MLflow.
"""

__all__ = ["Interrupted", "Summary", "best", "launch", "status", "studies", "validate"]


def __getattr__(name):
    if name in __all__:
        from studies import api

        return getattr(api, name)
    raise AttributeError(name)
