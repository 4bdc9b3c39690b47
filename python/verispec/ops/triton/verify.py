"""Triton acceptance (verify): the same walk as ``verispec.ops.verify.verify_reference``, in four launches.

1. ``_row_stats_kernel``, one program per verification row, reads the target logits once: argmax
   (lowest id on ties), max, ``Z = sum exp2((l - max) * scale)`` (``scale = log2(e)/T``) over the tokens
   passing the top-k/top-p threshold and, for ``typical``, the entropy, with an online softmax. This pass
   is the floor every acceptance sampler pays.
2. ``_walk_kernel``, one program per request, walks the tree with scalar work: ``p(x)`` of a candidate
   is one logit gather plus the row stats. With draft probabilities a rejected sibling that has a next
   sibling costs one pass (``max(p_res - q, 0)`` into a double-buffered scratch row); the last rejected
   sibling's subtraction is left to the race. It leaves the final row per request.
3. ``_race_kernel``, ``B x splits`` programs, draws the correction / bonus token from the final row by an
   exponential race (``argmax_v log2 p(v) - log2 E_v``): one pass, no prefix sum, spread over the GPU.
   Each program starts from the key of the row's argmax; blocks whose best possible key (``E >= E_min``,
   so ``key <= z2 + 33``) cannot beat the best so far skip their random numbers. The result is unchanged.
4. ``_finalize_kernel`` reduces the splits and writes the outputs and their -1 padding.

Random numbers: ``tl.philox`` with key = seed and counter ``(index, stream, offset_lo, offset_hi)``, the
same Philox4x32-10 as ``verispec/ops/_philox.py`` (tested bit-equal in the interpreter).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from verispec.ops import _launch, _philox
from verispec.ops.verify import VerifyProblem, VerifyResult, log2_scale

STREAM_ACCEPT: tl.constexpr = tl.constexpr(_philox.STREAM_ACCEPT)
STREAM_RESIDUAL: tl.constexpr = tl.constexpr(_philox.STREAM_RESIDUAL)


@triton.jit
def _row_stats_kernel(
    L, stride_l, V, SCALE, THR, MAX, SUM, ENT, ARGMAX,
    HAS_THR: tl.constexpr, NEED_SUM: tl.constexpr, NEED_ENT: tl.constexpr, BLOCK: tl.constexpr,
):
    r = tl.program_id(0)
    base = L + r.to(tl.int64) * stride_l
    offs = tl.arange(0, BLOCK)
    c = tl.load(SCALE + r)
    thr = -float("inf")
    if HAS_THR:
        thr = tl.load(THR + r)
    m = -float("inf")
    a = 0
    z_sum = 0.0
    s1 = 0.0
    for v0 in range(0, V, BLOCK):
        idx = v0 + offs
        ok = idx < V
        x = tl.load(base + idx, mask=ok, other=-float("inf")).to(tl.float32)
        bm = tl.max(x, 0)
        barg = tl.min(tl.where(x == bm, idx, 2147483647), 0)
        # Blocks ascend, so a strictly larger block max keeps the lowest id on ties.
        a = tl.where(bm > m, barg, a)
        m_new = tl.maximum(m, bm)
        if NEED_SUM:
            # -inf logits (HF processors' masks) carry no mass; a block of them must not make 0 * inf.
            keep = ok & (x >= thr) & (x > -float("inf"))
            z = tl.where(keep, (x - m_new) * c, 0.0)
            w = tl.where(keep, tl.exp2(z), 0.0)
            # z_sum > 0 implies a finite m; otherwise (m - m_new) may be -inf - -inf.
            alpha = tl.where(z_sum > 0, tl.exp2((m - m_new) * c), 0.0)
            if NEED_ENT:
                # sum w*z relative to the running max: moving the max by d scales w by 2^-d, shifts z by -d.
                # Masks at finfo.min overflow z and d to -inf/inf where w or alpha is 0: those terms are 0.
                d = tl.where(alpha > 0, (m_new - m) * c, 0.0)
                s1 = tl.where(alpha > 0, alpha * (s1 - d * z_sum), 0.0) + tl.sum(tl.where(w > 0, w * z, 0.0), 0)
            z_sum = z_sum * alpha + tl.sum(w, 0)
        m = m_new
    tl.store(ARGMAX + r, a)
    tl.store(MAX + r, m)
    if NEED_SUM:
        tl.store(SUM + r, z_sum)
    if NEED_ENT:
        # nats: H = ln Z - ln 2 * sum(w * z2) / Z
        tl.store(ENT + r, tl.log(z_sum) - 0.6931471805599453 * s1 / z_sum)


@triton.jit
def _uniform(bits):
    # (0, 1], exact in float32: ((bits >> 8) + 1) * 2^-24
    return ((bits >> 8) + 1).to(tl.float32) * 5.9604644775390625e-08


@triton.jit
def _exponential(bits):
    # -log1p(-s), s = (bits + 0.5) * 2^-32 clamped below 1; log1p in Kahan's form as in _philox.py
    s = (bits.to(tl.float32) + 0.5) * 2.3283064365386963e-10
    s = tl.minimum(s, 0.99999994)
    y = 1.0 - s
    den = y - 1.0
    safe = tl.where(den == 0, 1.0, den)
    # div_rn: Triton's `/` compiles to div.full.f32 (up to 2 ulp); torch and CUDA divide exactly.
    l1p = tl.where(den == 0, -s, tl.div_rn(tl.log(y) * (-s), safe))
    return -l1p


# flags of the walk's per-request state [B, 5] = (final row, flags, depth, last token | scratch slot,
# 1 + flat node of a pending q subtraction or 0), plus the residual's sum in a float [B]
GREEDY_DONE: tl.constexpr = tl.constexpr(1)
IN_SCRATCH: tl.constexpr = tl.constexpr(2)
EXCLUDE_CHILDREN: tl.constexpr = tl.constexpr(4)


@triton.jit
def _walk_kernel(
    L, stride_l, V, TOK, CU_NODES, CU_ROWS, FIRST, NEXT,
    TEMP, SCALE, THR, MAX, SUM, ENT, ARGMAX,
    Q, stride_q, SCRATCH, SEED, OFFSET, U_HOOK,
    ACC_OUT, TOK_OUT, STATE, STATE_F, D, eps, delta,
    MODE: tl.constexpr, HAS_Q: tl.constexpr, HAS_THR: tl.constexpr, HOOK: tl.constexpr, BLOCK: tl.constexpr,
):
    b = tl.program_id(0)
    b64 = b.to(tl.int64)
    row0 = tl.load(CU_ROWS + b)
    n0 = tl.load(CU_NODES + b)
    temp = 0.0
    if MODE != 0:
        temp = tl.load(TEMP + b)
    greedy = temp == 0
    sampling = temp != 0
    c = tl.load(SCALE + b)
    seed = tl.load(SEED + b)
    off = tl.load(OFFSET + b)
    off_lo = (off & 0xFFFFFFFF).to(tl.uint32)
    off_hi = ((off >> 32) & 0xFFFFFFFF).to(tl.uint32)
    offs = tl.arange(0, BLOCK)
    scratch_row = SCRATCH + b64 * 2 * V

    cur = row0 * 0
    cand = tl.load(FIRST + row0)
    depth = row0 * 0
    mass = 0.0  # deterministic drafts: target mass of the distinct siblings rejected so far
    scr = row0 * 0  # 1: the residual lives in scratch slot `slot`, with sum s_res
    slot = row0 * 0
    s_res = 1.0
    lazy = row0 * 0  # 1 + flat node whose q the race subtracts (last sibling rejected), 0 = none
    while cand >= 0:
        node = cand - 1
        x = tl.load(TOK + n0 + node)
        row = row0 + cur
        # Defined on every path so the compiled kernel sees one type per variable.
        m = 0.0
        zs = 1.0
        p_row = 0.0
        px = 0.0
        if greedy:
            ok = x == tl.load(ARGMAX + row)
        else:
            m = tl.load(MAX + row)
            zs = tl.load(SUM + row)
            lx = tl.load(L + row.to(tl.int64) * stride_l + x).to(tl.float32)
            keep = True
            if HAS_THR:
                keep = lx >= tl.load(THR + row)
            p_row = tl.where(keep, tl.exp2((lx - m) * c) / zs, 0.0)
            if MODE == 2:
                bar = tl.minimum(eps, delta * tl.exp(-tl.load(ENT + row)))
                ok = p_row > bar
            else:
                if HAS_Q:
                    qx = tl.load(Q + (n0 + node).to(tl.int64) * stride_q + x).to(tl.float32)
                    if scr != 0:
                        px = tl.load(scratch_row + slot * V + x) / s_res
                    else:
                        px = p_row
                else:
                    qx = 1.0
                    # A token equal to an earlier (rejected) sibling has no residual mass left.
                    dup = 0
                    ch = tl.load(FIRST + row)
                    while ch < cand:
                        dup = tl.where(tl.load(TOK + n0 + ch - 1) == x, 1, dup)
                        ch = tl.load(NEXT + row0 + ch)
                    px = tl.where(dup != 0, 0.0, p_row / (1.0 - mass))
                if HOOK:
                    u = tl.load(U_HOOK + n0 + node)
                else:
                    z32 = node.to(tl.uint32) * 0
                    u0, u1, u2, u3 = tl.philox(seed, (node // 4).to(tl.uint32), z32 + STREAM_ACCEPT, off_lo, off_hi)
                    ln = node % 4
                    u = _uniform(tl.where(ln == 0, u0, tl.where(ln == 1, u1, tl.where(ln == 2, u2, u3))))
                ok = (px > 0) & (u * qx <= px)
        if ok:
            tl.store(ACC_OUT + b64 * D + depth, node)
            tl.store(TOK_OUT + b64 * (D + 1) + depth, x)
            depth += 1
            cur = cand
            cand = tl.load(FIRST + row0 + cur)
            mass = 0.0
            scr = scr * 0
            s_res = 1.0
        else:
            if MODE == 1:  # noqa: SIM102  (constexpr test, then a runtime one: kept apart for the compiler)
                if sampling:
                    if HAS_Q:
                        if tl.load(NEXT + row0 + cand) < 0:
                            # Last sibling: the race applies max(p_res - q, 0) on the fly, in parallel.
                            lazy = n0 + node + 1
                        else:
                            # residual <- max(residual - q, 0) into the other scratch slot
                            new_slot = 1 - slot
                            q_row = Q + (n0 + node).to(tl.int64) * stride_q
                            l_row = L + row.to(tl.int64) * stride_l
                            acc = 0.0
                            for v0 in range(0, V, BLOCK):
                                idx = v0 + offs
                                okv = idx < V
                                if scr != 0:
                                    pv = tl.load(scratch_row + slot * V + idx, mask=okv, other=0.0) / s_res
                                else:
                                    lv = tl.load(l_row + idx, mask=okv, other=-float("inf")).to(tl.float32)
                                    kv = okv
                                    if HAS_THR:
                                        kv = kv & (lv >= tl.load(THR + row))
                                    pv = tl.where(kv, tl.exp2((lv - m) * c) / zs, 0.0)
                                qv = tl.load(q_row + idx, mask=okv, other=0.0).to(tl.float32)
                                w = tl.maximum(pv - qv, 0.0)
                                tl.store(scratch_row + new_slot * V + idx, w, mask=okv)
                                acc += tl.sum(w, 0)
                            # Other threads read single scratch entries next (px above): order every store
                            # before them explicitly, not through the reduction's internal barrier.
                            tl.debug_barrier()
                            # No residual mass (rounding only): keep the previous residual, as the reference.
                            if acc > 0:
                                if scr == 0:
                                    scr = scr + 1
                                slot = new_slot
                                s_res = acc
                    else:
                        mass = tl.where(px > 0, mass + p_row, mass)
            cand = tl.load(NEXT + row0 + cand)

    row = row0 + cur
    flags = row0 * 0
    last = slot
    if greedy:
        flags = flags + GREEDY_DONE
        last = tl.load(ARGMAX + row)
    if scr != 0:
        flags = flags + IN_SCRATCH
    if MODE == 1 and not HAS_Q:
        flags = flags + EXCLUDE_CHILDREN
    tl.store(STATE + b64 * 5 + 0, row)
    tl.store(STATE + b64 * 5 + 1, flags)
    tl.store(STATE + b64 * 5 + 2, depth)
    tl.store(STATE + b64 * 5 + 3, last)
    tl.store(STATE + b64 * 5 + 4, lazy)
    tl.store(STATE_F + b, s_res)


@triton.jit
def _race_kernel(
    L, stride_l, V, TOK, CU_NODES, CU_ROWS, FIRST, NEXT, SCALE, THR, MAX, SUM, ARGMAX,
    Q, stride_q, SCRATCH, SEED, OFFSET, E_HOOK, STATE, STATE_F, PART_KEY, PART_IDX, S,
    HAS_THR: tl.constexpr, HAS_Q: tl.constexpr, HOOK: tl.constexpr, CHUNK: tl.constexpr, BLOCK: tl.constexpr,
):
    b = tl.program_id(0)
    s = tl.program_id(1)
    b64 = b.to(tl.int64)
    flags = tl.load(STATE + b64 * 5 + 1)
    # best: the draw; best2: with a pending q subtraction, the draw from the residual before it, used
    # only if the subtraction leaves no mass (rounding), as the reference keeps the previous residual.
    best = -float("inf")
    best_i = 2147483647
    best2 = -float("inf")
    best2_i = 2147483647
    if (flags & GREEDY_DONE) == 0:
        row = tl.load(STATE + b64 * 5 + 0)
        slot = tl.load(STATE + b64 * 5 + 3)
        lazy = tl.load(STATE + b64 * 5 + 4)
        s_res = tl.load(STATE_F + b)
        row0 = tl.load(CU_ROWS + b)
        n0 = tl.load(CU_NODES + b)
        c = tl.load(SCALE + b)
        m = tl.load(MAX + row)
        zs = tl.load(SUM + row)
        seed = tl.load(SEED + b)
        off = tl.load(OFFSET + b)
        off_lo = (off & 0xFFFFFFFF).to(tl.uint32)
        off_hi = ((off >> 32) & 0xFFFFFFFF).to(tl.uint32)
        in_scratch = (flags & IN_SCRATCH) != 0
        exclude = (flags & EXCLUDE_CHILDREN) != 0
        l_row = L + row.to(tl.int64) * stride_l
        scratch_row = SCRATCH + b64 * 2 * V + slot * V
        q_row = Q + (lazy - 1).to(tl.int64) * stride_q
        offs = tl.arange(0, BLOCK)
        z32 = offs.to(tl.uint32) * 0
        if ((flags & IN_SCRATCH) == 0) & (lazy == 0):
            # Seed with the row's argmax when it is a candidate: blocks that cannot beat it are skipped.
            a = tl.load(ARGMAX + row)
            la_raw = tl.load(l_row + a).to(tl.float32)
            la = (la_raw - m) * c  # the same float ops as the block loop (0: a holds the max)
            cand_a = True
            if HAS_THR:
                cand_a = la_raw >= tl.load(THR + row)
            if exclude:
                ch = tl.load(FIRST + row)
                while ch >= 0:
                    cand_a = cand_a & (tl.load(TOK + n0 + ch - 1) != a)
                    ch = tl.load(NEXT + row0 + ch)
            if cand_a:
                if HOOK:
                    ea = tl.load(E_HOOK + b64 * V + a)
                else:
                    za = a.to(tl.uint32) * 0
                    a0, a1, a2, a3 = tl.philox(seed, (a // 4).to(tl.uint32), za + STREAM_RESIDUAL, off_lo, off_hi)
                    lane_a = a % 4
                    ea = _exponential(tl.where(lane_a == 0, a0, tl.where(lane_a == 1, a1, tl.where(lane_a == 2, a2, a3))))
                best = la - tl.log2(ea)
                best_i = a
        for v0 in range(s * CHUNK, s * CHUNK + CHUNK, BLOCK):
            idx = v0 + offs
            okv = idx < V
            # log2 of the current residual (up to a constant) and, for a pending subtraction, its probabilities
            if in_scratch:
                w = tl.load(scratch_row + idx, mask=okv, other=0.0)
                logp = tl.where(w > 0, tl.log2(w), -float("inf"))
                pv = w / s_res
            else:
                lv = tl.load(l_row + idx, mask=okv, other=-float("inf")).to(tl.float32)
                kv = okv
                if HAS_THR:
                    kv = kv & (lv >= tl.load(THR + row))
                if exclude:
                    ch = tl.load(FIRST + row)
                    while ch >= 0:
                        kv = kv & (idx != tl.load(TOK + n0 + ch - 1))
                        ch = tl.load(NEXT + row0 + ch)
                logp = tl.where(kv, (lv - m) * c, -float("inf"))
                pv = tl.where(kv, tl.exp2((lv - m) * c) / zs, 0.0)
            # E >= E_min = 1.16e-10, so no key exceeds logp + 33: skip blocks that cannot win.
            if (lazy != 0) | (tl.max(logp, 0) + 33.0 >= best):
                if HOOK:
                    e = tl.load(E_HOOK + b64 * V + idx, mask=okv, other=1.0)
                else:
                    w0, w1, w2, w3 = tl.philox(seed, (idx // 4).to(tl.uint32), z32 + STREAM_RESIDUAL, z32 + off_lo, z32 + off_hi)
                    lane = idx % 4
                    bits = tl.where(lane == 0, w0, tl.where(lane == 1, w1, tl.where(lane == 2, w2, w3)))
                    e = _exponential(bits)
                log2e = tl.log2(e)
                key = tl.where(logp > -float("inf"), logp - log2e, -float("inf"))
                if HAS_Q:  # noqa: SIM102  (constexpr test, then a runtime one)
                    if lazy != 0:
                        # backup = the residual before the subtraction; the draw = max(p_res - q, 0)
                        bk2 = tl.max(key, 0)
                        bi2 = tl.min(tl.where(key == bk2, idx, 2147483647), 0)
                        best2_i = tl.where((bk2 > best2) | ((bk2 == best2) & (bi2 < best2_i)), bi2, best2_i)
                        best2 = tl.maximum(best2, bk2)
                        qv = tl.load(q_row + idx, mask=okv, other=0.0).to(tl.float32)
                        wl = tl.maximum(pv - qv, 0.0)
                        key = tl.where(wl > 0, tl.log2(wl) - log2e, -float("inf"))
                bk = tl.max(key, 0)
                bi = tl.min(tl.where(key == bk, idx, 2147483647), 0)
                best_i = tl.where((bk > best) | ((bk == best) & (bi < best_i)), bi, best_i)
                best = tl.maximum(best, bk)
    base = b64 * 2 * S
    tl.store(PART_KEY + base + s, best)
    tl.store(PART_IDX + base + s, best_i)
    tl.store(PART_KEY + base + S + s, best2)
    tl.store(PART_IDX + base + S + s, best2_i)


@triton.jit
def _finalize_kernel(
    ARGMAX, STATE, PART_KEY, PART_IDX, S, ACC_OUT, NUM_OUT, TOK_OUT, D,
    BLOCK_S: tl.constexpr, BLOCK_D: tl.constexpr,
):
    b = tl.program_id(0)
    b64 = b.to(tl.int64)
    row = tl.load(STATE + b64 * 5 + 0)
    flags = tl.load(STATE + b64 * 5 + 1)
    depth = tl.load(STATE + b64 * 5 + 2)
    last = tl.load(STATE + b64 * 5 + 3)
    if (flags & GREEDY_DONE) == 0:
        j = tl.arange(0, BLOCK_S)
        base = b64 * 2 * S
        k = tl.load(PART_KEY + base + j, mask=j < S, other=-float("inf"))
        i = tl.load(PART_IDX + base + j, mask=j < S, other=2147483647)
        bk = tl.max(k, 0)
        bi = tl.min(tl.where(k == bk, i, 2147483647), 0)
        k2 = tl.load(PART_KEY + base + S + j, mask=j < S, other=-float("inf"))
        i2 = tl.load(PART_IDX + base + S + j, mask=j < S, other=2147483647)
        bk2 = tl.max(k2, 0)
        bi2 = tl.min(tl.where(k2 == bk2, i2, 2147483647), 0)
        last = tl.where(bk > -float("inf"), bi, tl.where(bk2 > -float("inf"), bi2, tl.load(ARGMAX + row)))
    tl.store(TOK_OUT + b64 * (D + 1) + depth, last)
    tl.store(NUM_OUT + b, depth)
    for d0 in range(0, D + 1, BLOCK_D):
        j = d0 + tl.arange(0, BLOCK_D)
        tl.store(ACC_OUT + b64 * D + j, tl.full([BLOCK_D], -1, tl.int32), mask=(j >= depth) & (j < D))
        tl.store(TOK_OUT + b64 * (D + 1) + j, tl.full([BLOCK_D], -1, tl.int32), mask=(j > depth) & (j <= D))


_MODES = {"greedy": 0, "exact": 1, "typical": 2}
# Test hook: force the race's chunk size (None: 4096 ids on a GPU, the whole row on CPU).
_RACE_CHUNK = None


@_launch.launches_on(lambda problem: problem.logits.device)
def verify_triton(problem: VerifyProblem) -> VerifyResult:
    """The Triton backend of `verispec.verify`: row stats, the tree walk (one program per request), the
    residual / bonus race split over the vocabulary, and the outputs. No host synchronisation."""
    pr = problem
    buf = pr.buffers
    logits = pr.logits
    dev = logits.device
    R, V = logits.shape
    B, D = pr.B, pr.max_depth
    mode = _MODES[pr.mode]
    f32, i32 = torch.float32, torch.int32
    scale = log2_scale(pr.temperature).contiguous()
    scale_rows = scale[buf.request.long()].contiguous()
    row_max = _launch.workspace(R, dtype=f32, device=dev)
    row_sum = _launch.workspace(R, dtype=f32, device=dev)
    row_ent = _launch.workspace(R, dtype=f32, device=dev)
    row_arg = _launch.workspace(R, dtype=i32, device=dev)
    has_thr = pr.threshold is not None
    thr = pr.threshold.contiguous() if has_thr else row_max
    if R:
        _row_stats_kernel[(R,)](
            logits, logits.stride(0), V, scale_rows, thr, row_max, row_sum, row_ent, row_arg,
            HAS_THR=has_thr, NEED_SUM=mode != 0, NEED_ENT=mode == 2, BLOCK=min(2048, triton.next_power_of_2(V)),
        )
    has_q = pr.draft_probs is not None
    q = pr.draft_probs.contiguous() if has_q else row_max
    scratch = torch.empty(B * 2 * V if has_q else 1, dtype=f32, device=dev)
    hook = pr.uniforms is not None
    u_hook = pr.uniforms.accept.float().contiguous() if hook else row_max
    e_hook = pr.uniforms.exponential.float().contiguous() if hook else row_max
    acc = _launch.workspace(B, D, dtype=i32, device=dev)
    num = _launch.workspace(B, dtype=i32, device=dev)
    tok = _launch.workspace(B, D + 1, dtype=i32, device=dev)
    state = _launch.workspace(B, 5, dtype=i32, device=dev)
    state_f = _launch.workspace(B, dtype=f32, device=dev)
    seed, offset = pr.seed.contiguous(), pr.offset.contiguous()
    block = min(1024, triton.next_power_of_2(V))
    _walk_kernel[(B,)](
        logits, logits.stride(0), V, pr.tokens, pr.cu_nodes, buf.cu_rows, buf.first_child, buf.next_sibling,
        pr.temperature.contiguous(), scale, thr, row_max, row_sum, row_ent, row_arg,
        q, q.stride(0) if has_q else 0, scratch, seed, offset, u_hook,
        acc, tok, state, state_f, D, pr.typical_epsilon, pr.typical_delta,
        MODE=mode, HAS_Q=has_q, HAS_THR=has_thr, HOOK=hook, BLOCK=block,
    )
    # Race splits: enough programs to fill a GPU (a chunk of 4096 ids each), one per request on CPU.
    chunk = max(block, 4096) if dev.type == "cuda" else max(block, triton.next_power_of_2(V))
    if _RACE_CHUNK is not None:  # tests: the GPU's split race, in the interpreter
        chunk = max(block, _RACE_CHUNK)
    S = triton.cdiv(V, chunk)
    part_key = _launch.workspace(B, 2, S, dtype=f32, device=dev)
    part_idx = _launch.workspace(B, 2, S, dtype=i32, device=dev)
    if mode != 0:
        _race_kernel[(B, S)](
            logits, logits.stride(0), V, pr.tokens, pr.cu_nodes, buf.cu_rows, buf.first_child, buf.next_sibling,
            scale, thr, row_max, row_sum, row_arg, q, q.stride(0) if has_q else 0, scratch, seed, offset, e_hook,
            state, state_f, part_key, part_idx, S,
            HAS_THR=has_thr, HAS_Q=has_q, HOOK=hook, CHUNK=chunk, BLOCK=block,
        )
    _finalize_kernel[(B,)](
        row_arg, state, part_key, part_idx, S, acc, num, tok, D,
        BLOCK_S=triton.next_power_of_2(S), BLOCK_D=min(128, triton.next_power_of_2(D + 1)),
    )
    return VerifyResult(acc, num, tok)
