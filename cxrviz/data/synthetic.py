"""Built-in synthetic dataset: procedurally generated chest-radiograph phantoms.

This is the app's default dataset when the user has no real data.  It is
**synthetic** (label it as such wherever it is shown) and has the same three
classes as the Kaggle COVID-19 Radiography set::

    0 "Covid"            diffuse, patchy, *bilateral* ground-glass haze,
                         peripheral and lower-zone predominant
    1 "Normal"           clear lungs
    2 "Viral Pneumonia"  dense, focal / lobar consolidation with perihilar
                         streaky interstitial opacities, mostly one-sided

Every image contains the same anatomy (body silhouette, two dark lung fields,
mediastinum and heart shadow, trachea, spine, clavicles, posterior and
anterior rib arcs, diaphragm domes, sometimes a gastric bubble and a side
marker) plus nuisance variation that is independent of the class: random
shift / rotation / scale, patient habitus, lung size, vascular markings,
soft-tissue (breast) shadows, exposure window, gamma, a heel-effect gradient,
blur and noise.  The class is therefore only visible in the lungs; global
brightness alone is a poor predictor.

Everything is rendered analytically in a continuous "canonical" coordinate
frame and sampled at the requested size, so images look the same (up to
resolution) at 32 px or 256 px.  All random scalars are drawn before the
pixel noise, so the same generator state gives the same anatomy at any size;
the pathology draws come from a separate child stream, so for a given
generator state the three labels give the same patient and differ only in
the lungs.  Generation is vectorised numpy: about 3 ms per 128 px image on
one core (the default 360-image set in about 1 s).

Learnability (measured while tuning): a from-scratch ResNet-18 (1-channel
conv1, AdamW lr 1e-3, batch 32) on the default 128 px split reaches >= 90 %
test accuracy within about 30-60 s of single-core CPU training, while a
logistic regression on per-image [mean, std] intensity stays near 40 %.

Determinism: ``make_split`` derives one independent random stream per image
from ``(seed, crc32(split), class, index)``; identical arguments give
byte-identical arrays, and ``"train"`` and ``"test"`` never share a stream.
The returned order is a deterministic shuffle (classes interleaved), seeded
from ``(seed, split)`` as well.

It is one module (about 550 lines, some 60 of them this docstring) because it
is one concept, the phantom renderer: anatomy, nuisance and pathology are
drawn in one canonical frame and in one fixed order of random draws, which
the determinism promise above depends on, so they change together.
"""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
from scipy.ndimage import gaussian_filter

__all__ = [
    "CLASSES",
    "SYNTHETIC_NAME",
    "DEFAULT_COUNTS",
    "DEFAULT_SIZE",
    "make_phantom",
    "make_split",
    "write_folder",
]

CLASSES = ["Covid", "Normal", "Viral Pneumonia"]
SYNTHETIC_NAME = "synthetic chest phantoms (built-in)"
DEFAULT_COUNTS = {"train": 100, "test": 20}  # images per class (~1 s to generate at 128 px)
DEFAULT_SIZE = 128

COVID, NORMAL, VIRAL = 0, 1, 2

_F = np.float32


# --------------------------------------------------------------------------- #
# small helpers (float32, vectorised; powers are written as products because
# float32 ``**`` with large arguments is very slow in numpy)
# --------------------------------------------------------------------------- #
def _sig(z):
    """Logistic function via tanh (numerically safe)."""
    return 0.5 + 0.5 * np.tanh(0.5 * z)


def _gauss(d2, w):
    """exp(-d2 / (2 w^2))."""
    return np.exp(d2 * _F(-0.5 / (w * w)))


class _Grid:
    """Sample positions in the canonical (patient) frame.

    ``x`` runs left→right and ``y`` top→bottom of the image; the thorax sits
    roughly in [-1, 1]^2 before the random pose is applied.  ``x``/``y`` may be
    2-D (the whole image) or 1-D (a subset of pixels, e.g. the lungs).
    """

    def __init__(self, x, y, pix):
        self.x, self.y, self.pix = x, y, pix
        self.ax = np.abs(x)

    def subset(self, idx):
        return _Grid(self.x.reshape(-1)[idx], self.y.reshape(-1)[idx], self.pix)

    def col(self, v):
        """Reshape a 1-D parameter vector so it broadcasts against x / y."""
        return np.asarray(v, _F).reshape((-1,) + (1,) * self.x.ndim)

    def soft(self, z, width):
        """Smooth step 0→1 across z = 0 with the given width (>= ~1 pixel)."""
        return _sig(z * _F(1.0 / max(width, 0.7 * self.pix)))

    def width(self, w):
        return max(w, 0.6 * self.pix)


def _pose_grid(size, tx, ty, rot, scale):
    c = ((np.arange(size, dtype=_F) + _F(0.5)) / _F(size)) * _F(2) - _F(1)
    px, py = np.meshgrid(c, c)  # image frame: px columns, py rows
    cs, sn = _F(np.cos(rot) / scale), _F(np.sin(rot) / scale)
    xs, ys = px - _F(tx), py - _F(ty)
    g = _Grid(cs * xs + sn * ys, cs * ys - sn * xs, 2.0 / (size * scale))
    return g, px, py


def _fourier_noise(g: _Grid, rng: np.random.Generator, n: int, kmin: float, kmax: float):
    """Smooth random field (sum of ``n`` plane waves), roughly unit variance."""
    k = rng.uniform(kmin, kmax, n)
    th = rng.uniform(0, 2 * np.pi, n)
    ph = rng.uniform(0, 2 * np.pi, n)
    waves = np.cos(g.col(k * np.cos(th)) * g.x + g.col(k * np.sin(th)) * g.y + g.col(ph))
    return waves.sum(axis=0) * _F(np.sqrt(2.0 / n))


def _segments(g: _Grid, x0, y0, ang, length, width, amp):
    """Sum of line segments from (x0, y0) along ``ang``, fading toward the tip."""
    ang = np.asarray(ang, np.float64)
    dx, dy = np.cos(ang), np.sin(ang)
    x0, y0 = np.asarray(x0, np.float64), np.asarray(y0, np.float64)
    ln = g.col(length)
    # along = (p - p0) . d,  perp = (p - p0) x d  (offsets folded into constants)
    along = g.x * g.col(dx) + (g.y * g.col(dy) - g.col(x0 * dx + y0 * dy))
    perp = g.x * g.col(dy) - (g.y * g.col(dx) + g.col(x0 * dy - y0 * dx))
    t = np.clip(along, 0, ln)
    along -= t  # distance beyond either end
    perp *= perp
    along *= along
    perp += along
    g_ = _gauss(perp, g.width(width))
    t *= g.col(-1 / np.asarray(length, np.float64))
    t += 1  # linear fade toward the tip
    g_ *= t
    return np.einsum("k,k...->...", np.asarray(amp, _F).reshape(-1), g_)


def _blobs(g: _Grid, cx, cy, sig, amp):
    ex, ey = g.x - g.col(cx), g.y - g.col(cy)
    s = g.col(sig)
    return (g.col(amp) * np.exp((ex * ex + ey * ey) * (_F(-0.5) / (s * s)))).sum(axis=0)


def _ellipse_r(g: _Grid, cx, cy, a, b, ang):
    """Normalised elliptical radius (1 on the boundary)."""
    c, s = _F(np.cos(ang)), _F(np.sin(ang))
    dx, dy = g.x - _F(cx), g.y - _F(cy)
    xx = (dx * c + dy * s) * _F(1 / a)
    yy = (dy * c - dx * s) * _F(1 / b)
    return xx * xx + yy * yy


# --------------------------------------------------------------------------- #
# the phantom
# --------------------------------------------------------------------------- #
def make_phantom(label: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """Render one synthetic chest radiograph of class ``label`` (index into CLASSES).

    Returns a ``uint8`` array of shape ``(size, size)``; deterministic given
    the generator state.  All random scalars are drawn before the per-pixel
    noise, so one generator state gives the same anatomy at every size.
    The steps below draw from ``rng`` in this order (changing the order
    changes every image; ``tests/test_synthetic.py`` pins the bytes).
    """
    label = int(label)
    if label not in (COVID, NORMAL, VIRAL):
        raise ValueError(f"label must be 0, 1 or 2 (index into {CLASSES}), got {label}")
    size = int(size)
    if size < 8:
        raise ValueError(f"size must be >= 8, got {size}")
    # the class-specific pathology gets its own stream, so every nuisance draw
    # (pose, anatomy, exposure, noise) is identical for a given generator
    # state whatever the label
    path_rng = np.random.default_rng(rng.integers(0, 2**63))
    u = rng.uniform

    # ---- pose -----------------------------------------------------------------
    g, px, py = _pose_grid(size, u(-0.08, 0.08), u(-0.07, 0.07), np.deg2rad(u(-7, 7)), u(0.86, 1.06))
    A, body, shoulder_y = _soft_tissue(g, u)
    lungs, lung_par, L, heart, lung_cy, dome_base = _lungs_and_heart(g, u)
    lung_depth, hil_y = _mediastinum_and_lung_fields(A, g, rng, u, body, L, heart, lung_cy, dome_base, lung_par)
    _lung_detail(A, g, u, label, path_rng, L, lungs, lung_par, hil_y, lung_depth)
    A += _bones(g, u, L, shoulder_y, dome_base) * body
    return _expose(A, g, rng, u, px, py, size)


def _soft_tissue(g: _Grid, u):
    """Body silhouette and arms: (attenuation A, body mask, shoulder height)."""
    x, y, ax = g.x, g.y, g.ax
    bw = u(0.74, 0.9)  # half-width of the thorax
    neck = u(0.19, 0.25)
    shoulder_y = u(-0.92, -0.8)
    half_w = neck + (bw - neck) * _sig((y - _F(shoulder_y)) * _F(1 / 0.07))
    body = g.soft(half_w - ax, 0.025)
    tissue = u(0.38, 0.48)
    q = np.clip(1 - (x * _F(1 / bw)) ** 2, 0, 1)
    A = _F(0.05) + body * _F(tissue) * (_F(0.55) + _F(0.45) * np.sqrt(q))
    if u() < 0.6:  # arms at the edges of the field
        arm_x = bw + u(0.07, 0.15)
        arm = g.soft(0.08 - np.abs(ax - _F(arm_x)), 0.03) * g.soft(y - _F(shoulder_y + 0.05), 0.06)
        A += _F(u(0.2, 0.3)) * arm

    return A, body, shoulder_y


def _lungs_and_heart(g: _Grid, u):
    """Both lung masks cut by the heart and mediastinum: (lungs, lung_par, union L, heart, lung_cy, dome_base)."""
    x, y, ax = g.x, g.y, g.ax
    lung_cy = u(-0.13, -0.05)
    dome_base = u(0.36, 0.46)
    lung_a, lung_b = u(0.24, 0.3), u(0.56, 0.66)
    lungs, lung_par = {}, {}
    for s in (-1, 1):
        cx = s * u(0.34, 0.4)
        a = lung_a * u(0.95, 1.05)
        b = lung_b * u(0.97, 1.03)
        cy = lung_cy + u(-0.02, 0.02)
        uu = (x - _F(cx)) * _F(1 / a)
        vv = (y - _F(cy)) * _F(1 / b)
        narrow = 1 / (1 - _F(0.38) * np.clip(-vv, 0, 1))  # apex narrower than base
        un = uu * narrow
        m = g.soft(1 - un * un - vv * vv, 0.25)
        # diaphragm dome: highest medially-central; right (image-left) side higher
        dome_top = dome_base + (-0.04 if s < 0 else 0.0) + u(-0.02, 0.02)
        m = m * g.soft(_F(dome_top) + _F(0.2) * uu * uu - y, 0.02)
        lungs[s] = m
        lung_par[s] = (cx, cy, a, b, dome_top)

    # heart (patient's left = image right) and mediastinum
    hx, hy = u(0.05, 0.14), lung_cy + u(0.32, 0.4)
    heart = g.soft(1 - _ellipse_r(g, hx, hy, u(0.25, 0.32), u(0.19, 0.25), np.deg2rad(u(-30, -12))), 0.15)
    med_w = _F(u(0.09, 0.12)) + _F(0.05) * np.clip((y + _F(0.2)) * _F(2.5), 0, 1)  # wider at hila
    medi = g.soft(ax - med_w, 0.02) * (1 - heart)
    for s in (-1, 1):
        lungs[s] = lungs[s] * medi
    L = np.maximum(lungs[-1], lungs[1])

    return lungs, lung_par, L, heart, lung_cy, dome_base


def _mediastinum_and_lung_fields(A, g: _Grid, rng, u, body, L, heart, lung_cy, dome_base, lung_par):
    """Lung lucency, heart, trachea, hila, breast shadows and the gastric bubble, added to ``A`` in place;
    returns (lung_depth, hil_y)."""
    x, y, ax = g.x, g.y, g.ax
    lung_depth = u(0.26, 0.34)
    lung_tex = _fourier_noise(g, rng, 6, 2.0, 5.0)
    lat = np.clip(1 - ((ax - _F(0.42)) * _F(1 / 0.35)) ** 2, 0, 1)  # most lucent mid-laterally
    apex = np.clip((_F(lung_cy - 0.3) - y) * _F(3), 0, 1)  # apices overlapped by soft tissue
    A -= _F(lung_depth) * L * (_F(0.78) + _F(0.22) * lat - _F(0.15) * apex + _F(0.05) * lung_tex)
    A += _F(0.025) * heart * body

    # trachea (lucent column down to the carina)
    carina = lung_cy - u(0.05, 0.15)
    trachea = g.soft(0.03 - np.abs(x - _F(u(-0.02, 0.02))), 0.012) * g.soft(carina - y, 0.04)
    A -= _F(0.09) * trachea * body

    # hilar shadows
    hil_y = lung_cy + u(-0.02, 0.06)
    A += _blobs(g, [-0.17, 0.17], [hil_y, hil_y], [0.06, 0.06], [0.06, 0.06]) * body

    # soft-tissue (breast / pectoral) shadows over the lower lateral lungs
    breast = u(0.0, 0.07)
    bx, by = u(0.4, 0.5), dome_base - u(0.0, 0.12)
    if breast > 0.02:
        A += _blobs(g, [-bx, bx], [by, by], [0.17, 0.17], [breast, breast]) * body

    # gastric bubble under the left (image-right) dome
    if u() < 0.5:
        gx0, gy0 = lung_par[1][0] + u(-0.05, 0.08), lung_par[1][4] + u(0.09, 0.14)
        gb = g.soft(1 - _ellipse_r(g, gx0, gy0, 0.1, 0.06, 0), 0.25)
        A -= _F(u(0.04, 0.09)) * gb * body

    return lung_depth, hil_y


def _lung_detail(A, g: _Grid, u, label, path_rng, L, lungs, lung_par, hil_y, lung_depth) -> None:
    """Vessels and the class's pathology, computed on lung pixels only and added to ``A`` in place."""
    idx = np.flatnonzero(L.reshape(-1) > 2e-3)
    gl = g.subset(idx)
    Ll = L.reshape(-1)[idx]
    lungs_l = {s: lungs[s].reshape(-1)[idx] for s in (-1, 1)}
    n_v = 7
    vx0, vy0, vang, vlen = [], [], [], []
    for s in (-1, 1):
        hil_x = s * u(0.14, 0.19)
        base = 0.0 if s > 0 else np.pi
        for _ in range(n_v):
            ang = base + s * u(-1.15, 1.35)
            off = u(0.02, 0.1)
            vx0.append(hil_x + np.cos(ang) * off)
            vy0.append(hil_y + u(-0.07, 0.07) + np.sin(ang) * off)
            vang.append(ang)
            vlen.append(u(0.2, 0.45))
    v_amp = u(0.05, 0.08)
    detail = _segments(gl, vx0, vy0, np.array(vang), vlen, 0.011, np.full(2 * n_v, v_amp))
    detail += _pathology(label, gl, path_rng, lungs_l, lung_par, hil_y, lung_depth)
    # saturate: consolidated lung is at most as dense as soft tissue
    sat = _F(1.1 * lung_depth)
    A.reshape(-1)[idx] += sat * np.tanh(detail * _F(1 / sat)) * Ll



def _bones(g: _Grid, u, L, shoulder_y, dome_base):
    """Spine, clavicles and ribs (posterior and anterior arcs), clearest over the lungs."""
    y, ax = g.y, g.ax
    t = ax
    # spine with vertebral bodies
    spine = g.soft(_F(u(0.05, 0.07)) - t, 0.012)
    vp = u(0.1, 0.13)
    vert = _F(0.75) + _F(0.25) * np.cos((y - _F(u(0, vp))) * _F(2 * np.pi / vp))
    bone = _F(0.1) * spine * vert
    # clavicles
    clav_y = shoulder_y + u(0.07, 0.13)
    tc = t - _F(0.08)
    z = (y - (_F(clav_y) - _F(0.16) * tc + _F(0.22) * tc * tc)) * _F(1 / g.width(0.028))
    z = z * z
    clav = np.exp(-np.minimum(z * z, _F(30))) * g.soft(tc, 0.02) * g.soft(_F(0.6) - t, 0.04)
    bone += _F(0.15) * clav
    # ribs: quasi-periodic posterior arcs (convex up, turning down laterally)
    # and fainter anterior arcs sloping down medially; clearest over the lungs
    r0, sp = u(-0.8, -0.72), u(0.118, 0.132)
    n_ribs = 10
    lat_t = np.maximum(t - _F(0.42), 0)
    bend = _F(u(1.8, 2.4)) + _F(1.2) * np.clip((y - _F(r0)) * _F(0.8), 0, 1.5)
    post_off = y - _F(r0) + _F(u(0.14, 0.22)) * t - bend * lat_t * lat_t
    ph = post_off * _F(1 / sp)
    # edge width so that the rib border is ~1 px wide
    ew = max(0.12, 0.8 * 2 * np.pi * g.pix / sp)
    post = _sig((np.cos(ph * _F(2 * np.pi)) - _F(0.25)) * _F(1 / ew))
    post *= g.soft(ph + 0.5, 0.2) * g.soft(n_ribs - 0.5 - ph, 0.2)
    post *= g.soft(t - 0.07, 0.015) * g.soft(0.8 - t, 0.04)
    ant_off = y - _F(r0 + 0.1) - (_F(0.74) - t) * _F(u(0.45, 0.6))
    pha = ant_off * _F(1 / sp)
    ant = _sig((np.cos(pha * _F(2 * np.pi)) - _F(0.45)) * _F(1 / (1.5 * ew)))
    ant *= g.soft(pha + 0.5, 0.2) * g.soft(n_ribs - 2.5 - pha, 0.2)
    ant *= g.soft(t - 0.2, 0.05) * g.soft(0.74 - t, 0.04)
    rib_vis = _F(0.35) + _F(0.65) * L
    bone += (_F(0.075) * post + _F(0.03) * ant) * rib_vis * g.soft(dome_base + 0.25 - y, 0.08)
    return bone



def _expose(A, g: _Grid, rng, u, px, py, size):
    """Detector and exposure: heel effect, side marker, window, gamma, blur and per-pixel noise, to uint8."""
    gx, gy = u(-0.1, 0.1), u(-0.1, 0.1)  # heel effect, image frame
    A *= 1 + _F(gx) * px + _F(gy) * py
    if u() < 0.5:  # side marker in a top corner
        mx = u(0.6, 0.85) * (1 if u() < 0.5 else -1)
        my = u(-0.9, -0.72)
        mk = g.soft(0.045 - np.abs(px - _F(mx)), 0.01) * g.soft(0.06 - np.abs(py - _F(my)), 0.01)
        A = np.maximum(A, mk * _F(0.95))
    lo, hi = u(-0.06, 0.1), u(0.56, 0.8)
    img = np.clip((A - _F(lo)) * _F(1 / (hi - lo)), 1e-6, 1)
    img = np.exp(np.log(img) * _F(u(0.75, 1.35)))  # gamma
    blur = u(0.2, 1.1) * size / 128.0
    noise_sd = u(0.008, 0.035)
    # ---- per-pixel randomness last -------------------------------------------------
    if blur > 0.3:
        img = gaussian_filter(img, blur, mode="nearest")
    img += rng.standard_normal(img.shape, dtype=_F) * _F(noise_sd)
    return np.clip(img * _F(255) + _F(0.5), 0, 255).astype(np.uint8)


def _pathology(label, g: _Grid, rng, lungs, lung_par, hil_y, lung_depth):
    """Extra lung density (before multiplying by the lung mask); 0 for Normal."""
    u = rng.uniform
    if label == NORMAL:
        return np.zeros_like(g.x)

    if label == COVID:
        # patchy ground-glass haze in BOTH lungs, peripheral and lower-zone
        field = np.zeros_like(g.x)
        for s in (-1, 1):
            cx, cy, a, b, _ = lung_par[s]
            n = int(rng.integers(5, 9))
            bx = cx + s * a * u(0.2, 0.95, n)  # toward the lateral edge
            by = np.where(u(size=n) < 0.7, cy + b * u(0.15, 0.85, n), cy + b * u(-0.5, 0.2, n))
            field += _blobs(g, bx, by, u(0.08, 0.17, n), u(0.8, 1.5, n)) * lungs[s]
        mottle = _fourier_noise(g, rng, 10, 9.0, 18.0)
        field *= np.clip(_F(0.6) + _F(0.4) * mottle, 0.1, 1.4)
        return _F(u(0.6, 0.9) * lung_depth) * (1 - np.exp(-field))

    # VIRAL PNEUMONIA: dense focal / lobar consolidation, usually one lung,
    # with perihilar streaky interstitial opacities on the same side
    s = -1 if u() < 0.5 else 1
    cx, cy, a, b, _ = lung_par[s]
    edge = _fourier_noise(g, rng, 8, 5.0, 12.0)  # irregular border / texture
    zone = u()
    if zone < 0.75:
        # lobar: everything below (lower lobe) or above (upper lobe) an
        # oblique fissure-like boundary in that lung
        tilt = u(-0.35, 0.35)
        if zone < 0.5:
            fy = cy + b * u(-0.1, 0.3) + tilt * (g.x - _F(cx))
            region = g.soft(g.y - fy + _F(0.035) * edge, 0.04)
        else:
            fy = cy + b * u(-0.15, 0.15) + tilt * (g.x - _F(cx))
            region = g.soft(fy - g.y + _F(0.035) * edge, 0.04)
    else:
        # large focal (round) consolidation
        ox, oy = cx + s * a * u(-0.3, 0.45), cy + b * u(-0.3, 0.55)
        r = np.sqrt(_ellipse_r(g, ox, oy, u(0.17, 0.26), u(0.15, 0.24), u(0, np.pi)))
        region = g.soft(1 - r * (1 + _F(0.12) * edge), 0.2)
    dens = _F(u(1.1, 1.5) * lung_depth) * (_F(0.85) + _F(0.15) * edge)
    out = dens * region * lungs[s]
    n = int(rng.integers(5, 9))
    hil_x = s * u(0.14, 0.2)
    ang = (0.0 if s > 0 else np.pi) + s * u(-1.0, 1.2, n)
    off = u(0.02, 0.08, n)
    out += _segments(
        g, hil_x + np.cos(ang) * off, hil_y + u(-0.08, 0.1, n) + np.sin(ang) * off, ang,
        u(0.18, 0.38, n), 0.016, u(0.07, 0.12, n),
    ) * lungs[s]
    out += _blobs(g, [hil_x + s * 0.08], [hil_y + 0.05], [0.11], [u(0.05, 0.1)]) * lungs[s]
    if u() < 0.3:  # a few streaks on the other side too
        m = int(rng.integers(3, 6))
        hx2 = -s * u(0.14, 0.2)
        ang2 = (0.0 if s < 0 else np.pi) - s * u(-1.0, 1.2, m)
        out += _segments(
            g, np.full(m, hx2), hil_y + u(-0.08, 0.1, m), ang2, u(0.15, 0.3, m), 0.014, u(0.04, 0.08, m)
        ) * lungs[-s]
    return out


# --------------------------------------------------------------------------- #
# dataset splits
# --------------------------------------------------------------------------- #
def _split_key(split: str) -> int:
    return zlib.crc32(split.encode("utf-8"))


def make_split(
    split: str,
    size: int = DEFAULT_SIZE,
    n_per_class: int | None = None,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Generate a deterministic split of the synthetic dataset.

    Parameters
    ----------
    split:
        Split name.  ``"train"`` / ``"test"`` have default sizes in
        ``DEFAULT_COUNTS``; any other name needs an explicit ``n_per_class``.
    size:
        Image side length in pixels (rendered directly at that size).
    n_per_class:
        Images per class; ``None`` uses ``DEFAULT_COUNTS[split]``.
    seed:
        Non-negative integer base seed.

    Returns
    -------
    (images, labels):
        ``images`` is ``uint8 [N, size, size]``, ``labels`` is ``int64 [N]``
        with ``N = 3 * n_per_class``, in a deterministic shuffled order
        (classes interleaved).  Image ``i`` of class ``c`` comes from its own
        random stream keyed by ``(seed, crc32(split), c, i)``, so the same
        arguments are byte-identical, different splits never share images,
        and a larger ``n_per_class`` contains the smaller one's images.
    """
    if not isinstance(split, str) or not split:
        raise ValueError("split must be a non-empty string")
    if n_per_class is None:
        if split not in DEFAULT_COUNTS:
            raise ValueError(f"unknown split {split!r}; pass n_per_class or use one of {sorted(DEFAULT_COUNTS)}")
        n_per_class = DEFAULT_COUNTS[split]
    n_per_class = int(n_per_class)
    if n_per_class < 0:
        raise ValueError("n_per_class must be >= 0")
    seed = int(seed)
    if seed < 0:
        raise ValueError("seed must be >= 0")
    size = int(size)

    entropy = (seed, _split_key(split))
    n = n_per_class * len(CLASSES)
    images = np.empty((n, size, size), dtype=np.uint8)
    labels = np.empty(n, dtype=np.int64)
    k = 0
    for c in range(len(CLASSES)):
        for i in range(n_per_class):
            ss = np.random.SeedSequence(entropy=entropy, spawn_key=(c, i))
            images[k] = make_phantom(c, size, np.random.default_rng(ss))
            labels[k] = c
            k += 1
    order = np.random.default_rng(np.random.SeedSequence(entropy=entropy, spawn_key=(len(CLASSES), 0))).permutation(n)
    return images[order], labels[order]


# --------------------------------------------------------------------------- #
# the synthetic set written to disk, in the Kaggle layout
# --------------------------------------------------------------------------- #
def write_folder(
    root,
    counts: dict[str, int] | None = None,
    size: int = 96,
    seed: int = 0,
    odd_sizes: bool = True,
) -> Path:
    """Write the synthetic set as real image files: ``root/{train,test}/<class>/<name>.{png,jpg}``.

    The files vary the way a real folder does: PNG and JPEG, 8-bit grayscale and RGB, and (with
    ``odd_sizes``) a few non-square sizes, so the decoder, cache and dataset code run exactly as they do
    on the Kaggle folder. ``counts`` gives images per class per split (default 24 train / 8 test). Files
    are written to a temp name and renamed, so an interrupted call leaves no half-written image.
    Returns ``root``.
    """
    import os

    from PIL import Image

    counts = counts or {"train": 24, "test": 8}
    root = Path(root)
    for split, n in counts.items():
        imgs, labels = make_split(split, size, n_per_class=n, seed=seed)
        for cls in CLASSES:
            (root / split / cls).mkdir(parents=True, exist_ok=True)
        for i, (img, y) in enumerate(zip(imgs, labels.tolist())):
            im = Image.fromarray(img)
            if odd_sizes and i % 5 == 3:  # non-square, as radiographs are
                im = im.resize((size + 17, size - 9), Image.BILINEAR)
            if i % 3 == 1:
                im = im.convert("RGB")
            ext, fmt = (".jpg", "JPEG") if i % 2 else (".png", "PNG")
            out = root / split / CLASSES[y] / f"{split}-{i:05d}{ext}"
            tmp = out.with_name(out.name + ".part")
            im.save(tmp, fmt, **({"quality": 92} if fmt == "JPEG" else {}))
            os.replace(tmp, out)
    return root
