"""The remaining time, one computation for the engine's progress line and the app's monitor: steady across
evaluations and checkpoints, right about the time they add, with a range, and a resume starts afresh."""
from __future__ import annotations

import pytest

from distill_studio.engine.runs.eta import Eta, clock


def simulate(total=100, step_s=1.0, eval_every=10, eval_s=5.0, log_every=1, jitter=0.0):
    """(step, wall time, step seconds) of a run whose evaluations take ``eval_s`` every ``eval_every`` steps."""
    t, out = 0.0, []
    for s in range(1, total + 1):
        d = step_s * (1 + (jitter if s % 2 else -jitter))
        t += d
        if s % log_every == 0:
            out.append((s, t, d))
        if eval_every and s % eval_every == 0:
            t += eval_s
    return out, t


def test_the_eta_is_steady_across_evaluations_and_right_about_their_cost():
    events, end = simulate()
    eta = Eta(100, eval_every=10)
    estimates = []
    for step, t, d in events:
        eta.add(step, t, d)
        left = eta.remaining()
        if step >= 15:
            estimates.append((step, t, left[0]))
    for (s0, t0, e0), (s1, t1, e1) in zip(estimates, estimates[1:]):
        # from one step to the next the estimate moves by the time that passed, never jumps
        assert abs((e0 - e1) - (t1 - t0)) <= 0.05 * (t1 - t0) + 1e-6
    for step, t, e in estimates:
        # evaluations included: 100 s of steps and 50 s of evaluations (after steps 10, 20, ... 100)
        assert t + e == pytest.approx(end, rel=0.02)


def test_steps_not_logged_are_not_taken_for_pauses():
    every, end = simulate(eval_every=0, log_every=1)
    sparse, _ = simulate(eval_every=0, log_every=5)
    a, b = Eta(100), Eta(100)
    for step, t, d in every:
        a.add(step, t, d)
    for step, t, d in sparse:
        b.add(step, t, d)
    assert b.remaining(50)[0] == pytest.approx(a.remaining(50)[0], rel=0.01) == pytest.approx(50.0, rel=0.01)


def test_the_range_brackets_the_estimate_and_a_resume_starts_again():
    events, _ = simulate(eval_every=0, jitter=0.3)
    eta = Eta(100)
    for step, t, d in events[:30]:
        eta.add(step, t, d)
    mid, low, high = eta.remaining()
    assert low < mid < high
    eta.restart()
    assert eta.remaining() is None
    eta.add(31, 1000.0, 4.0)
    assert eta.remaining()[0] == pytest.approx(69 * 4.0)
    assert clock(3725) == "1:02:05" and clock(65) == "1:05"
