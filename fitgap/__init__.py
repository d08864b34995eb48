"""fitgap: hyperparameter sweeps for TensorFlow that show how regularization trades overfitting against accuracy.

`from fitgap import launch` is the Python entry point (`fitgap.studies.api`); it is loaded on first use, so that an
executor process, which imports only `fitgap.training`, never pays for Optuna and MLflow. This package also holds
what every side shares: the error family (`fitgap.errors`) and the channel to child processes (`fitgap.channel`).
"""

__all__ = ["Interrupted", "RunOptions", "Summary", "answer", "best", "create", "delete", "launch", "path", "report",
           "rerun", "status", "stop", "studies", "trials", "validate", "worker"]


def __getattr__(name):
    if name in __all__:
        from fitgap.studies import api

        return getattr(api, name)
    raise AttributeError(name)
