"""The wizard's quick scan of training data: how many examples, and about how many tokens.

The scanning itself lives in the engine (``engine/data_scan.py``, no Qt and no torch), beside the planner's count of
the tokens a run trains, so the app and ``distill plan`` read data by the same rules; this module gives the data page
the same names it always used. ``scan_data`` is a generator of ``(done, total, text)`` progress in bytes, run on a
worker thread (``gui.workers.start``).
"""
from __future__ import annotations

from ...engine.data_scan import (BATCH, BYTES_PER_TOKEN, PROGRESS_BYTES, ScanResult, load_chat, load_counter,
                                 record_text, scan_data)

__all__ = ["BATCH", "BYTES_PER_TOKEN", "PROGRESS_BYTES", "ScanResult", "load_chat", "load_counter", "record_text",
           "scan_data"]
