"""``glyphs``: an offline, synthetic 47-class stand-in for EMNIST balanced, made from printed fonts.

**This is not handwriting.** Every image is a character typeset in one of the TrueType fonts that
matplotlib ships, then randomly distorted. It has EMNIST balanced's shape (28×28 grey images,
47 classes, 400 per class by default = 18,800 images, like the balanced test split) so that
``--dataset glyphs`` runs the EMNIST-sized experiments with no download, but its statistics are
those of printed glyphs, and accuracies on it say nothing directly about EMNIST.

**Labels**, in EMNIST balanced's order (0..46): ``0``-``9``, ``A``-``Z``, then the lower-case
letters that differ from their capitals, ``a b d e f g h n q r t`` (``CHARS``).

**How an image is made** (``generate_glyphs``; all randomness from one
``numpy.random.default_rng(seed)``, drawn up front, so the same seed gives the same bytes):

1. *Prototypes, once.* Every font in ``matplotlib/mpl-data/fonts/ttf`` is checked per character:
   the font is used for a character only if its character map sends it to the glyph of the
   standard name (``zero``, ``A``, ``a``, ...), which skips fonts without Latin glyphs (STIX
   size/non-Unicode faces, ``cmex10``, Last Resort) and mismatches (``cmmi10``'s old-style digits,
   ``cmsy10``'s symbols; its calligraphic capitals are kept). Each (font, character) is rendered
   once with Pillow at 128 px, cropped to its ink, resized so its longer side is 64 px, and
   stored in four stroke widths (grey erosion by 1 px of the 64, none, dilation by 1 and 2 px).
2. *Per image:* a font (uniform among those that have the character) and a stroke width;
   an affine distortion: rotation U(±15°), horizontal shear U(±0.3), aspect ratio
   exp(U(±0.25)); then EMNIST's framing (Cohen et al. 2017): the distorted character's bounding
   box is scaled, aspect ratio preserved, so its longer side is 24·U(0.85, 1) px (EMNIST: 24,
   a 2-pixel border), and the box is centred in the 28×28 frame (as EMNIST; MNIST instead fits
   20×20 and centres the centre of mass), then shifted by U(±1) px in each direction.
   Distortion and framing are one affine map, sampled bilinearly on a 2×2 super-sampled grid and
   averaged down (anti-aliased).
3. *Noise:* a gain U(0.8, 1) and additive Gaussian noise (σ = 0.04), clipped to [0, 1] and
   quantised to 1/255 steps (as EMNIST's uint8 pixels).

Images are upright (no transpose), flattened row-major to 784 values, float32 in [0, 1]; the
classes are exactly balanced and the image order is shuffled.

**Cache.** The images are generated once and kept as
``<dir>/glyphs/glyphs-<VERSION>-seed<seed>-n<n_per_class>.npz`` (uint8, about 15 MB), where
``<dir>`` is ``data_dir`` (``--data-dir``), else ``$PLASTIC_JAX_DATA_DIR``, else
``~/.cache/plastic_jax``. The file also records a fingerprint (generator version, FreeType
version, font files); a cache that is unreadable, damaged or from another generator is
regenerated (one line on stderr); an unwritable directory still yields the data (generated in
memory, one warning line).
"""

from __future__ import annotations

import hashlib
import os
import sys
from typing import NamedTuple

import numpy as np

from plastic_jax.atomic import atomic_file
from plastic_jax.data.base import Dataset

#: EMNIST balanced's classes, in its label order
CHARS = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabdefghnqrt"
N_CLASSES = len(CHARS)  # 47
#: bump whenever a change to this module changes the images (it names the cache file)
VERSION = "v1"
DEFAULT_SEED = 0
DEFAULT_PER_CLASS = 400

SIDE = 28  # output image side
BOX = 24.0  # longer side of the character's bounding box (EMNIST: a 2-pixel border)
SS = 2  # super-sampling factor per axis
RENDER_PX = 128  # font size of the one-off render
PROTO = 64  # longer ink side of a stored prototype
CANVAS = 80  # prototype canvas side (room for dilation)
STROKES = (-1, 0, 1, 2)  # grey erosion (<0) / dilation (>0) radius in prototype pixels
INK = 0.5  # ink threshold for the bounding box
HULL = 128  # extreme points stored per prototype (4 corners × 32 directions)

_DIGIT_NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


class Prototypes(NamedTuple):
    """Rendered characters. P prototypes, S = len(STROKES) stroke widths.

    images: (P·S, CANVAS, CANVAS) float32 in [0, 1], row p·S + s; hull: (P·S, HULL, 2) float64
    (x, y) extreme points of the ink (``ink_extremes``); label: (P,) class; fonts: names
    of the font files used (sorted); fingerprint: ``fingerprint(fonts)``.
    """

    images: np.ndarray
    hull: np.ndarray
    label: np.ndarray
    fonts: tuple[str, ...]
    fingerprint: str


# ---------------------------------------------------------------------------------------------
# fonts and prototypes


def font_dir() -> str:
    """matplotlib's bundled TrueType directory."""
    import matplotlib

    return os.path.join(matplotlib.get_data_path(), "fonts", "ttf")


def glyph_name(ch: str) -> str:
    """The standard (Adobe) glyph name of a digit or Latin letter."""
    return _DIGIT_NAMES[int(ch)] if ch.isdigit() else ch


def font_coverage(path: str) -> str:
    """The characters of ``CHARS`` the font maps to the glyph of the standard name ('' if none)."""
    from matplotlib.ft2font import FT2Font

    try:
        ft = FT2Font(path)
    except (OSError, RuntimeError, ValueError):
        return ""
    ok = []
    for ch in CHARS:
        idx = ft.get_char_index(ord(ch))
        if idx and ft.get_glyph_name(idx) == glyph_name(ch):
            ok.append(ch)
    return "".join(ok)


def render_char(font, ch: str) -> np.ndarray:
    """One character on a (CANVAS, CANVAS) float32 canvas: ink cropped, longer side PROTO px, centred.

    ``font``: a ``PIL.ImageFont.FreeTypeFont``.
    """
    from PIL import Image

    mask = font.getmask(ch, mode="L")
    a = np.asarray(mask, np.uint8).reshape(mask.size[1], mask.size[0])
    rows, cols = np.flatnonzero(a.max(1)), np.flatnonzero(a.max(0))
    a = a[rows[0]: rows[-1] + 1, cols[0]: cols[-1] + 1]
    h, w = a.shape
    f = PROTO / max(h, w)
    nh, nw = max(1, round(h * f)), max(1, round(w * f))
    small = np.asarray(Image.fromarray(a).resize((nw, nh), Image.Resampling.LANCZOS), np.float32) / 255.0
    out = np.zeros((CANVAS, CANVAS), np.float32)
    r0, c0 = (CANVAS - nh) // 2, (CANVAS - nw) // 2
    out[r0: r0 + nh, c0: c0 + nw] = np.clip(small, 0.0, 1.0)
    return out


def _disk(r: int) -> np.ndarray:
    yy, xx = np.mgrid[-r: r + 1, -r: r + 1]
    return xx * xx + yy * yy <= r * r + r  # r=1: 3×3 cross; r=2: 5×5 rounded


def stroke_variants(img: np.ndarray) -> np.ndarray:
    """(CANVAS, CANVAS) → (len(STROKES), CANVAS, CANVAS): grey erosion/dilation by a disk."""
    from scipy import ndimage

    out = []
    for r in STROKES:
        if r == 0:
            out.append(img)
        elif r < 0:
            out.append(ndimage.grey_erosion(img, footprint=_disk(-r)))
        else:
            out.append(ndimage.grey_dilation(img, footprint=_disk(r)))
    return np.stack(out).astype(np.float32)


def ink_extremes(img: np.ndarray) -> np.ndarray:
    """(HULL, 2) (x, y) points whose bounding box under any linear map is (to a small fraction of a
    pixel) that of the ink (pixels ≥ INK, each a unit square): for each of HULL/4 directions, the
    four corners of the ink pixel farthest along it."""
    ys, xs = np.nonzero(img >= INK)
    if len(xs) == 0:  # cannot happen for a real glyph; fall back to everything non-zero
        ys, xs = np.nonzero(img > 0)
    cx, cy = xs + 0.5, ys + 0.5
    ang = np.arange(HULL // 4) * (2 * np.pi / (HULL // 4))
    far = np.argmax(cx[:, None] * np.cos(ang) + cy[:, None] * np.sin(ang), axis=0)  # (HULL/4,)
    corners = np.array([[-0.5, -0.5], [0.5, -0.5], [-0.5, 0.5], [0.5, 0.5]])
    return (np.stack([cx[far], cy[far]], 1)[:, None, :] + corners).reshape(HULL, 2)


def fingerprint(fonts: list[tuple[str, str]]) -> str:
    """A short hash of the generator version, Pillow's FreeType version and the fonts used."""
    from PIL import features

    parts = [VERSION, str(features.version("freetype2")), *(f"{os.path.basename(p)}:{os.path.getsize(p)}:{c}"
                                                           for p, c in fonts)]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


def find_fonts() -> list[tuple[str, str]]:
    """(path, characters it has) for each matplotlib font with any of ``CHARS``, sorted by name."""
    d = font_dir()
    fonts = []
    for name in sorted(os.listdir(d)):
        if name.lower().endswith(".ttf"):
            cov = font_coverage(os.path.join(d, name))
            if cov:
                fonts.append((os.path.join(d, name), cov))
    return fonts


def build_prototypes(fonts: list[tuple[str, str]] | None = None) -> Prototypes:
    """Render every (font, character) the fonts have (default ``find_fonts()``), in every stroke width."""
    from PIL import ImageFont

    fonts = find_fonts() if fonts is None else fonts
    images, hulls, labels = [], [], []
    for path, cov in fonts:
        font = ImageFont.truetype(path, RENDER_PX)
        for ch in cov:
            for v in stroke_variants(render_char(font, ch)):
                images.append(v)
                hulls.append(ink_extremes(v))
            labels.append(CHARS.index(ch))
    missing = set(range(N_CLASSES)) - set(labels)
    if missing:
        raise RuntimeError(f"no matplotlib font has the characters {''.join(CHARS[i] for i in sorted(missing))}")
    return Prototypes(np.stack(images), np.stack(hulls), np.asarray(labels, np.int32),
                      tuple(os.path.basename(p) for p, _ in fonts), fingerprint(fonts))


# ---------------------------------------------------------------------------------------------
# per-image distortion and framing


class Params(NamedTuple):
    """Per-image random draws, N images: proto (N,) row of ``Prototypes.images``; rot, shear,
    log_aspect, size, dx, dy, gain (N,) float64; noise (N, 784) float32."""

    proto: np.ndarray
    rot: np.ndarray
    shear: np.ndarray
    log_aspect: np.ndarray
    size: np.ndarray
    dx: np.ndarray
    dy: np.ndarray
    gain: np.ndarray
    noise: np.ndarray


def draw_params(rng: np.random.Generator, labels: np.ndarray, protos: Prototypes) -> Params:
    """All random draws for images of class ``labels`` (N,), in a fixed order."""
    n = len(labels)
    s = len(STROKES)
    by_class = [np.flatnonzero(protos.label == c) for c in range(N_CLASSES)]
    counts = np.array([len(b) for b in by_class])
    table = np.zeros((N_CLASSES, counts.max()), np.int64)  # (47, max fonts) prototype ids, padded
    for c, b in enumerate(by_class):
        table[c, : len(b)] = b
    pick = np.floor(rng.random(n) * counts[labels]).astype(np.int64)
    proto = table[labels, pick] * s + rng.integers(0, s, n)
    return Params(
        proto=proto,
        rot=rng.uniform(-np.pi / 12, np.pi / 12, n),
        shear=rng.uniform(-0.3, 0.3, n),
        log_aspect=rng.uniform(-0.25, 0.25, n),
        size=BOX * rng.uniform(0.85, 1.0, n),
        dx=rng.uniform(-1.0, 1.0, n),
        dy=rng.uniform(-1.0, 1.0, n),
        gain=rng.uniform(0.8, 1.0, n),
        noise=rng.standard_normal((n, SIDE * SIDE), dtype=np.float32) * np.float32(0.04),
    )


def distortion(p: Params) -> np.ndarray:
    """(N, 2, 2) linear maps on (x, y): rotation · shear · aspect."""
    c, s = np.cos(p.rot), np.sin(p.rot)
    ax, ay = np.exp(p.log_aspect / 2), np.exp(-p.log_aspect / 2)
    # [[c, -s], [s, c]] @ [[1, k], [0, 1]] @ diag(ax, ay), written out (no BLAS)
    k = p.shear
    return np.stack([np.stack([c * ax, (c * k - s) * ay], -1),
                     np.stack([s * ax, (s * k + c) * ay], -1)], -2)


def frame_maps(a: np.ndarray, hull: np.ndarray, p: Params) -> tuple[np.ndarray, np.ndarray]:
    """Inverse maps from output pixel (x, y) to prototype (x, y): p = M·u + t.

    a: (N, 2, 2) distortions; hull: (N, HULL, 2) prototype ink extreme points. Returns M (N, 2, 2),
    t (N, 2). The distorted ink's bounding box is scaled so its longer side is ``p.size``,
    centred at (14 + dx, 14 + dy).
    """
    q = np.einsum("nij,nhj->nhi", a, hull, optimize=False)  # distorted hull, (N, HULL, 2)
    lo, hi = q.min(1), q.max(1)
    scale = p.size / (hi - lo).max(1)  # output px per distorted prototype px
    centre = (lo + hi) / 2
    out_c = np.stack([SIDE / 2 + p.dx, SIDE / 2 + p.dy], 1)
    det = a[:, 0, 0] * a[:, 1, 1] - a[:, 0, 1] * a[:, 1, 0]
    inv = np.stack([np.stack([a[:, 1, 1], -a[:, 0, 1]], -1),
                    np.stack([-a[:, 1, 0], a[:, 0, 0]], -1)], -2) / det[:, None, None]
    m = inv / scale[:, None, None]
    # u = scale·(A p − centre) + out_c  ⇒  p = A⁻¹ (u − out_c)/scale + A⁻¹ centre
    t = np.einsum("nij,nj->ni", inv, centre - out_c / scale[:, None], optimize=False)
    return m, t


def _grid() -> np.ndarray:
    """(2, SIDE·SS, SIDE·SS) sample positions (x, y) in output pixels."""
    g = (np.arange(SIDE * SS) + 0.5) / SS
    return np.stack(np.meshgrid(g, g, indexing="xy"))


def pad_flat(images: np.ndarray) -> np.ndarray:
    """(P·S, CANVAS, CANVAS) → the same with a zero ring of 2 pixels, flattened (for ``render``)."""
    return np.pad(images, ((0, 0), (2, 2), (2, 2))).reshape(-1)


def render(flat: np.ndarray, p: Params, m: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Sample the prototypes through the maps: (N, 784) float32 in [0, 1], before noise.

    flat: ``pad_flat(Prototypes.images)``. Bilinear, zero outside the canvas, on an SS×SS
    super-sampled grid averaged down.
    """
    gx, gy = _grid().astype(np.float32)
    m, t = m.astype(np.float32)[..., None, None], t.astype(np.float32)[..., None, None]
    # prototype pixel (i, j) has its centre at (j + 0.5, i + 0.5); clamp into the zero ring
    px = np.clip(m[:, 0, 0] * gx + m[:, 0, 1] * gy + (t[:, 0] - 0.5), -1, CANVAS)
    py = np.clip(m[:, 1, 0] * gx + m[:, 1, 1] * gy + (t[:, 1] - 0.5), -1, CANVAS)
    x0, y0 = np.floor(px), np.floor(py)
    fx, fy = px - x0, py - y0
    side = CANVAS + 4
    idx = (p.proto[:, None, None] * (side * side) + (y0.astype(np.int64) + 2) * side
           + (x0.astype(np.int64) + 2))
    top = flat[idx] * (1 - fx) + flat[idx + 1] * fx
    bottom = flat[idx + side] * (1 - fx) + flat[idx + side + 1] * fx
    v = top * (1 - fy) + bottom * fy
    n = len(p.proto)
    v = v.reshape(n, SIDE, SS, SIDE, SS).mean((2, 4), dtype=np.float32)
    return v.reshape(n, SIDE * SIDE)


def _take(p: Params, sl: slice) -> Params:
    return Params(*(f[sl] for f in p))


def generate_glyphs(seed: int = DEFAULT_SEED, n_per_class: int = DEFAULT_PER_CLASS,
                    protos: Prototypes | None = None, chunk: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """The images, in memory: x (47·n_per_class, 784) uint8, y (47·n_per_class,) int32 (shuffled).

    Deterministic in (seed, n_per_class, fonts); ``chunk`` only bounds memory.
    """
    if n_per_class < 1:
        raise ValueError(f"n_per_class must be positive, got {n_per_class}")
    protos = protos or build_prototypes()
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.repeat(np.arange(N_CLASSES, dtype=np.int32), n_per_class))
    p = draw_params(rng, labels, protos)
    a = distortion(p)
    m, t = frame_maps(a, protos.hull[p.proto], p)
    flat = pad_flat(protos.images)
    x = np.empty((len(labels), SIDE * SIDE), np.uint8)
    for i in range(0, len(labels), chunk):
        sl = slice(i, i + chunk)
        pc = _take(p, sl)
        v = render(flat, pc, m[sl], t[sl])
        v = v * pc.gain[:, None].astype(np.float32) + pc.noise
        x[sl] = np.rint(np.clip(v, 0.0, 1.0) * np.float32(255.0)).astype(np.uint8)
    return x, labels


# ---------------------------------------------------------------------------------------------
# cache and the dataset source


def resolve_data_dir(data_dir: str | None) -> str:
    """``data_dir``, else ``$PLASTIC_JAX_DATA_DIR``, else ``~/.cache/plastic_jax``."""
    d = data_dir or os.environ.get("PLASTIC_JAX_DATA_DIR") or os.path.join("~", ".cache", "plastic_jax")
    return os.path.expanduser(d)


def cache_path(data_dir: str | None, seed: int = DEFAULT_SEED, n_per_class: int = DEFAULT_PER_CLASS) -> str:
    """``<dir>/glyphs/glyphs-<VERSION>-seed<seed>-n<n_per_class>.npz``."""
    return os.path.join(resolve_data_dir(data_dir), "glyphs", f"glyphs-{VERSION}-seed{seed}-n{n_per_class}.npz")


def _warn(msg: str) -> None:
    print(f"glyphs: {msg}", file=sys.stderr, flush=True)


def _read_cache(path: str, n_per_class: int) -> tuple[np.ndarray, np.ndarray, str]:
    """(x uint8, y int32, fingerprint) from a cache file; raises ValueError if it is not whole."""
    with np.load(path, allow_pickle=False) as z:
        x, y, fp = z["x"], z["y"], str(z["fingerprint"])
    n = N_CLASSES * n_per_class
    if x.dtype != np.uint8 or x.shape != (n, SIDE * SIDE) or y.shape != (n,) or y.dtype != np.int32:
        raise ValueError(f"arrays of the wrong shape or type ({x.shape} {x.dtype}, {y.shape} {y.dtype})")
    if y.min() < 0 or y.max() >= N_CLASSES or np.any(np.bincount(y, minlength=N_CLASSES) != n_per_class):
        raise ValueError("labels are not 47 balanced classes")
    return x, y, fp


def _write_cache(path: str, x: np.ndarray, y: np.ndarray, fingerprint: str) -> None:
    """Atomically (``atomic.atomic_file``): a reader never sees half a cache."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with atomic_file(path, binary=True) as f:
        np.savez(f, x=x, y=y, fingerprint=np.asarray(fingerprint))


def _to_dataset(x: np.ndarray, y: np.ndarray) -> Dataset:
    return Dataset("glyphs", (x.astype(np.float32) / np.float32(255.0)).astype(np.float32), y, N_CLASSES)


def load_glyphs(data_dir: str | None = None, *, seed: int = DEFAULT_SEED,
                n_per_class: int = DEFAULT_PER_CLASS) -> Dataset:
    """The glyphs dataset: x (47·n_per_class, 784) float32 in [0, 1], y (47·n_per_class,) int32.

    Read from the cache (``cache_path``) when it is whole and made by this generator with these
    fonts; otherwise generated (a few seconds) and written there. Never raises for a bad or
    unwritable cache: it says so in one line on stderr.
    """
    path = cache_path(data_dir, seed, n_per_class)
    fonts = find_fonts()
    fp = fingerprint(fonts)
    if os.path.exists(path):
        try:
            x, y, cached_fp = _read_cache(path, n_per_class)
        except Exception as e:  # noqa: BLE001 - torn zip, bad header, wrong arrays: all regenerate
            msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
            _warn(f"cache {path} is unreadable ({type(e).__name__}{': ' + msg if msg else ''}); regenerating")
        else:
            if cached_fp == fp:
                return _to_dataset(x, y)
            _warn(f"cache {path} was made with other fonts or FreeType; regenerating")
    _warn(f"generating {N_CLASSES * n_per_class} images (seed {seed}) once, for the cache {path}")
    protos = build_prototypes(fonts)
    x, y = generate_glyphs(seed, n_per_class, protos)
    try:
        _write_cache(path, x, y, protos.fingerprint)
    except OSError as e:
        _warn(f"cannot write the cache {path} ({e.strerror or e}); using the images generated in memory")
    return _to_dataset(x, y)
