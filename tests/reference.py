"""An independent NumPy implementation written literally from docs/METHOD.md §1-4 (float64).

Terms are evaluated as the paper writes them, n×n products included; the element-wise reading
of F5–F8 entry by entry, with explicit loops over (j, k).
"""

import numpy as np

BETA = 10.0


def softplus(z):
    return np.logaddexp(0.0, BETA * z) / BETA


def softmax(z):
    e = np.exp(z - z.max())
    return e / e.sum()


def forward(W, x):
    ys, zs = [x], []
    for i, w in enumerate(W):
        z = w @ ys[-1]
        zs.append(z)
        ys.append(softmax(z) if i == len(W) - 1 else softplus(z))
    return ys, zs


def errors(W, B, ys, label, feedback):
    L = len(W)
    Bf = W if feedback == "bp" else B
    e = [None] * (L + 1)
    onehot = np.zeros_like(ys[-1])
    onehot[label] = 1.0
    e[L] = ys[-1] - onehot
    for l in range(L - 1, -1, -1):
        e[l] = (Bf[l].T @ e[l + 1]) * (1.0 - np.exp(-BETA * ys[l]))
    return e


def term_elementwise(r, W, pre, post, e_pre, e_post):
    """F5–F8 in the element-wise (local) reading: entry (j, k) from post_j, e_post_j, pre_k,
    e_pre_k and W_jk only."""
    F = np.zeros_like(W)
    for j in range(W.shape[0]):
        for k in range(W.shape[1]):
            if r == 5:
                F[j, k] = -e_post[j] * post[j] * pre[k]
            elif r == 6:
                F[j, k] = -(post[j] ** 2) * W[j, k] * e_pre[k] ** 2
            elif r == 7:
                F[j, k] = -e_post[j] * post[j] * W[j, k] * e_pre[k] * pre[k]
            elif r == 8:
                F[j, k] = -post[j] * e_post[j] * W[j, k] * pre[k] * e_pre[k]
            else:
                raise ValueError(r)
    return F


def term(r, W, pre, post, e_pre, e_post, reading="matrix"):
    if reading == "elementwise" and r in (5, 6, 7, 8):
        return term_elementwise(r, W, pre, post, e_pre, e_post)
    if reading not in ("matrix", "elementwise"):
        raise ValueError(reading)
    one = np.ones_like(post)
    if r == 0:
        return -np.outer(e_post, pre)
    if r == 1:
        return -np.outer(post, e_pre)
    if r == 2:
        return -np.outer(e_post, e_pre)
    if r == 3:
        return -W
    if r == 4:
        return -np.outer(one, e_pre)
    if r == 5:
        return -np.outer(e_post, one) @ np.outer(post, pre)  # -e_post 1ᵀ post preᵀ
    if r == 6:
        return -np.outer(post, post) @ W @ np.outer(e_pre, e_pre)  # -post postᵀ W e_pre e_preᵀ
    if r == 7:
        return -np.outer(e_post, post) @ W @ np.outer(e_pre, pre)  # -e_post postᵀ W e_pre preᵀ
    if r == 8:
        return -np.outer(post, pre) @ W.T @ np.outer(e_post, e_pre)  # -post preᵀ Wᵀ e_post e_preᵀ
    if r == 9:
        return np.outer(post, pre) - np.outer(post, post) @ W
    raise ValueError(r)


def online_step(theta, layer_terms, terms, W, B, x, label, feedback, reading="matrix", extra=None):
    """One online step; ``extra`` maps a term id beyond the paper's ten to a function
    (W, pre, post, e_pre, e_post) -> dense matrix (a user's term, written in the test)."""
    ys, _ = forward(W, x)
    e = errors(W, B, ys, label, feedback)
    new = []
    for i, w in enumerate(W):
        dw = np.zeros_like(w)
        for r in layer_terms[i]:
            f = (extra or {}).get(r) or (lambda *a, r=r: term(r, *a, reading=reading))
            dw += theta[terms.index(r)] * f(w, ys[i], ys[i + 1], e[i], e[i + 1])
        new.append(w + dw)
    return new


def query_loss(W, xq, yq):
    losses, correct = [], []
    for x, y in zip(xq, yq):
        _, zs = forward(W, x)
        z = zs[-1]
        logp = z - z.max() - np.log(np.exp(z - z.max()).sum())
        losses.append(-logp[y])
        correct.append(np.argmax(z) == y)
    return float(np.mean(losses)), float(np.mean(correct))


# ----------------------------------------------------------------------------- feedback modes (METHOD.md §9)
# Written from the formulas in plastic_jax/feedback.py's module docstring, one example at a time.

STATEFUL = ("kp", "plastic")


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def mode_errors(W, B, ys, label, feedback, phi=None):
    """e_0 … e_L of one example under any feedback mode. B: B_1 … B_L (for ``sign`` the random
    R_ℓ), then for ``dfa``/``routing`` D_0 … D_{L−2}; D_{L−1} is B_L. phi: routing's φ (L − 1,)."""
    L = len(W)
    onehot = np.zeros_like(ys[-1])
    onehot[label] = 1.0
    e = [None] * (L + 1)
    e[L] = ys[-1] - onehot
    for l in range(L - 1, -1, -1):
        if feedback == "bp":
            M = W[l]
        elif feedback == "sign":
            M = np.sign(W[l]) * np.abs(B[l])
        elif feedback in ("fa", "kp", "plastic", "dfa", "routing"):
            M = B[l]
        else:
            raise ValueError(feedback)
        layerwise = M.T @ e[l + 1]  # B_{l+1}ᵀ e_{l+1} (B[l] is the 1-based B_{l+1})
        if feedback in ("dfa", "routing"):
            D = B[L + l] if l < L - 1 else B[L - 1]  # D_l, and D_{L-1} = B_L
            direct = D.T @ e[L]
        if feedback == "dfa":
            h = direct
        elif feedback == "routing" and l < L - 1:
            g = sigmoid(phi[l])
            h = g * layerwise + (1.0 - g) * direct
        else:
            h = layerwise
        e[l] = h * (1.0 - np.exp(-BETA * ys[l]))
    return e


def kp_term(r, W, B, pre, post, e_pre, e_post, reading="matrix"):
    """Term r as it enters Kolen–Pollack's update of B: the part of the term that is W itself
    times something element-wise (F3 = −W; F6–F8 in the element-wise reading, W_jk times a
    product of vectors) is read with B in W's place; every other term (outer products of
    vectors, W inside a matrix product as in F9 and the matrix reading of F6–F8) is W's own."""
    if r == 3 or (reading == "elementwise" and r in (6, 7, 8)):
        return term(r, B, pre, post, e_pre, e_post, reading=reading)
    return term(r, W, pre, post, e_pre, e_post, reading=reading)


def mode_state_step(rows, layer_terms, terms, W, B, x, label, feedback, fparams=None, reading="matrix"):
    """One online step of W and the feedback state B: (new W, new B) as lists.

    rows[i]: the coefficients weight layer i applies, indexed like ``terms`` (Θ itself for a
    shared rule, its i-th row per layer). fparams: Θ^B = (θ_kp, θ_decay, θ_err) for
    ``plastic``, φ for ``routing``. kp: B_ℓ + Σ_r θ_r F^r with F3's and the Hadamard terms' W read
    as B (``kp_term``); plastic: B + θ_kp (KP's B − B) − θ_decay B − θ_err e_post preᵀ."""
    ys, _ = forward(W, x)
    e = mode_errors(W, B, ys, label, feedback, fparams if feedback == "routing" else None)
    L = len(W)
    new_W, new_B = [], []
    for i in range(L):
        args = (ys[i], ys[i + 1], e[i], e[i + 1])
        dW = np.zeros_like(W[i])
        dB = np.zeros_like(W[i])
        for r in layer_terms[i]:
            th = rows[i][terms.index(r)]
            dW += th * term(r, W[i], *args, reading=reading)
            dB += th * kp_term(r, W[i], B[i], *args, reading=reading)
        new_W.append(W[i] + dW)
        if feedback == "kp":
            new_B.append(B[i] + dB)
        elif feedback == "plastic":
            k_kp, k_decay, k_err = fparams
            kp_B = B[i] + dB
            new_B.append(B[i] + k_kp * (kp_B - B[i]) - k_decay * B[i] - k_err * np.outer(e[i + 1], ys[i]))
    if feedback not in STATEFUL:
        return new_W, list(B)
    return new_W, new_B + list(B[L:])
