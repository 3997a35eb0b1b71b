"""The run monitor: live charts and run state for training runs."""
