"""The planner view: the estimator's options for a plan, drawn as cost versus time."""
