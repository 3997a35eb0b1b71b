"""Azure Machine Learning: sign-in (``client``), capacity and quota (``capacity``), the job (``job``), its
submission and control (``jobs``), and the watcher that turns a job into a local run folder (``watch``).
``distill azure …`` is in ``cli``. Nothing here is imported by the planner or the app at start-up."""
