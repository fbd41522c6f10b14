"""An independent NumPy implementation written literally from SPEC §1-4 (float64).

Terms are evaluated as the paper writes them, n×n products included.
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


def term(r, W, pre, post, e_pre, e_post):
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


def online_step(theta, layer_terms, terms, W, B, x, label, feedback):
    ys, _ = forward(W, x)
    e = errors(W, B, ys, label, feedback)
    new = []
    for i, w in enumerate(W):
        dw = np.zeros_like(w)
        for r in layer_terms[i]:
            dw += theta[terms.index(r)] * term(r, w, ys[i], ys[i + 1], e[i], e[i + 1])
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
