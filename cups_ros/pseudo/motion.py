"""Moving-object instance pseudo-labels from stereo scene flow, in the spirit of SF2SE3 (as in CUPS).

Every pixel with valid scene flow gives a 3D correspondence (P_t(x), P_{t+1}(x + flow(x))). The
camera's own motion (ego-motion) explains the static world; it is found first by RANSAC over
3-point Kabsch fits. Pixels it does not explain - judged against the stereo uncertainty, which grows
with Z^2, so far pixels are not called "moving" for their depth noise - are clustered into rigid
SE(3) motions: proposals from spatially local seeds, a greedy selection by newly explained pixels,
then per-pixel assignment. Each connected, rigid cluster becomes an instance mask. CUPS runs this 8
times with different seeds and keeps only masks that at least 80 % of the runs agree on
(``MotionInstanceSegmenter.segment_ensemble``), which removes most of RANSAC's chance clusters.

Moving-ness is judged in image space by default (``image_residual``): the static world's flow and
disparity at t+1 are predicted from the ego-motion and P_t, the depth noise at t is propagated through
that projection (parallax), and the observed flow / disparity are compared in pixels. Far objects
whose 3D residual drowns in depth noise still move a pixel or more against the static world; the ego
RANSAC is scored the same way (a near-zero motion fits far points within their 3D depth noise, but
not their flow). Found masks grow over depth-continuous pixels (with or without valid scene flow);
flat horizontal masks (road under gross flow errors), implausibly fast motions and split halves of
one object are dropped / merged.

Clustering works on a grid of every ``stride``-th pixel (speed); masks are assigned at full size.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, fields

import cv2
import numpy as np

from cups_ros.core.camera import CameraModel
from cups_ros.geometry.pair import FramePairGeometry

_CHI3_MEDIAN = 1.5382  # median of the norm of a 3D standard normal vector


@dataclass(frozen=True)
class MotionConfig:
    """Knobs of motion-instance pseudo-labelling; plain types so a YAML mapping loads into it.

    Residuals are Mahalanobis distances under the stereo/flow noise model below (unitless: "sigmas").
    """

    # Noise model: depth sigma = Z^2 / (fx B) * disparity_sigma along the viewing ray, lateral sigma
    # = Z / fx * flow_sigma across it, both with an absolute floor (rendering / rounding noise).
    disparity_sigma: float = 0.2  # px, stereo matching noise (prior; adapt_noise rescales it)
    flow_sigma: float = 0.2  # px, optical flow noise (prior)
    min_sigma: float = 0.03  # m, floor of both sigmas
    inlier_threshold: float = 3.0  # residual under which a rigid motion explains a pixel
    moving_threshold: float = 4.0  # ego residual over which a pixel is a moving candidate (>= inlier)
    adapt_noise: bool = True  # rescale the sigmas so the static world's residuals match the model
    min_noise_scale: float = 1.0  # bounds of that rescaling (1: the prior sigmas are a floor)
    max_noise_scale: float = 4.0
    # Grid on which motions are estimated and clustered.
    stride: int = 4  # px between grid samples
    # Ego-motion RANSAC.
    ego_iterations: int = 256  # 3-point hypotheses
    ego_samples: int = 4000  # grid pixels scored per hypothesis
    ego_refine_iterations: int = 3  # inlier re-fits on all grid pixels
    # Fits minimise the anisotropic (Mahalanobis) residual by Gauss-Newton instead of isotropic
    # Kabsch: far points' precise lateral (flow) evidence is not drowned by their depth noise.
    anisotropic_fit: bool = True
    ego_local_refits: int = 8  # best MSAC hypotheses refined before the final choice (LO-RANSAC)
    robust_noise_scale: bool = True  # noise scale from the inlier mode only (gross flow errors ignored)
    # Moving-ness judged in image space: observed (flow, disparity at t+1) minus what the static world
    # would show under the ego-motion, with the depth noise at t propagated through the projection
    # (parallax). Far objects whose 3D residual drowns in depth noise still move ~1 px against it.
    image_residual: bool = True
    image_flow_sigma: float = 0.3  # px, prior flow noise per component (rescaled like the 3D sigmas)
    image_disparity_sigma: float = 0.2  # px, prior disparity noise (at t and t+1)
    image_min_sigma: float = 0.05  # px, floor
    image_smooth: int = 0  # median filter (3 or 5 px; 0 off) of the ego residual field: object motion is
    # spatially coherent, matching noise much less (the noise scale is re-calibrated after filtering)
    image_min_noise_scale: float = 0.25
    image_clustering: bool = True  # rigid motions scored in image space too (fits: anisotropic GN)
    # Rigid motion proposals (SF2SE3-style).
    proposals: int = 64  # seeds drawn among moving candidates
    proposal_iterations: int = 24  # 3-point hypotheses per seed
    seed_radius: int = 8  # grid cells around a seed that form its local neighbourhood
    seed_neighbours: int = 48  # points drawn from the neighbourhood per seed
    min_seed_neighbours: int = 8  # seeds with fewer candidates around are skipped
    max_motions: int = 12  # greedy selection stops after this many motions
    min_new_grid_pixels: int = 20  # ... or when the best proposal explains fewer new grid pixels
    merge_share: float = 0.5  # motion A absorbs B when A explains this share of B's pixels
    open_candidates: bool = True  # 2x2 opening of the moving-candidate grid before seeding
    # Mask cleaning (CUPS: < 64 px or < 0.65 m^2 dropped; depth in [5.5, 70] m).
    closing_radius: int = 2  # px, morphological closing before connected components
    fill_holes: bool = True
    min_mask_pixels: int = 64
    min_surface_m2: float = 0.65
    min_depth: float = 5.5
    max_depth: float = 70.0
    min_valid_fraction: float = 0.3  # of a mask's pixels with valid scene flow; less: unsupported
    # Mask completion: a found mask grows over connected pixels of similar depth (|dZ|/Z under
    # grow_depth_step between neighbours, within grow_depth_range of the mask's median depth), with
    # or without valid scene flow, but not onto pixels the ego-motion explains or another motion owns.
    grow_iterations: int = 12  # px of growth (0: off)
    grow_depth_step: float = 0.05
    grow_depth_range: float = 0.15
    # Implausible motions (gross flow errors): world displacement of the mask's centroid per frame.
    max_object_step: float = 3.0  # m (0: off)
    # Flat, horizontal masks (the road under gross flow errors of a fast ego-motion) are no objects:
    # dropped when their 3D points' plane is within 30 deg of horizontal and thinner than this (0: off).
    max_flat_thickness: float = 0.12  # m
    # Non-rigid movers (pedestrians) no rigid motion explains: compact, depth-consistent connected
    # regions of moving candidates left over by the rigid masks, when at least this large (0: off).
    blob_min_pixels: int = 0
    blob_score: float = 0.3
    # Touching masks merge when the motion of one explains the other's pixels (median residual under
    # merge_residual * inlier_threshold): noisy fits split large near objects otherwise.
    merge_touching: bool = True
    merge_residual: float = 2.0
    # Ensemble (CUPS: 8 runs, >= 80 % agreement).
    ensemble_runs: int = 8
    ensemble_min_share: float = 0.8  # share of runs that must produce a matching mask
    ensemble_iou: float = 0.3  # IoU for two runs' masks to be the same instance
    pixel_vote: float = 0.5  # share of the runs' masks that must cover a pixel of the consensus mask
    seed: int = 0  # base seed; ensemble run i uses seed + i

    def __post_init__(self) -> None:
        positive = ("disparity_sigma", "flow_sigma", "min_sigma", "inlier_threshold", "stride")
        for name in positive:
            if not getattr(self, name) > 0:
                raise ValueError(f"MotionConfig.{name} must be > 0, got {getattr(self, name)}")
        if self.moving_threshold < self.inlier_threshold:
            raise ValueError("MotionConfig.moving_threshold must be >= inlier_threshold")
        for name in ("ego_iterations", "ego_samples", "proposals", "proposal_iterations", "ensemble_runs"):
            if getattr(self, name) < 1:
                raise ValueError(f"MotionConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.seed_neighbours < 3 or self.min_seed_neighbours < 3:
            raise ValueError("MotionConfig.seed_neighbours and min_seed_neighbours must be >= 3")
        for name in ("ensemble_min_share", "ensemble_iou", "pixel_vote", "min_valid_fraction"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"MotionConfig.{name} must lie in [0, 1], got {getattr(self, name)}")
        if not 0 <= self.min_depth < self.max_depth:
            raise ValueError("MotionConfig needs 0 <= min_depth < max_depth")

    @classmethod
    def from_dict(cls, values: dict | None) -> MotionConfig:
        """From a YAML mapping; unknown keys are an error (a typo would silently keep a default)."""
        values = dict(values or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown MotionConfig keys: {', '.join(unknown)}")
        return cls(**values)


@dataclass
class MotionInstances:
    """Moving-object instances of frame t: masks N x H x W, scores N, their motions (cam t -> t+1)."""

    masks: np.ndarray  # N x H x W bool
    scores: np.ndarray  # N float32 in [0, 1]
    motions: np.ndarray  # N x 4 x 4 float64: P_{t+1} = motion @ P_t for the instance's points
    ego_motion: np.ndarray  # 4 x 4 float64: P_{t+1} = ego_motion @ P_t for the static world
    timings: dict[str, float] = field(default_factory=dict)  # seconds

    def __len__(self) -> int:
        return int(self.masks.shape[0])

    def instance_map(self) -> np.ndarray:
        """H x W int32 map, 0 background, i + 1 for mask i (higher scores drawn last, so on top)."""
        out = np.zeros(self.masks.shape[1:], dtype=np.int32)
        for i in np.argsort(self.scores, kind="stable"):
            out[self.masks[i]] = i + 1
        return out


# ----------------------------------------------------------------------------------------------------
# Rigid fits


def kabsch(p: np.ndarray, q: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """Least-squares rigid transforms T (... x 4 x 4) with T p ~ q, for batches ... x N x 3.

    Umeyama/Kabsch via numpy SVD, with the reflection fix; degenerate inputs still give a rotation.
    """
    p = np.asarray(p, dtype=np.float64)
    q = np.asarray(q, dtype=np.float64)
    w = np.ones(p.shape[:-1]) if weights is None else np.asarray(weights, dtype=np.float64)
    wsum = np.maximum(w.sum(-1, keepdims=True), 1e-12)
    cp = (w[..., None] * p).sum(-2) / wsum
    cq = (w[..., None] * q).sum(-2) / wsum
    x = p - cp[..., None, :]
    y = q - cq[..., None, :]
    h = np.einsum("...ni,...n,...nj->...ij", x, w, y)
    u, _, vt = np.linalg.svd(h)
    v = np.swapaxes(vt, -1, -2)
    ut = np.swapaxes(u, -1, -2)
    d = np.sign(np.linalg.det(v @ ut))
    d = np.where(d == 0, 1.0, d)
    fix = np.zeros(h.shape)
    fix[..., 0, 0] = 1.0
    fix[..., 1, 1] = 1.0
    fix[..., 2, 2] = d
    r = v @ fix @ ut
    t = cq - np.einsum("...ij,...j->...i", r, cp)
    out = np.zeros((*h.shape[:-2], 4, 4))
    out[..., :3, :3] = r
    out[..., :3, 3] = t
    out[..., 3, 3] = 1.0
    return out


def _apply(transforms: np.ndarray, points: np.ndarray) -> np.ndarray:
    """transforms M x 4 x 4 (or 4 x 4) applied to points N x 3 -> M x N x 3 (or N x 3)."""
    r = transforms[..., :3, :3].astype(np.float32)
    t = transforms[..., :3, 3].astype(np.float32)
    return np.matmul(points, np.swapaxes(r, -1, -2)) + t[..., None, :]


@dataclass
class _Noise:
    """Per-point noise model: unit viewing ray and inverse squared sigmas along / across it."""

    ray: np.ndarray  # N x 3
    inv_par2: np.ndarray  # N
    inv_perp2: np.ndarray  # N

    def take(self, index: np.ndarray) -> _Noise:
        return _Noise(self.ray[index], self.inv_par2[index], self.inv_perp2[index])

    def scaled(self, scale: float) -> _Noise:
        """Every sigma multiplied by scale."""
        f = np.float32(1.0 / scale**2)
        return _Noise(self.ray, self.inv_par2 * f, self.inv_perp2 * f)


def _noise_model(p: np.ndarray, q: np.ndarray, fx: float, fb: float, config: MotionConfig) -> _Noise:
    zt = np.maximum(p[:, 2], 1e-3)
    zq = np.maximum(q[:, 2], 1e-3)
    norm_q = np.maximum(np.linalg.norm(q, axis=1), 1e-3)
    ray = q / norm_q[:, None]
    sd = np.float32(config.disparity_sigma / fb)
    sigma_z2 = (zt * zt * sd) ** 2 + (zq * zq * sd) ** 2 + np.float32(config.min_sigma**2)
    sigma_par2 = sigma_z2 * (norm_q / zq) ** 2
    sigma_perp2 = 2 * (zq * np.float32(config.flow_sigma / fx)) ** 2 + np.float32(config.min_sigma**2)
    return _Noise(
        ray.astype(np.float32), (1 / sigma_par2).astype(np.float32), (1 / sigma_perp2).astype(np.float32)
    )


def _residual2(error: np.ndarray, noise: _Noise) -> np.ndarray:
    """Squared Mahalanobis residual of errors (... x N x 3) under the per-point noise (N)."""
    along = np.einsum("...ni,ni->...n", error, noise.ray)
    total = np.einsum("...ni,...ni->...n", error, error)
    return along * along * (noise.inv_par2 - noise.inv_perp2) + total * noise.inv_perp2


def _image_r2(
    transforms: np.ndarray,
    p: np.ndarray,
    q: np.ndarray,
    fx: float,
    fy: float,
    fb: float,
    config: MotionConfig,
    scale: float = 1.0,
    smooth=None,
) -> np.ndarray:
    """Squared Mahalanobis residual in pixel space (u, v, disparity at t+1) of the observation q
    against the projection of transforms @ p (M x 4 x 4 or 4 x 4 -> M x N or N). The depth noise at t
    enters as a rank-1 covariance along d(projection)/dZ_t (Sherman-Morrison)."""
    y = _apply(transforms, p)
    yz = np.maximum(y[..., 2], 0.1)
    qz = np.maximum(q[..., 2], 0.1)
    zt = np.maximum(p[..., 2], 0.1)
    inv_y = 1 / yz
    ru = np.float32(fx) * (q[..., 0] / qz - y[..., 0] * inv_y)
    rv = np.float32(fy) * (q[..., 1] / qz - y[..., 1] * inv_y)
    rd = np.float32(fb) * (1 / qz - inv_y)
    # d y / d Z_t = R p / Z_t = (y - t) / Z_t
    t = transforms[..., :3, 3].astype(np.float32)
    dy = (y - t[..., None, :]) / zt[..., None]
    ju = np.float32(fx) * inv_y * (dy[..., 0] - y[..., 0] * inv_y * dy[..., 2])
    jv = np.float32(fy) * inv_y * (dy[..., 1] - y[..., 1] * inv_y * dy[..., 2])
    jd = -np.float32(fb) * inv_y * inv_y * dy[..., 2]
    floor2 = config.image_min_sigma**2
    wf = np.float32(1 / ((config.image_flow_sigma**2 + floor2) * scale**2))
    wd = np.float32(1 / ((config.image_disparity_sigma**2 + floor2) * scale**2))
    sz2 = (zt * zt * np.float32(config.image_disparity_sigma * scale / fb)) ** 2
    if smooth is not None:
        ru, rv, rd = smooth(ru), smooth(rv), smooth(rd)
    m2 = wf * (ru * ru + rv * rv) + wd * rd * rd
    jr = wf * (ju * ru + jv * rv) + wd * jd * rd
    jj = wf * (ju * ju + jv * jv) + wd * jd * jd
    # Non-negative in exact arithmetic; float32 rounding can dip below 0 where residuals vanish,
    # and a negative median would turn the noise scale into NaN.
    out = np.maximum(m2 - sz2 * jr * jr / (1 + sz2 * jj), np.float32(0))
    # Points sent to (or behind) the camera: the linearised depth term would explain anything.
    return np.where(y[..., 2] > 0.5, out, np.float32(1e6))


def _refine_se3(
    transform: np.ndarray,
    p: np.ndarray,
    q: np.ndarray,
    noise: _Noise,
    thr2: float,
    iterations: int = 3,
) -> np.ndarray:
    """Gauss-Newton on SE(3) (left perturbation) of the Mahalanobis residual of the points with
    residual under thr2 (re-selected each step: a truncated-quadratic, MSAC-consistent cost)."""
    best = np.array(transform, dtype=np.float64)
    p64 = p.astype(np.float64)
    for _ in range(iterations):
        y = p64 @ best[:3, :3].T + best[:3, 3]
        e = y - q
        r2 = _residual2(e.astype(np.float32), noise)
        inl = r2 < thr2
        if inl.sum() < 6:
            break
        y, e = y[inl], e[inl]
        ray = noise.ray[inl].astype(np.float64)
        a = noise.inv_perp2[inl].astype(np.float64)
        b = noise.inv_par2[inl].astype(np.float64) - a
        n = len(y)
        jac = np.zeros((n, 3, 6))
        jac[:, 0, 1], jac[:, 0, 2] = y[:, 2], -y[:, 1]
        jac[:, 1, 0], jac[:, 1, 2] = -y[:, 2], y[:, 0]
        jac[:, 2, 0], jac[:, 2, 1] = y[:, 1], -y[:, 0]
        jac[:, 0, 3] = jac[:, 1, 4] = jac[:, 2, 5] = 1.0
        rj = np.einsum("nk,nkj->nj", ray, jac)  # n x 6
        re = np.einsum("nk,nk->n", ray, e)
        h = np.einsum("n,nki,nkj->ij", a, jac, jac) + np.einsum("n,ni,nj->ij", b, rj, rj)
        g = np.einsum("n,nki,nk->i", a, jac, e) + np.einsum("n,ni,n->i", b, rj, re)
        try:
            xi = -np.linalg.solve(h + 1e-9 * np.trace(h) * np.eye(6), g)
        except np.linalg.LinAlgError:
            break
        rot, _ = cv2.Rodrigues(xi[:3].reshape(3, 1))
        step = np.eye(4)
        step[:3, :3] = rot
        step[:3, 3] = xi[3:]
        best = step @ best
        if np.linalg.norm(xi) < 1e-7:
            break
    return best


# ----------------------------------------------------------------------------------------------------
# Input checks and camera recovery


def _check_pair(pair: FramePairGeometry) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(points_t, points at t+1, valid) after checks that name what is wrong."""
    points = np.asarray(pair.frame_t.points)
    flow3 = np.asarray(pair.scene_flow)
    valid = np.asarray(pair.scene_flow_valid)
    if points.ndim != 3 or points.shape[2] != 3:
        raise ValueError(f"frame_t.points must be H x W x 3, got shape {points.shape}")
    height, width = points.shape[:2]
    if flow3.shape != points.shape:
        raise ValueError(f"scene_flow shape {flow3.shape} does not match frame_t.points {points.shape}")
    if valid.shape != (height, width):
        raise ValueError(f"scene_flow_valid shape {valid.shape} does not match the image {height}x{width}")
    if valid.dtype != bool:
        raise ValueError(f"scene_flow_valid must be a bool mask, got dtype {valid.dtype}")
    depth = np.asarray(pair.frame_t.depth)
    if depth.shape != (height, width):
        raise ValueError(f"frame_t.depth shape {depth.shape} does not match the image {height}x{width}")
    if not np.isfinite(points[valid]).all():
        raise ValueError("frame_t.points has NaN or inf values where scene_flow_valid is True")
    if not np.isfinite(flow3[valid]).all():
        raise ValueError("scene_flow has NaN or inf values where scene_flow_valid is True")
    if valid.sum() < 3:
        raise ValueError("scene_flow_valid is (almost) all False: no 3D correspondences to fit motions to")
    if (points[..., 2][valid] <= 0).any():
        raise ValueError("frame_t.points has non-positive depth (Z) where scene_flow_valid is True")
    return points, points + flow3, valid


def _camera_constants(
    pair: FramePairGeometry, points: np.ndarray, valid: np.ndarray, camera: CameraModel | None
) -> tuple[float, float, float]:
    """(fx, fy, fx * baseline): from the camera model, else recovered from points and disparity."""
    if camera is not None:
        return camera.fx, camera.fy, camera.fx * camera.baseline
    ys, xs = np.nonzero(valid)
    step = max(1, len(ys) // 5000)
    ys, xs = ys[::step], xs[::step]
    p = points[ys, xs].astype(np.float64)
    a = np.stack([p[:, 0] / p[:, 2], np.ones(len(p))], 1)
    fx = float(np.linalg.lstsq(a, xs.astype(np.float64), rcond=None)[0][0])
    a[:, 0] = p[:, 1] / p[:, 2]
    fy = float(np.linalg.lstsq(a, ys.astype(np.float64), rcond=None)[0][0])
    disparity = np.asarray(pair.frame_t.disparity.disparity)[ys, xs]
    good = disparity > 0
    if fx <= 0 or fy <= 0 or not good.any():
        raise ValueError("cannot recover fx, fy and baseline from the pair; pass camera=CameraModel")
    fb = float(np.median(p[good, 2] * disparity[good]))
    return fx, fy, fb


# ----------------------------------------------------------------------------------------------------
# Mask cleaning


def _disk(radius: int) -> np.ndarray:
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))


def _fill_holes(mask: np.ndarray) -> np.ndarray:
    """Holes (background regions not reaching the crop's border) filled, on a 1-px padded crop."""
    padded = np.pad(mask.astype(np.uint8), 1)
    count, labels = cv2.connectedComponents(1 - padded, connectivity=4)
    if count <= 2:
        return mask
    outside = labels[0, 0]
    filled = (labels != outside)[1:-1, 1:-1]
    return filled


@dataclass
class _Prepared:
    """What every run of one pair shares: checked full-size arrays, grid samples, noise models."""

    height: int
    width: int
    fx: float
    fy: float
    fb: float
    p_full: np.ndarray  # M x 3 valid full-size points at t
    q_full: np.ndarray  # M x 3 their t+1 points
    idx_full: np.ndarray  # M flat pixel indices
    noise_full: _Noise
    grid_sel: np.ndarray  # indices into the full arrays of the grid samples
    grid_rc: np.ndarray  # G x 2 grid (row, col) of the grid samples
    grid_shape: tuple[int, int]
    depth_raw: np.ndarray  # H x W depth from the disparity, before range limits (0 invalid)
    timings: dict[str, float]


class MotionInstanceSegmenter:
    """SF2SE3-style rigid motion segmentation of one frame pair into moving-object instance masks."""

    def __init__(self, config: MotionConfig | None = None) -> None:
        self.config = config or MotionConfig()
        self._image_scale = 1.0  # image-space noise scale of the current run (set by _run)

    # -- shared preparation ---------------------------------------------------------------------------
    def _prepare(self, pair: FramePairGeometry, camera: CameraModel | None) -> _Prepared:
        start = time.perf_counter()
        cfg = self.config
        points, target, valid = _check_pair(pair)
        height, width = valid.shape
        fx, fy, fb = _camera_constants(pair, points, valid, camera)
        idx_full = np.flatnonzero(valid)
        p_full = points.reshape(-1, 3)[idx_full].astype(np.float32)
        q_full = target.reshape(-1, 3)[idx_full].astype(np.float32)
        noise_full = _noise_model(p_full, q_full, fx, fb, cfg)
        rows, cols = np.divmod(idx_full, width)
        s = cfg.stride
        on_grid = (rows % s == 0) & (cols % s == 0)
        grid_sel = np.flatnonzero(on_grid)
        grid_rc = np.stack([rows[grid_sel] // s, cols[grid_sel] // s], 1)
        grid_shape = ((height + s - 1) // s, (width + s - 1) // s)
        disparity = np.asarray(pair.frame_t.disparity.disparity, dtype=np.float32)
        if disparity.shape != (height, width):
            raise ValueError(f"frame_t disparity shape {disparity.shape} does not match {height}x{width}")
        depth_raw = np.where(disparity > 0, np.float32(fb) / np.maximum(disparity, 1e-6), 0).astype(
            np.float32
        )
        timings = {"prepare": time.perf_counter() - start}
        return _Prepared(
            height,
            width,
            fx,
            fy,
            fb,
            p_full,
            q_full,
            idx_full,
            noise_full,
            grid_sel,
            grid_rc,
            grid_shape,
            depth_raw,
            timings,
        )

    # -- ego-motion -----------------------------------------------------------------------------------
    def _ego_motion(self, prep: _Prepared, rng: np.random.Generator) -> tuple[np.ndarray, float]:
        """RANSAC of 3-point Kabsch fits on grid pixels, refined on inliers of all grid pixels."""
        cfg = self.config
        sel = prep.grid_sel if len(prep.grid_sel) >= 3 else np.arange(len(prep.p_full))
        p, q, noise = prep.p_full[sel], prep.q_full[sel], prep.noise_full.take(sel)
        n = len(p)
        score_idx = rng.choice(n, size=min(cfg.ego_samples, n), replace=False)
        triples = rng.integers(0, n, size=(cfg.ego_iterations, 3))
        hyps = kabsch(p[triples], q[triples])
        thr2 = np.float32(cfg.inlier_threshold**2)
        if cfg.image_residual:
            # Hypotheses scored in pixel space: a near-zero motion fits far points within their 3D
            # depth noise, but not their flow (fast ego-motion with gross near-field flow errors).
            def score(tr: np.ndarray, pp: np.ndarray, qq: np.ndarray, _nn: _Noise) -> np.ndarray:
                return _image_r2(tr, pp, qq, prep.fx, prep.fy, prep.fb, cfg)
        else:

            def score(tr: np.ndarray, pp: np.ndarray, qq: np.ndarray, nn: _Noise) -> np.ndarray:
                return _residual2(_apply(tr, pp) - qq, nn)

        r2 = score(hyps, p[score_idx], q[score_idx], noise.take(score_idx))
        # MSAC: truncated cost, less sensitive to the threshold than inlier counting.
        cost = np.minimum(r2, thr2).sum(1)
        best = hyps[int(np.argmin(cost))]
        weights = np.sqrt(noise.inv_par2 * noise.inv_perp2)
        if cfg.anisotropic_fit and cfg.ego_local_refits > 0:
            # LO-RANSAC: 3-point fits of far points are poor (depth noise ~ Z^2); refine the best few
            # on the scoring sample before choosing.
            ps, qs, ns = p[score_idx], q[score_idx], noise.take(score_idx)
            top = np.argsort(cost)[: cfg.ego_local_refits]
            refined = np.stack([_refine_se3(hyps[j], ps, qs, ns, thr2, 3) for j in top])
            rcost = np.minimum(score(refined, ps, qs, ns), thr2).sum(1)
            best = refined[int(np.argmin(rcost))]
        scale = 1.0
        for i in range(cfg.ego_refine_iterations + 2):
            r2 = _residual2(_apply(best, p) - q, noise)
            if i >= cfg.ego_refine_iterations and cfg.adapt_noise:
                # The static world's residual spread calibrates the noise model to this data (the
                # median of a 3D Mahalanobis norm is 1.54 when the sigmas are right).
                if cfg.robust_noise_scale:
                    # Median of the residuals under a generous threshold of the current scale (a
                    # self-consistent estimate of the inlier mode; gross flow errors, e.g. of fast
                    # near ground, would otherwise inflate it; truncation at 6 sigma hardly moves it).
                    for _ in range(3):
                        keep = r2 < (2 * cfg.inlier_threshold * scale) ** 2
                        if keep.sum() < 3:
                            break
                        scale = float(
                            np.clip(
                                np.sqrt(np.median(r2[keep])) / _CHI3_MEDIAN,
                                cfg.min_noise_scale,
                                cfg.max_noise_scale,
                            )
                        )
                else:
                    scale = float(
                        np.clip(
                            np.sqrt(np.median(r2)) / _CHI3_MEDIAN, cfg.min_noise_scale, cfg.max_noise_scale
                        )
                    )
            inl = r2 < thr2 * scale**2
            if inl.sum() < 3:
                break
            if cfg.anisotropic_fit:
                best = _refine_se3(best, p, q, noise, float(thr2 * scale**2), 2)
            else:
                best = kabsch(p[inl], q[inl], weights[inl])
        return best, scale

    # -- one run --------------------------------------------------------------------------------------
    def _run(self, prep: _Prepared, seed: int) -> MotionInstances:
        cfg = self.config
        timings: dict[str, float] = dict(prep.timings)
        rng = np.random.default_rng(seed)
        t0 = time.perf_counter()
        ego, scale = self._ego_motion(prep, rng)
        noise = prep.noise_full.scaled(scale)
        ego_r2_full = _residual2(_apply(ego, prep.p_full) - prep.q_full, noise)
        timings["noise_scale"] = scale
        self._image_scale = 1.0
        if cfg.image_residual:
            ego_r2_full, self._image_scale = self._image_ego_r2(prep, ego)
            timings["image_noise_scale"] = self._image_scale
        t1 = time.perf_counter()
        timings["ego_motion"] = t1 - t0

        motions = self._cluster(prep, noise, ego_r2_full, rng)
        t2 = time.perf_counter()
        timings["clustering"] = t2 - t1

        masks, scores, mask_motions = self._assign(prep, noise, ego_r2_full, motions, ego)
        if cfg.blob_min_pixels > 0:
            masks, scores, mask_motions = self._blobs(prep, ego_r2_full, ego, masks, scores, mask_motions)
        timings["masks"] = time.perf_counter() - t2
        timings["total"] = sum(timings[k] for k in ("prepare", "ego_motion", "clustering", "masks"))
        return MotionInstances(masks, scores, mask_motions, ego, timings)

    def _image_ego_r2(self, prep: _Prepared, ego: np.ndarray) -> tuple[np.ndarray, float]:
        """Image-space ego residual, its noise scale calibrated on the static world's inlier mode."""
        cfg = self.config
        smooth = None
        if cfg.image_smooth > 0:
            h, w, idx = prep.height, prep.width, prep.idx_full
            ksize = 3 if cfg.image_smooth <= 3 else 5

            def smooth(values: np.ndarray) -> np.ndarray:
                img = np.zeros(h * w, np.float32)
                img[idx] = values
                return cv2.medianBlur(img.reshape(h, w), ksize).reshape(-1)[idx]

        r2 = _image_r2(ego, prep.p_full, prep.q_full, prep.fx, prep.fy, prep.fb, cfg, 1.0, smooth)
        lo = cfg.image_min_noise_scale if smooth is not None else cfg.min_noise_scale
        scale = 1.0
        if cfg.adapt_noise:
            for _ in range(3):
                keep = r2 < (2 * cfg.inlier_threshold * scale) ** 2
                if keep.sum() < 3:
                    break
                scale = float(np.clip(np.sqrt(np.median(r2[keep])) / _CHI3_MEDIAN, lo, cfg.max_noise_scale))
        return r2 / np.float32(scale**2), scale

    def _resid(self, prep: _Prepared, transforms: np.ndarray, p: np.ndarray, q: np.ndarray, noise: _Noise):
        """Squared residual of correspondences under motions: image-space or 3D Mahalanobis."""
        if self.config.image_residual and self.config.image_clustering:
            return _image_r2(transforms, p, q, prep.fx, prep.fy, prep.fb, self.config, self._image_scale)
        return _residual2(_apply(transforms, p) - q, noise)

    def _cluster(
        self, prep: _Prepared, noise_full: _Noise, ego_r2_full: np.ndarray, rng: np.random.Generator
    ) -> list[np.ndarray]:
        """Rigid motions of the pixels ego-motion leaves unexplained (greedy SF2SE3-style selection)."""
        cfg = self.config
        mov2 = np.float32(cfg.moving_threshold**2)
        thr2 = np.float32(cfg.inlier_threshold**2)
        cand = prep.grid_sel[ego_r2_full[prep.grid_sel] > mov2]
        if len(cand) < cfg.min_new_grid_pixels or len(cand) < cfg.min_seed_neighbours:
            return []
        moving = ego_r2_full[prep.grid_sel] > mov2
        rc = prep.grid_rc[moving]
        gh, gw = prep.grid_shape
        cand_img = np.zeros((gh, gw), np.uint8)
        cand_img[rc[:, 0], rc[:, 1]] = 1
        # Opening removes the speckle of heavy-tailed stereo noise; seeds then go to the compact
        # candidate regions that remain, more to larger ones (random seeds would mostly hit speckle).
        opened = (
            cv2.morphologyEx(cand_img, cv2.MORPH_OPEN, np.ones((2, 2), np.uint8))
            if cfg.open_candidates
            else cand_img
        )
        _count, comp, stats, _ = cv2.connectedComponentsWithStats(opened, connectivity=8)
        keep_rc = opened[rc[:, 0], rc[:, 1]] > 0
        cand, rc = cand[keep_rc], rc[keep_rc]
        cand_comp = comp[rc[:, 0], rc[:, 1]]
        sizes = stats[:, cv2.CC_STAT_AREA].copy()
        sizes[0] = 0
        regions = np.flatnonzero(sizes >= cfg.min_new_grid_pixels)
        if len(regions) == 0:
            return []
        index_img = np.full((gh, gw), -1, np.int64)
        index_img[rc[:, 0], rc[:, 1]] = np.arange(len(cand))
        p, q = prep.p_full[cand], prep.q_full[cand]
        noise = noise_full.take(cand)

        share = sizes[regions] / sizes[regions].sum()
        per_region = np.maximum(1, np.round(share * cfg.proposals)).astype(int)
        seed_list = []
        for region, n_seeds in zip(regions, per_region, strict=True):
            members = np.flatnonzero(cand_comp == region)
            seed_list.append(rng.choice(members, size=min(int(n_seeds), len(members)), replace=False))
        seeds = np.concatenate(seed_list)
        rad = cfg.seed_radius
        k = cfg.seed_neighbours
        neigh = np.zeros((len(seeds), k), np.int64)
        keep = np.zeros(len(seeds), bool)
        for i, s in enumerate(seeds):
            r, c = rc[s]
            win = index_img[max(r - rad, 0) : r + rad + 1, max(c - rad, 0) : c + rad + 1]
            wcomp = comp[max(r - rad, 0) : r + rad + 1, max(c - rad, 0) : c + rad + 1]
            members = win[(win >= 0) & (wcomp == cand_comp[s])]
            if len(members) < cfg.min_seed_neighbours:
                continue
            keep[i] = True
            neigh[i] = rng.choice(members, size=k, replace=len(members) < k)
        seeds, neigh = seeds[keep], neigh[keep]
        if len(seeds) == 0:
            return []
        m = len(seeds)
        it = cfg.proposal_iterations
        pick = rng.integers(0, k, size=(m, it, 3))
        local = np.take_along_axis(neigh[:, None, :], pick.reshape(m, 1, -1), axis=2).reshape(m, it, 3)
        hyps = kabsch(p[local], q[local])  # m x it x 4 x 4
        # Score each hypothesis on its own neighbourhood.
        pn, qn = p[neigh], q[neigh]  # m x k x 3
        image_fit = cfg.image_residual and cfg.image_clustering
        if image_fit:
            r2 = self._resid(prep, hyps, pn[:, None], qn[:, None], noise)
        else:
            r = hyps[..., :3, :3].astype(np.float32)
            t = hyps[..., :3, 3].astype(np.float32)
            moved = np.einsum("mhij,mkj->mhki", r, pn) + t[:, :, None, :]
            err = moved - qn[:, None]
            nn = noise.take(neigh.ravel())
            along = np.einsum("mhki,mki->mhk", err, nn.ray.reshape(m, k, 3))
            total = np.einsum("mhki,mhki->mhk", err, err)
            r2 = along**2 * (nn.inv_par2 - nn.inv_perp2).reshape(m, 1, k) + total * nn.inv_perp2.reshape(
                m, 1, k
            )
        cost = np.minimum(r2, thr2).sum(2)
        best = hyps[np.arange(m), np.argmin(cost, axis=1)]  # m x 4 x 4
        # Refine each proposal on the inliers of its seed's region, then on global inliers there.
        weights = np.sqrt(noise.inv_par2 * noise.inv_perp2)
        same_region = cand_comp[None, :] == cand_comp[seeds][:, None]  # m x C
        for _ in range(2):
            r2_all = self._resid(prep, best, p, q, noise)  # m x C
            inl = (r2_all < thr2) & same_region
            w = inl * weights[None]
            ok = inl.sum(1) >= 3
            if image_fit:
                # Pixel-precise motions need the anisotropic fit (far points: depth noise >> lateral).
                loose = (r2_all < 4 * thr2) & same_region
                for j in np.flatnonzero(loose.sum(1) >= 6):
                    sel = np.flatnonzero(loose[j])
                    if len(sel) > 256:  # speed: a fixed subsample suffices for 6 parameters
                        sel = sel[:: int(np.ceil(len(sel) / 256))]
                    best[j] = _refine_se3(best[j], p[sel], q[sel], noise.take(sel), 1e12, 2)
            elif ok.any():
                best[ok] = kabsch(
                    np.broadcast_to(p, (int(ok.sum()), *p.shape)),
                    np.broadcast_to(q, (int(ok.sum()), *q.shape)),
                    w[ok],
                )
        r2_all = self._resid(prep, best, p, q, noise)
        inl = r2_all < thr2
        # Greedy selection by newly explained pixels (of the proposal's own region: spatial coherence).
        explained = np.zeros(len(cand), bool)
        chosen: list[np.ndarray] = []
        gain_mask = inl & same_region
        while len(chosen) < cfg.max_motions:
            gains = (gain_mask & ~explained[None]).sum(1)
            j = int(np.argmax(gains))
            if gains[j] < cfg.min_new_grid_pixels:
                break
            chosen.append(j)
            explained |= inl[j]
        return self._merge(
            best[chosen], inl[chosen], r2_all[chosen], p, q, weights, noise if image_fit else None
        )

    def _merge(
        self,
        motions: np.ndarray,
        inl: np.ndarray,
        r2: np.ndarray,
        p: np.ndarray,
        q: np.ndarray,
        weights: np.ndarray,
        noise: _Noise | None = None,
    ) -> list[np.ndarray]:
        """Motions merged while one explains most pixels assigned to another (noisy local fits split
        one large object into several near-identical motions otherwise); each refit on its pixels."""
        cfg = self.config
        groups = [[i] for i in range(len(motions))]
        if len(motions) > 1:
            owner = np.argmin(np.where(inl, r2, np.inf), axis=0)
            owned = [(owner == i) & inl[i] for i in range(len(motions))]
            changed = True
            while changed:
                changed = False
                for a in range(len(groups)):
                    for b in range(len(groups)):
                        if a == b or not groups[a] or not groups[b]:
                            continue
                        pix_b = np.any([owned[i] for i in groups[b]], axis=0)
                        if pix_b.sum() == 0:
                            continue
                        share = np.mean([inl[i][pix_b].mean() for i in groups[a]])
                        if share >= cfg.merge_share:
                            groups[a] = groups[a] + groups[b]
                            groups[b] = []
                            changed = True
        out = []
        for group in groups:
            if not group:
                continue
            pix = np.any([inl[i] for i in group], axis=0)
            fit = motions[group[0]]
            if pix.sum() >= 3:
                fit = kabsch(p[pix], q[pix], weights[pix])
                if noise is not None:
                    sel = np.flatnonzero(pix)
                    fit = _refine_se3(motions[group[0]], p[sel], q[sel], noise.take(sel), 1e12, 3)
            out.append(fit)
        return out

    def _assign(
        self,
        prep: _Prepared,
        noise_full: _Noise,
        ego_r2_full: np.ndarray,
        motions: list[np.ndarray],
        ego: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Full-size assignment of candidate pixels to motions; connected clusters become masks."""
        cfg = self.config
        h, w = prep.height, prep.width
        empty = (np.zeros((0, h, w), bool), np.zeros(0, np.float32), np.zeros((0, 4, 4)))
        if not motions:
            return empty
        mov2 = np.float32(cfg.moving_threshold**2)
        thr2 = np.float32(cfg.inlier_threshold**2)
        cand = np.flatnonzero(ego_r2_full > mov2)
        if len(cand) == 0:
            return empty
        stack = np.stack(motions)
        r2 = self._resid(prep, stack, prep.p_full[cand], prep.q_full[cand], noise_full.take(cand))
        label = np.argmin(r2, axis=0)
        best_r2 = r2[label, np.arange(len(cand))]
        ok = best_r2 < thr2
        label_img = np.zeros(h * w, np.int32)
        label_img[prep.idx_full[cand[ok]]] = label[ok] + 1
        label_img = label_img.reshape(h, w)
        valid_img = np.zeros(h * w, bool)
        valid_img[prep.idx_full] = True
        valid_img = valid_img.reshape(h, w)
        ego_r_img = np.zeros(h * w, np.float32)
        ego_r_img[prep.idx_full] = np.sqrt(
            np.maximum(ego_r2_full, 0.0)
        )  # rounding can make r2 slightly negative
        ego_r_img = ego_r_img.reshape(h, w)
        blocked = None
        if cfg.grow_iterations > 0:
            blocked = np.zeros(h * w, bool)
            blocked[prep.idx_full[ego_r2_full < thr2]] = True
            blocked = blocked.reshape(h, w)

        masks, scores, mask_motions = [], [], []
        kernel = _disk(cfg.closing_radius) if cfg.closing_radius > 0 else None
        for j in range(len(motions)):
            raw = (label_img == j + 1).astype(np.uint8)
            if raw.sum() < cfg.min_mask_pixels // 2:
                continue
            closed = cv2.morphologyEx(raw, cv2.MORPH_CLOSE, kernel) if kernel is not None else raw
            count, comps, stats, _ = cv2.connectedComponentsWithStats(closed, connectivity=8)
            for c in range(1, count):
                x, y, bw, bh, area = stats[c]
                if area < cfg.min_mask_pixels:
                    continue
                crop = comps[y : y + bh, x : x + bw] == c
                mask = self._clean(crop, prep, y, x)
                if mask is None:
                    continue
                full = np.zeros((h, w), bool)
                full[y : y + bh, x : x + bw] = mask
                support = raw[y : y + bh, x : x + bw][mask]
                valid_here = valid_img[y : y + bh, x : x + bw][mask]
                if valid_here.mean() < cfg.min_valid_fraction or support.sum() < cfg.min_mask_pixels // 2:
                    continue
                rigid_share = support.sum() / max(valid_here.sum(), 1)
                resid = ego_r_img[y : y + bh, x : x + bw][mask & (raw[y : y + bh, x : x + bw] > 0)]
                strength = 1.0 - np.exp(-np.median(resid) / (2 * cfg.moving_threshold))
                if cfg.max_object_step > 0 and ego is not None:
                    sel = np.flatnonzero(full.reshape(-1)[prep.idx_full])
                    c = np.median(prep.p_full[sel], axis=0) if len(sel) else np.zeros(3, np.float32)
                    step = _apply(motions[j], c[None]) - _apply(ego, c[None])
                    if float(np.linalg.norm(step)) > cfg.max_object_step:
                        continue
                if cfg.max_flat_thickness > 0 and self._flat(full, prep):
                    continue
                if blocked is not None:
                    full = self._grow(full, prep, blocked | ((label_img > 0) & (label_img != j + 1)))
                masks.append(full)
                scores.append(float(np.clip(rigid_share, 0, 1) * strength))
                mask_motions.append(motions[j])
        if not masks:
            return empty
        if cfg.merge_touching and len(masks) > 1:
            masks, scores, mask_motions = self._merge_touching(prep, noise_full, masks, scores, mask_motions)
        return np.stack(masks), np.asarray(scores, np.float32), np.stack(mask_motions)

    def _merge_touching(
        self, prep: _Prepared, noise_full: _Noise, masks: list, scores: list, motions: list
    ) -> tuple[list, list, list]:
        cfg = self.config
        lim = (cfg.merge_residual * cfg.inlier_threshold) ** 2
        kernel = np.ones((5, 5), np.uint8)
        sels = [np.flatnonzero(m.reshape(-1)[prep.idx_full]) for m in masks]
        alive = list(range(len(masks)))
        changed = True
        while changed:
            changed = False
            for a in alive:
                grown = cv2.dilate(masks[a].astype(np.uint8), kernel) > 0
                for b in alive:
                    if b == a or not (grown & masks[b]).any() or len(sels[b]) < 3:
                        continue
                    sb = sels[b]
                    r2 = self._resid(prep, motions[a], prep.p_full[sb], prep.q_full[sb], noise_full.take(sb))
                    if float(np.median(r2)) < lim:
                        masks[a] = masks[a] | masks[b]
                        sels[a] = np.union1d(sels[a], sb)
                        scores[a] = max(scores[a], scores[b])
                        alive.remove(b)
                        changed = True
                        break
                if changed:
                    break
        return [masks[i] for i in alive], [scores[i] for i in alive], [motions[i] for i in alive]

    def _blobs(
        self,
        prep: _Prepared,
        ego_r2_full: np.ndarray,
        ego: np.ndarray,
        masks: np.ndarray,
        scores: np.ndarray,
        motions: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        cfg = self.config
        h, w = prep.height, prep.width
        cand = np.zeros(h * w, np.uint8)
        cand[prep.idx_full[ego_r2_full > np.float32(cfg.moving_threshold**2)]] = 1
        cand = cand.reshape(h, w)
        if len(masks):
            taken = cv2.dilate(masks.any(0).astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
            cand[taken] = 0
        cand = cv2.morphologyEx(cand, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
        if cfg.closing_radius > 0:
            cand = cv2.morphologyEx(cand, cv2.MORPH_CLOSE, _disk(cfg.closing_radius))
        count, comps, stats, _ = cv2.connectedComponentsWithStats(cand, connectivity=8)
        new_m, new_s, new_t = list(masks), list(scores), list(motions)
        d = prep.depth_raw
        for c in range(1, count):
            x, y, bw, bh, area = stats[c]
            if area < cfg.blob_min_pixels:
                continue
            crop = comps[y : y + bh, x : x + bw] == c
            z = d[y : y + bh, x : x + bw][crop]
            z = z[z > 0]
            if len(z) < cfg.min_mask_pixels:
                continue
            zmed = float(np.median(z))
            # depth-consistent: a single object, not a band of scattered outliers
            if np.mean(np.abs(z - zmed) < 0.1 * zmed) < 0.7:
                continue
            mask = self._clean(crop, prep, y, x)
            if mask is None:
                continue
            full = np.zeros((h, w), bool)
            full[y : y + bh, x : x + bw] = mask
            if self._flat(full, prep):
                continue
            sel = np.flatnonzero(full.reshape(-1)[prep.idx_full])
            new_m.append(full)
            new_s.append(cfg.blob_score)
            new_t.append(kabsch(prep.p_full[sel], prep.q_full[sel]) if len(sel) >= 3 else ego)
        if len(new_m) == len(masks):
            return masks, scores, motions
        return np.stack(new_m), np.asarray(new_s, np.float32), np.stack(new_t)

    def _flat(self, full: np.ndarray, prep: _Prepared) -> bool:
        """The mask's valid 3D points lie on a thin, near-horizontal plane."""
        sel = np.flatnonzero(full.reshape(-1)[prep.idx_full])
        if len(sel) < 10:
            return False
        pts = prep.p_full[sel[:: max(1, len(sel) // 2000)]].astype(np.float64)
        pts = pts - np.median(pts, axis=0)
        _, sv, vt = np.linalg.svd(pts, full_matrices=False)
        normal = vt[-1]
        thickness = sv[-1] / np.sqrt(len(pts))
        return bool(abs(normal[1]) > 0.866 and thickness < self.config.max_flat_thickness)

    def _grow(self, full: np.ndarray, prep: _Prepared, blocked: np.ndarray) -> np.ndarray:
        """Geodesic growth of a mask over depth-continuous, unblocked pixels; holes filled."""
        cfg = self.config
        ys, xs = np.nonzero(full)
        g = cfg.grow_iterations
        y0, y1 = max(ys.min() - g, 0), min(ys.max() + g + 1, prep.height)
        x0, x1 = max(xs.min() - g, 0), min(xs.max() + g + 1, prep.width)
        m = full[y0:y1, x0:x1].astype(np.uint8)
        d = prep.depth_raw[y0:y1, x0:x1]
        zmed = float(np.median(d[(m > 0) & (d > 0)])) if ((m > 0) & (d > 0)).any() else 0.0
        allowed = (d > 0) & ~blocked[y0:y1, x0:x1] & (np.abs(d - zmed) < cfg.grow_depth_range * zmed)
        kernel = np.ones((3, 3), np.uint8)
        for _ in range(g):
            ring = (cv2.dilate(m, kernel) > 0) & (m == 0) & allowed
            if not ring.any():
                break
            mf = m.astype(np.float32)
            ref = cv2.boxFilter(d * mf, -1, (3, 3), normalize=False) / np.maximum(
                cv2.boxFilter(mf, -1, (3, 3), normalize=False), 1e-6
            )
            acc = ring & (np.abs(d - ref) < cfg.grow_depth_step * ref)
            if not acc.any():
                break
            m[acc] = 1
        out = np.zeros_like(full)
        out[y0:y1, x0:x1] = _fill_holes(m > 0) if cfg.fill_holes else m > 0
        return out | full

    def _clean(self, crop: np.ndarray, prep: _Prepared, y: int, x: int) -> np.ndarray | None:
        """Holes filled, depth kept in range, small parts and small surfaces dropped (or None)."""
        cfg = self.config
        mask = _fill_holes(crop) if cfg.fill_holes else crop
        depth = prep.depth_raw[y : y + mask.shape[0], x : x + mask.shape[1]]
        out_of_range = (depth > 0) & ((depth < cfg.min_depth) | (depth > cfg.max_depth))
        mask = mask & ~out_of_range
        if mask.sum() < cfg.min_mask_pixels:
            return None
        count, comps, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
        if count > 2:
            largest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
            mask = comps == largest
        if mask.sum() < cfg.min_mask_pixels:
            return None
        z = depth[mask]
        z_ok = z[z > 0]
        if len(z_ok) == 0:
            return None
        z = np.where(z > 0, z, np.median(z_ok))
        surface = float((z.astype(np.float64) ** 2).sum() / (prep.fx * prep.fy))
        if surface < cfg.min_surface_m2:
            return None
        return mask

    # -- public ---------------------------------------------------------------------------------------
    def segment(
        self, pair: FramePairGeometry, seed: int | None = None, camera: CameraModel | None = None
    ) -> MotionInstances:
        """One seeded run (seed None: config.seed). camera gives fx, fy and the baseline; without it
        they are recovered from the pair's points and disparity."""
        prep = self._prepare(pair, camera)
        return self._run(prep, self.config.seed if seed is None else seed)

    def segment_ensemble(self, pair: FramePairGeometry, camera: CameraModel | None = None) -> MotionInstances:
        """config.ensemble_runs seeded runs; a mask survives when >= ensemble_min_share of the runs
        produce a matching mask (IoU >= ensemble_iou); its pixels are those a pixel_vote share of the
        matched masks cover. Why: RANSAC clusters that only some seeds find are mostly noise."""
        cfg = self.config
        start = time.perf_counter()
        prep = self._prepare(pair, camera)
        runs = [self._run(prep, cfg.seed + i) for i in range(cfg.ensemble_runs)]
        t_runs = time.perf_counter()
        groups: list[dict] = []  # rep mask, vote count image, runs, motions, scores
        for run_id, run in enumerate(runs):
            for i in np.argsort(-run.scores, kind="stable"):
                mask = run.masks[i]
                best_g, best_iou = -1, cfg.ensemble_iou
                for g, group in enumerate(groups):
                    if run_id in group["runs"]:
                        continue
                    inter = np.logical_and(mask, group["rep"]).sum()
                    union = mask.sum() + group["rep_area"] - inter
                    iou = inter / union if union else 0.0
                    if iou >= best_iou:
                        best_g, best_iou = g, iou
                if best_g < 0:
                    groups.append(
                        {
                            "rep": mask,
                            "rep_area": int(mask.sum()),
                            "votes": mask.astype(np.int32),
                            "runs": {run_id},
                            "motions": [run.motions[i]],
                            "scores": [run.scores[i]],
                        }
                    )
                else:
                    group = groups[best_g]
                    group["votes"] += mask
                    group["runs"].add(run_id)
                    group["motions"].append(run.motions[i])
                    group["scores"].append(run.scores[i])
        masks, scores, motions = [], [], []
        for group in groups:
            share = len(group["runs"]) / cfg.ensemble_runs
            if share < cfg.ensemble_min_share:
                continue
            mask = group["votes"] >= max(1.0, cfg.pixel_vote * len(group["runs"]))
            if mask.sum() < cfg.min_mask_pixels:
                continue
            ys, xs = np.nonzero(mask)
            y0, x0 = ys.min(), xs.min()
            crop = mask[y0 : ys.max() + 1, x0 : xs.max() + 1]
            cleaned = self._clean(crop, prep, y0, x0)
            if cleaned is None:
                continue
            full = np.zeros_like(mask)
            full[y0 : y0 + crop.shape[0], x0 : x0 + crop.shape[1]] = cleaned
            masks.append(full)
            scores.append(share * float(np.mean(group["scores"])))
            motions.append(group["motions"][int(np.argmax(group["scores"]))])
        # Consensus ego-motion: the run whose ego-motion is closest to all others (a medoid).
        egos = np.stack([run.ego_motion for run in runs])
        spread = np.abs(egos[:, None] - egos[None]).sum((2, 3)).sum(1)
        ego = egos[int(np.argmin(spread))]
        timings = {
            "prepare": prep.timings["prepare"],
            "runs": t_runs - start - prep.timings["prepare"],
            "vote": time.perf_counter() - t_runs,
        }
        timings["total"] = time.perf_counter() - start
        h, w = prep.height, prep.width
        if not masks:
            return MotionInstances(
                np.zeros((0, h, w), bool), np.zeros(0, np.float32), np.zeros((0, 4, 4)), ego, timings
            )
        order = np.argsort(-np.asarray(scores), kind="stable")
        return MotionInstances(
            np.stack(masks)[order],
            np.asarray(scores, np.float32)[order],
            np.stack(motions)[order],
            ego,
            timings,
        )
