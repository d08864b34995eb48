"""Coordinator side: orchestration — the API and the CLI, the coordinator, the executor choice and batching, slots,
stores and the study's bookkeeping. Never imports the TensorFlow side (`fitgap.training`): executors are processes.
"""
