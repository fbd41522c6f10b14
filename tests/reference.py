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
