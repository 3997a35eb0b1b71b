"""Distillation losses: the divergences against formulas written here independently (with ``F.kl_div``), and the
chunked, checkpointed head + loss against the plain reference, in values, gradients and memory."""
from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional

from distill_studio.engine.train import losses as L  # noqa: E402

KINDS = ("forward-kl", "reverse-kl", "jsd")
f64 = torch.float64


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # The tensors here are small: a second intra-op thread only adds OpenMP spin-waiting, which on a busy 2-core
    # runner makes this file several times slower. Restored afterwards for other test modules.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def randn(*shape, seed=0, dtype=f64, scale=1.0):
    return torch.randn(*shape, generator=gen(seed), dtype=dtype) * scale


# --- independent formulas ---------------------------------------------------------------------------------------

def kl_rows(log_a, log_b):
    """KL(a || b) per row, as F.kl_div spells it: kl_div(input=log b, target=log a)."""
    return F.kl_div(log_b, log_a, log_target=True, reduction="none").sum(-1)


def formula(s, t, loss, beta=0.5, temp=1.0):
    log_q, log_p = F.log_softmax(s / temp, -1), F.log_softmax(t / temp, -1)
    if loss == "forward-kl":
        out = kl_rows(log_p, log_q)
    elif loss == "reverse-kl":
        out = kl_rows(log_q, log_p)
    else:  # the mixture in probability space, which float64 affords
        log_m = (beta * log_p.exp() + (1 - beta) * log_q.exp()).log()
        out = beta * kl_rows(log_p, log_m) + (1 - beta) * kl_rows(log_q, log_m)
    return out * temp**2


# --- token_kd_loss ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("loss,beta", [("forward-kl", 0.5), ("reverse-kl", 0.5), ("jsd", 0.0), ("jsd", 0.3),
                                       ("jsd", 0.5), ("jsd", 1.0)])
def test_identical_distributions_give_zero(loss, beta):
    s = randn(5, 17, scale=4.0)
    for temp in (0.5, 1.0, 3.0):
        assert torch.allclose(L.token_kd_loss(s, s.clone(), loss=loss, beta=beta, temperature=temp),
                              torch.zeros(5, dtype=f64), atol=1e-12)
        # and a shifted copy of the logits is the same distribution
        assert L.token_kd_loss(s, s + 7.0, loss=loss, beta=beta, temperature=temp).abs().max() < 1e-10


@pytest.mark.parametrize("loss", KINDS)
def test_divergences_are_positive_for_different_distributions(loss):
    s, t = randn(64, 11, seed=1, scale=3.0), randn(64, 11, seed=2, scale=3.0)
    out = L.token_kd_loss(s, t, loss=loss, beta=0.2)
    assert out.shape == (64,) and (out > 0).all()


@pytest.mark.parametrize("temp", [1.0, 2.0])
def test_jsd_swaps_beta_when_swapping_student_and_teacher(temp):
    s, t = randn(8, 13, seed=3, scale=2.0), randn(8, 13, seed=4, scale=2.0)
    jsd = lambda a, b, beta: L.token_kd_loss(a, b, loss="jsd", beta=beta, temperature=temp)  # noqa: E731
    assert torch.allclose(jsd(s, t, 0.5), jsd(t, s, 0.5), rtol=1e-12, atol=0)
    assert torch.allclose(jsd(s, t, 0.3), jsd(t, s, 0.7), rtol=1e-12, atol=0)
    assert not torch.allclose(jsd(s, t, 0.3), jsd(t, s, 0.3), rtol=1e-3)  # generally asymmetric


@pytest.mark.parametrize("loss,beta", [("forward-kl", 0.5), ("reverse-kl", 0.5), ("jsd", 0.5), ("jsd", 0.1),
                                       ("jsd", 0.9), ("jsd", 1e-3), ("jsd", 1 - 1e-3)])
def test_matches_kl_div_formulas(loss, beta):
    s, t = randn(9, 23, seed=5, scale=3.0), randn(9, 23, seed=6, scale=3.0)
    for temp in (1.0, 0.7, 2.0):
        got = L.token_kd_loss(s, t, loss=loss, beta=beta, temperature=temp)
        assert got.dtype == f64
        assert torch.allclose(got, formula(s, t, loss, beta, temp), rtol=1e-10, atol=1e-13)


def test_forward_kl_is_kl_div_times_t_squared():
    s, t = randn(6, 10, seed=7), randn(6, 10, seed=8)
    log_q, log_p = F.log_softmax(s / 2.0, -1), F.log_softmax(t / 2.0, -1)
    expected = F.kl_div(log_q, log_p, log_target=True, reduction="none").sum(-1) * 4.0
    assert torch.allclose(L.token_kd_loss(s, t, loss="forward-kl", temperature=2.0), expected, rtol=1e-12)


def test_jsd_end_points_are_exactly_forward_and_reverse_kl_and_the_limits_agree():
    s, t = randn(7, 19, seed=9, scale=2.0), randn(7, 19, seed=10, scale=2.0)
    fwd = L.token_kd_loss(s, t, loss="forward-kl")
    rev = L.token_kd_loss(s, t, loss="reverse-kl")
    assert torch.equal(L.token_kd_loss(s, t, loss="jsd", beta=0.0), fwd)
    assert torch.equal(L.token_kd_loss(s, t, loss="jsd", beta=1.0), rev)
    assert not torch.allclose(fwd, rev, rtol=1e-2)
    # Near the ends the mixture formula is used, and it approaches the end points as beta * KL(p||q) and
    # (1 - beta) * KL(q||p): the TRL end-point convention is a jump in scale, not in direction.
    eps = 1e-5
    assert torch.allclose(L.token_kd_loss(s, t, loss="jsd", beta=eps) / eps, fwd, rtol=1e-3)
    assert torch.allclose(L.token_kd_loss(s, t, loss="jsd", beta=1 - eps) / eps, rev, rtol=1e-3)


@pytest.mark.parametrize("loss,beta", [("forward-kl", 0.5), ("reverse-kl", 0.5), ("jsd", 0.5), ("jsd", 0.25)])
def test_gradients_match_numerical_and_independent_autograd(loss, beta):
    s, t = randn(3, 6, seed=11, scale=2.0).requires_grad_(), randn(3, 6, seed=12, scale=2.0).requires_grad_()
    f = lambda a, b: L.token_kd_loss(a, b, loss=loss, beta=beta, temperature=1.5)  # noqa: E731
    assert torch.autograd.gradcheck(f, (s, t))
    w = randn(3, seed=13)  # weights per row, so that a wrong row of the gradient shows
    got = torch.autograd.grad((f(s, t) * w).sum(), (s, t))
    want = torch.autograd.grad((formula(s, t, loss, beta, 1.5) * w).sum(), (s, t))
    for g, e in zip(got, want):
        assert torch.allclose(g, e, rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("loss", KINDS)
def test_minus_inf_logits_give_finite_loss_and_gradient(loss):
    s, t = randn(4, 9, seed=14).requires_grad_(), randn(4, 9, seed=15)
    masked = torch.zeros(9, dtype=torch.bool)
    masked[[2, 5]] = True  # a vocabulary entry masked out in both models
    s_inf = s.masked_fill(masked, -math.inf)
    out = L.token_kd_loss(s_inf, t.masked_fill(masked, -math.inf), loss=loss)
    (g,) = torch.autograd.grad(out.sum(), s)
    assert torch.isfinite(out).all() and torch.isfinite(g).all()
    assert torch.allclose(out, formula(s[:, ~masked], t[:, ~masked], loss), rtol=1e-10)
    assert (g[:, masked] == 0).all()


def test_low_precision_logits_are_upcast_to_fp32():
    s, t = randn(5, 300, seed=16, dtype=torch.float32), randn(5, 300, seed=17, dtype=torch.float32)
    sb, tb = s.bfloat16(), t.bfloat16()
    out = L.token_kd_loss(sb, tb, loss="jsd")
    assert out.dtype == torch.float32
    assert torch.allclose(out, formula(sb.float(), tb.float(), "jsd"), rtol=1e-5)


@pytest.mark.parametrize("kwargs,match", [({"loss": "kl"}, "loss must be"), ({"loss": "jsd", "beta": 1.5}, "beta"),
                                          ({"loss": "jsd", "temperature": 0.0}, "temperature")])
def test_bad_arguments_are_rejected(kwargs, match):
    s = randn(2, 3)
    with pytest.raises(ValueError, match=match):
        L.token_kd_loss(s, s, **kwargs)


# --- top-k ------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("loss", KINDS)
@pytest.mark.parametrize("temp", [1.0, 2.0])
def test_topk_with_k_equal_v_is_the_full_loss(loss, temp):
    s, t = randn(6, 12, seed=18, scale=2.0), randn(6, 12, seed=19, scale=2.0)
    lp, ids = F.log_softmax(t, -1).sort(-1, descending=True)  # all V ids, in a shuffled order
    got = L.topk_kd_loss(s, lp.float(), ids.int(), loss=loss, beta=0.3, temperature=temp)
    want = L.token_kd_loss(s, t, loss=loss, beta=0.3, temperature=temp)
    assert torch.allclose(got, want, rtol=1e-5, atol=1e-7)  # fp32 cache of the log-probs


def test_topk_forward_uses_full_student_and_reverse_renormalises_both():
    s, t = randn(5, 30, seed=20, scale=2.0), randn(5, 30, seed=21, scale=2.0)
    lp, ids = F.log_softmax(t, -1).topk(4, -1)
    log_p = F.log_softmax(lp / 2.0, -1)
    log_q_full = F.log_softmax(s / 2.0, -1).gather(-1, ids)
    log_q_renorm = F.log_softmax(s.gather(-1, ids) / 2.0, -1)
    fwd = L.topk_kd_loss(s, lp, ids, loss="forward-kl", temperature=2.0)
    rev = L.topk_kd_loss(s, lp, ids, loss="reverse-kl", temperature=2.0)
    assert torch.allclose(fwd, (log_p.exp() * (log_p - log_q_full)).sum(-1) * 4.0, rtol=1e-12)
    assert torch.allclose(rev, (log_q_renorm.exp() * (log_q_renorm - log_p)).sum(-1) * 4.0, rtol=1e-12)
    assert (fwd > 0).all()


@pytest.mark.parametrize("bad", [30, -1])
def test_topk_ids_outside_the_vocabulary_are_rejected(bad):
    s = randn(3, 30)
    lp, ids = F.log_softmax(randn(3, 30, seed=1), -1).topk(4, -1)
    ids[1, 2] = bad
    with pytest.raises(ValueError, match=r"teacher top-k ids must lie in \[0, 30\)"):
        L.topk_kd_loss(s, lp, ids, loss="forward-kl")


# --- chunked vs reference ---------------------------------------------------------------------------------------

B, T, H, HT, V = 3, 7, 8, 6, 37


def case(seed=0, vs=V, vt=V, dtype=f64):
    """A batch of B x T tokens with prompt and padding masked; teacher related to the student so top-1s overlap."""
    h = randn(B, T, H, seed=seed, dtype=dtype)
    w, bias = randn(vs, H, seed=seed + 1, dtype=dtype, scale=0.6), randn(vs, seed=seed + 2, dtype=dtype, scale=0.2)
    th = randn(B, T, HT, seed=seed + 3, dtype=dtype)
    tw = randn(vt, HT, seed=seed + 4, dtype=dtype, scale=0.6)
    labels = torch.randint(0, min(vs, vt), (B, T), generator=gen(seed + 5))
    labels[0, :3] = L.IGNORE_INDEX  # prompt
    labels[2, -2:] = L.IGNORE_INDEX  # padding
    return h, w, bias, th, tw, labels


def run(fn, h, w, bias, labels, kd_weight=0.6, **kw):
    h, w, bias = (x.detach().clone().requires_grad_() for x in (h, w, bias))
    sums = fn(h, w, labels, student_head_bias=bias, **kw)
    loss, kd_mean, ce_mean = L.combine(sums, kd_weight, sums.n_tokens)
    loss.backward()
    return sums, loss, (h.grad, w.grad, bias.grad)


def assert_same(a, b, rtol=1e-10):
    (sa, la, ga), (sb, lb, gb) = a, b
    assert (sa.n_tokens, sa.top1_agree, sa.has_kd) == (sb.n_tokens, sb.top1_agree, sb.has_kd)
    for x, y in [(sa.kd_sum, sb.kd_sum), (sa.ce_sum, sb.ce_sum), (la, lb), *zip(ga, gb)]:
        assert torch.allclose(x, y, rtol=rtol, atol=1e-12), (x, y)


@pytest.mark.parametrize("loss", KINDS)
def test_chunked_equals_reference_online(loss):
    h, w, bias, th, tw, labels = case()
    kw = dict(teacher_hidden=th, teacher_head_weight=tw, loss=loss, beta=0.3, temperature=1.7)
    ref = run(L.distill_loss_sums_reference, h, w, bias, labels, **kw)
    assert ref[0].n_tokens == B * T - 5 and ref[0].kd_sum > 0 and ref[0].ce_sum > 0
    for chunk in (1, 4, 5, 16, 1024):  # N = 16: sizes that divide it, that do not, and one above it
        assert_same(run(L.distill_loss_sums, h, w, bias, labels, chunk_size=chunk, **kw), ref)


@pytest.mark.parametrize("chunk", [3, 64])
def test_chunked_equals_reference_with_padded_heads_bias_and_softcap(chunk):
    # Student head padded to V+2 rows and the teacher's to V+9 (as Qwen's 151,936 and 152,064 rows share 151,665).
    h, w, bias, th, tw, labels = case(seed=30, vs=V + 2, vt=V + 9)
    tb = randn(V + 9, seed=31, scale=0.3)
    kw = dict(teacher_hidden=th, teacher_head_weight=tw, teacher_head_bias=tb, vocab_size=V, logit_softcap=1.5,
              loss="jsd", temperature=0.8)
    ref = run(L.distill_loss_sums_reference, h, w, bias, labels, **kw)
    assert_same(run(L.distill_loss_sums, h, w, bias, labels, chunk_size=chunk, **kw), ref)
    assert (ref[2][1][V:] == 0).all()  # the padding rows of the head get no gradient
    # without the slice the default is the smaller head (V + 2), which changes the softmax
    no_slice = run(L.distill_loss_sums, h, w, bias, labels, chunk_size=chunk, **{**kw, "vocab_size": None})
    assert not torch.allclose(no_slice[0].ce_sum, ref[0].ce_sum)
    # softcap is applied: without it, the result differs
    no_cap = run(L.distill_loss_sums, h, w, bias, labels, chunk_size=chunk, **{**kw, "logit_softcap": None})
    assert not torch.allclose(no_cap[0].kd_sum, ref[0].kd_sum)


@pytest.mark.parametrize("loss", KINDS)
def test_chunked_equals_reference_topk(loss):
    h, w, bias, th, tw, labels = case(seed=40, vs=V + 3)
    lp, ids = F.log_softmax(th @ tw.T, -1).topk(5, -1)
    lp, ids = lp.float(), ids.int()
    ids[labels == L.IGNORE_INDEX] = 10**6  # masked rows of a cache may hold anything
    kw = dict(teacher_topk=(lp, ids), vocab_size=V, loss=loss, beta=0.6, temperature=1.3)
    ref = run(L.distill_loss_sums_reference, h, w, bias, labels, **kw)
    assert ref[0].kd_sum > 0
    for chunk in (2, 7, 100):
        assert_same(run(L.distill_loss_sums, h, w, bias, labels, chunk_size=chunk, **kw), ref, rtol=1e-6)


def test_topk_ids_outside_the_sliced_vocabulary_are_rejected():
    h, w, bias, th, tw, labels = case(seed=50, vs=V + 3)
    lp, ids = F.log_softmax(th @ tw.T, -1).topk(5, -1)
    ids[1, 4, 0] = V + 1  # inside the padded head, outside the shared vocabulary
    for fn in (L.distill_loss_sums, L.distill_loss_sums_reference):
        with pytest.raises(ValueError, match=rf"teacher top-k ids must lie in \[0, {V}\)"):
            fn(h, w, labels, teacher_topk=(lp, ids), vocab_size=V)


def test_labels_outside_the_vocabulary_are_rejected():
    h, w, bias, th, tw, labels = case()
    labels[1, 1] = V
    with pytest.raises(ValueError, match="labels must lie in"):
        L.distill_loss_sums(h, w, labels)


def test_top1_agreement_counts_matching_argmaxes():
    h, w, bias, th, tw, labels = case(seed=60)
    same = L.distill_loss_sums(h, w, labels, teacher_hidden=h, teacher_head_weight=w, chunk_size=4)
    assert same.top1_agree == same.n_tokens and same.kd_sum.abs() < 1e-12
    other = L.distill_loss_sums(h, w, labels, teacher_hidden=th, teacher_head_weight=tw, chunk_size=4)
    mask = labels != L.IGNORE_INDEX
    want = ((h @ w.T).argmax(-1) == (th @ tw.T).argmax(-1))[mask].sum().item()
    assert other.top1_agree == want < other.n_tokens


def test_ce_only_and_compute_kd_false():
    h, w, bias, th, tw, labels = case(seed=70)
    mask = labels != L.IGNORE_INDEX
    ce = F.cross_entropy((h @ w.T + bias)[mask], labels[mask], reduction="sum")
    for kw in ({}, {"teacher_hidden": th, "teacher_head_weight": tw, "compute_kd": False}):
        sums, loss, _ = run(L.distill_loss_sums, h, w, bias, labels, kd_weight=0.9, chunk_size=5, **kw)
        assert not sums.has_kd and sums.kd_sum == 0 and sums.top1_agree == 0
        assert torch.allclose(sums.ce_sum, ce, rtol=1e-12)
        assert torch.allclose(loss, ce / mask.sum(), rtol=1e-12)  # kd_weight is ignored without a KD term


def test_combine_weights_and_normalises_by_the_global_count():
    h, w, bias, th, tw, labels = case(seed=80)
    sums = L.distill_loss_sums(h, w, labels, teacher_hidden=th, teacher_head_weight=tw)
    loss, kd_mean, ce_mean = L.combine(sums, 0.25, 100)
    assert torch.allclose(loss, (0.25 * sums.kd_sum + 0.75 * sums.ce_sum) / 100, rtol=1e-12)
    assert torch.allclose(kd_mean, sums.kd_sum / 100) and torch.allclose(ce_mean, sums.ce_sum / 100)
    assert not kd_mean.requires_grad and not ce_mean.requires_grad
    with pytest.raises(ValueError, match="n_tokens_global"):
        L.combine(sums, 0.25, sums.n_tokens - 1)


def test_no_grad_path_matches_the_checkpointed_one():
    h, w, bias, th, tw, labels = case(seed=90)
    kw = dict(teacher_hidden=th, teacher_head_weight=tw, loss="reverse-kl", chunk_size=4)
    with torch.no_grad():
        a = L.distill_loss_sums(h, w, labels, **kw)
    b = run(L.distill_loss_sums, h, w, bias * 0, labels, **kw)[0]
    assert torch.allclose(a.kd_sum, b.kd_sum) and torch.allclose(a.ce_sum, b.ce_sum)


# --- masking ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("garbage", [math.nan, 1e4])
def test_masked_rows_change_nothing(garbage):
    h, w, bias, th, tw, labels = case(seed=100)
    kw = dict(teacher_hidden=th, teacher_head_weight=tw, loss="jsd", chunk_size=3)
    base = run(L.distill_loss_sums, h, w, bias, labels, **kw)
    # Three more masked rows per sequence, with garbage hidden states in both models.
    pad = lambda x: torch.cat([x, torch.full((B, 3, x.shape[-1]), garbage, dtype=x.dtype)], 1)  # noqa: E731
    labels2 = torch.cat([labels, torch.full((B, 3), L.IGNORE_INDEX)], 1)
    padded = run(L.distill_loss_sums, pad(h), w, bias, labels2, **{**kw, "teacher_hidden": pad(th)})
    (s1, l1, (gh1, gw1, gb1)), (s2, l2, (gh2, gw2, gb2)) = base, padded
    assert (s1.n_tokens, s1.top1_agree) == (s2.n_tokens, s2.top1_agree)
    for x, y in [(s1.kd_sum, s2.kd_sum), (s1.ce_sum, s2.ce_sum), (l1, l2), (gw1, gw2), (gb1, gb2), (gh1, gh2[:, :T])]:
        assert torch.allclose(x, y, rtol=1e-12)
    assert (gh2[:, T:] == 0).all()
    if math.isfinite(garbage):  # the reference masks after the fact, so it needs finite garbage
        ref = run(L.distill_loss_sums_reference, pad(h), w, bias, labels2, **{**kw, "teacher_hidden": pad(th)})
        assert torch.allclose(ref[0].kd_sum, s1.kd_sum, rtol=1e-10)


@pytest.mark.parametrize("fn", [L.distill_loss_sums, L.distill_loss_sums_reference])
def test_all_masked_gives_zeros_that_still_backpropagate(fn):
    h, w, bias, th, tw, labels = case(seed=110)
    labels[:] = L.IGNORE_INDEX
    h, w, bias = (x.clone().requires_grad_() for x in (h, w, bias))
    sums = fn(h, w, labels, student_head_bias=bias, teacher_hidden=th, teacher_head_weight=tw)
    assert sums.n_tokens == 0 and sums.top1_agree == 0
    loss, kd_mean, ce_mean = L.combine(sums, 0.5, 0)
    assert loss == 0 and kd_mean == 0 and ce_mean == 0 and torch.isfinite(loss)
    assert loss.requires_grad  # so every DDP rank runs backward over the same parameters
    loss.backward()
    for p in (h, w, bias):
        assert p.grad is not None and (p.grad == 0).all()


# --- memory -----------------------------------------------------------------------------------------------------

MN, MV, MH, MCHUNK = 128, 16384, 64, 16


@pytest.fixture(scope="module")
def big():
    h = randn(MN, MH, seed=1, dtype=torch.float32)
    w = randn(MV, MH, seed=2, dtype=torch.float32, scale=0.1)
    th, tw = randn(MN, MH, seed=3, dtype=torch.float32), randn(MV, MH, seed=4, dtype=torch.float32, scale=0.1)
    labels = torch.randint(0, MV, (MN,), generator=gen(5))
    return h, w, th, tw, labels


def big_call(fn, big, **kw):
    h, w, th, tw, labels = big
    return fn(h, w, labels, teacher_hidden=th, teacher_head_weight=tw, loss="jsd", **kw)


def saved_bytes(make, inputs):
    """Bytes of the distinct storages autograd saves for backward, the inputs' own storages excluded."""
    storages = {}

    def pack(t):
        storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = make()
    for t in inputs:
        storages.pop(t.untyped_storage().data_ptr(), None)
    return sum(storages.values()), out


def test_chunked_saves_far_less_for_backward(big):
    h, w = big[0].clone().requires_grad_(), big[1].clone().requires_grad_()
    inputs = (h, w, *big[2:])
    ref, _ = saved_bytes(lambda: big_call(L.distill_loss_sums_reference, (h, w, *big[2:])), inputs)
    chunked, sums = saved_bytes(lambda: big_call(L.distill_loss_sums, (h, w, *big[2:]), chunk_size=MCHUNK), inputs)
    assert ref >= 2 * MN * MV * 4  # the measurement sees the reference's [N, V] fp32 tensors
    assert chunked < ref / 4, (chunked, ref)
    assert chunked < MN * MV * 4 / 8  # not even one full [N, V] tensor


def test_chunked_peak_memory_in_forward_and_backward_is_far_lower(big):
    profiler = pytest.importorskip("torch.profiler")

    def peak(fn, **kw):
        h, w = big[0].clone().requires_grad_(), big[1].clone().requires_grad_()

        def step():
            loss, _, _ = L.combine(big_call(fn, (h, w, *big[2:]), **kw), 0.5, MN)
            loss.backward()

        with profiler.profile(activities=[profiler.ProfilerActivity.CPU], profile_memory=True) as prof:
            step()
        try:
            events = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events()
                            if e.name() == "[memory]")
        except AttributeError:  # a private profiler API; the saved-tensor test above still holds
            pytest.skip("this torch's profiler does not expose memory events")
        cur = top = 0
        for _, nbytes in events:
            cur += nbytes
            top = max(top, cur)
        return top

    ref = peak(L.distill_loss_sums_reference)
    chunked = peak(L.distill_loss_sums, chunk_size=MCHUNK)
    assert ref >= 3 * MN * MV * 4
    assert chunked < ref / 4, (chunked, ref)


# --- the fused path: closed-form gradients in forward ------------------------------------------------------------
def run_fused(h, w, bias, labels, kd_weight=0.6, **kw):
    """The fused loss scaled as the loop scales it (1 / tokens), its gradients, and the reference's."""
    h, w, bias = (x.detach().clone().requires_grad_() for x in (h, w, bias))
    n = int((labels != L.IGNORE_INDEX).sum())
    out = L.fused_distill_loss(h, w, labels, student_head_bias=bias, kd_weight=kd_weight, scale=1.0 / max(n, 1), **kw)
    out.loss.backward()
    return out, out.loss, (h.grad, w.grad, bias.grad)


def assert_fused_same(fused, ref, rtol=1e-10):
    (f, lf, gf), (s, ls, gs) = fused, ref
    assert (f.n_tokens, f.has_kd) == (s.n_tokens, s.has_kd)
    assert torch.allclose(lf, ls, rtol=rtol, atol=1e-12), (lf, ls)
    assert torch.allclose(f.kd_sum, s.kd_sum, rtol=rtol, atol=1e-12)
    if f.ce_sum is not None:
        assert torch.allclose(f.ce_sum, s.ce_sum, rtol=rtol, atol=1e-12)
    for x, y in zip(gf, gs):
        assert torch.allclose(x, y, rtol=rtol, atol=1e-12), (x - y).abs().max()


@pytest.mark.parametrize("loss, beta", [("forward-kl", 0.5), ("reverse-kl", 0.5), ("jsd", 0.3), ("jsd", 0.0),
                                        ("jsd", 1.0)])
@pytest.mark.parametrize("kd_weight", [0.6, 1.0, 0.0])
def test_fused_equals_reference_online(loss, beta, kd_weight):
    h, w, bias, th, tw, labels = case()
    kw = dict(teacher_hidden=th, teacher_head_weight=tw, loss=loss, beta=beta, temperature=1.7)
    ref = run(L.distill_loss_sums_reference, h, w, bias, labels, kd_weight=kd_weight, **kw)
    for chunk in (1, 5, 16, 1024):
        assert_fused_same(run_fused(h, w, bias, labels, kd_weight=kd_weight, chunk_size=chunk, **kw), ref)


@pytest.mark.parametrize("loss", KINDS)
def test_fused_equals_reference_with_padded_heads_bias_softcap_and_topk(loss):
    h, w, bias, th, tw, labels = case(seed=3, vs=V + 3, vt=V + 5)
    labels = torch.where(labels == L.IGNORE_INDEX, labels, labels % V)
    kw = dict(teacher_hidden=th, teacher_head_weight=tw, loss=loss, beta=0.4, temperature=0.8, vocab_size=V,
              logit_softcap=3.0, teacher_head_bias=randn(V + 5, seed=9, dtype=f64))
    ref = run(L.distill_loss_sums_reference, h, w, bias, labels, **kw)
    assert_fused_same(run_fused(h, w, bias, labels, chunk_size=4, **kw), ref)
    h, w, bias, th, tw, labels = case(seed=4)
    k = 6
    lp = torch.log_softmax(randn(B, T, k, seed=11, dtype=f64), -1)
    ids = torch.stack([torch.randperm(V, generator=gen(100 + i))[:k] for i in range(B * T)]).reshape(B, T, k)
    kw = dict(teacher_topk=(lp, ids), loss=loss, beta=0.4, temperature=1.3)
    ref = run(L.distill_loss_sums_reference, h, w, bias, labels, **kw)
    assert_fused_same(run_fused(h, w, bias, labels, chunk_size=5, **kw), ref)


def test_fused_metrics_only_when_asked_and_the_no_grad_path_agrees():
    h, w, bias, th, tw, labels = case(seed=5)
    kw = dict(teacher_hidden=th, teacher_head_weight=tw, loss="jsd", beta=0.5, temperature=1.0)
    lean = L.fused_distill_loss(h, w, labels, kd_weight=1.0, need_ce=False, **kw)
    assert lean.ce_sum is None and lean.top1_agree is None  # nothing the loss does not need
    full = L.fused_distill_loss(h, w, labels, kd_weight=1.0, need_ce=True, need_top1=True, **kw)
    ref = L.distill_loss_sums(h, w, labels, **kw)
    assert full.top1_agree == ref.top1_agree and torch.allclose(full.ce_sum, ref.ce_sum)
    with torch.no_grad():
        again = L.fused_distill_loss(h, w, labels, kd_weight=1.0, **kw)
    assert torch.allclose(again.loss, lean.loss.detach()) and torch.allclose(again.kd_sum, ref.kd_sum)


def test_fused_all_masked_gives_zeros_that_still_reach_every_parameter():
    h, w, bias, th, tw, labels = case()
    labels = torch.full_like(labels, L.IGNORE_INDEX)
    f, loss, grads = run_fused(h, w, bias, labels, teacher_hidden=th, teacher_head_weight=tw)
    assert f.n_tokens == 0 and loss.item() == 0.0
    assert all(g is not None and not g.any() for g in grads)


def test_fused_keeps_nothing_vocabulary_wide_for_backward():
    h, w, bias, th, tw, labels = case()
    h, w = h.clone().requires_grad_(), w.clone().requires_grad_()
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        L.fused_distill_loss(h, w, labels, teacher_hidden=th, teacher_head_weight=tw).loss.backward()
    assert saved == []  # the gradients were worked out in forward: autograd keeps no activation of the loss


@pytest.mark.parametrize("hidden_dtype", [torch.float32, torch.bfloat16])
def test_fused_under_bf16_autocast_matches_fp32_and_keeps_the_weights_dtype(hidden_dtype):
    """As on a GPU: fp32 master weights, bf16 autocast; the hidden states may arrive in either dtype."""
    h, w, bias, th, tw, labels = case(dtype=torch.float32)
    kw = dict(teacher_hidden=th, teacher_head_weight=tw, loss="jsd", beta=0.5, temperature=1.0)
    ref = run_fused(h, w, bias, labels, **kw)
    hb = h.to(hidden_dtype).detach().requires_grad_()
    wb, bb = w.detach().clone().requires_grad_(), bias.detach().clone().requires_grad_()
    n = int((labels != L.IGNORE_INDEX).sum())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = L.fused_distill_loss(hb, wb, labels, student_head_bias=bb, kd_weight=0.6, scale=1.0 / n, **kw)
    out.loss.backward()
    assert wb.grad.dtype == torch.float32 and hb.grad.dtype == hidden_dtype
    for got, want in zip((hb.grad, wb.grad, bb.grad), ref[2]):
        assert torch.allclose(got.float(), want, rtol=0.1, atol=2e-3), (got.float() - want).abs().max()
