"""Post-processing of embeddings fitted on a corpus: standardization, all-but-the-top, whitening.

Contextual vectors are anisotropic: they share a large common direction, and a few "rogue"
dimensions dominate their cosine similarities (Ethayarajh, 2019; Timkey & van Schijndel, 2021).
Each method here is fitted once on a sample of vectors, saved as a small safetensors file, and
applied to any vectors of the same model, layer and pooling:

- "standardize": z-score every dimension, (x - mean) / std (Timkey & van Schijndel);
- "all_but_the_top": remove the mean and the projections on the top `components` principal
  directions (Mu & Viswanath, 2018; default dims / 100, at least 1);
- "whiten": (x - mean) W with W = U diag(1 / sqrt(s)) from the covariance's SVD, so the fitted
  sample's covariance becomes the identity (Su et al., 2021), keeping `components` dimensions
  (default: every direction the sample spans; layer-normed vectors leave a few empty).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open

from .files import write_safetensors

METHODS = ("standardize", "all_but_the_top", "whiten")


@dataclass
class PostProcess:
    method: str
    mean: np.ndarray  # (D,)
    matrix: np.ndarray  # standardize: (D,) 1 / std; all_but_the_top: (D, k) directions; whiten: (D, k)
    info: dict = field(default_factory=dict)  # what it was fitted on (model, layers, pooling, count)

    def __call__(self, vectors: np.ndarray) -> np.ndarray:
        """(N, D) -> (N, D), or (N, k) for whitening to k dimensions; float32."""
        if vectors.shape[-1] != self.mean.shape[0]:
            raise ValueError(f"this {self.method} post-processing was fitted on {self.mean.shape[0]}-dimensional "
                             f"vectors; these have {vectors.shape[-1]}")
        centred = vectors.astype(np.float64) - self.mean
        if self.method == "standardize":
            out = centred * self.matrix
        elif self.method == "all_but_the_top":
            out = centred - (centred @ self.matrix) @ self.matrix.T
        else:
            out = centred @ self.matrix
        return out.astype(np.float32)

    def save(self, path: str | Path) -> None:
        tensors = {"mean": torch.from_numpy(self.mean), "matrix": torch.from_numpy(np.ascontiguousarray(self.matrix))}
        write_safetensors(path, tensors, metadata={"method": self.method, "info": json.dumps(self.info)})


def fit_postprocess(vectors: np.ndarray, method: str, components: int | None = None,
                    info: dict | None = None) -> PostProcess:
    """Fit `method` on (N, D) vectors (in float64). `components`: the directions all-but-the-top
    removes (default D // 100, at least 1), or the dimensions whitening keeps (default all the
    sample spans)."""
    if method not in METHODS:
        raise ValueError(f"unknown post-processing {method!r}; choose one of {', '.join(METHODS)}")
    x = np.asarray(vectors, dtype=np.float64)
    if x.ndim != 2 or len(x) < 2:
        raise ValueError(f"fitting needs at least 2 vectors in an (N, D) array, got shape {x.shape}")
    mean = x.mean(0)
    info = {**(info or {}), "fitted_on": len(x)}
    if method == "standardize":
        std = x.std(0)
        return PostProcess(method, mean, np.where(std > 0, 1.0 / np.where(std > 0, std, 1.0), 0.0), info)
    centred = x - mean
    covariance = centred.T @ centred / len(x)
    u, s, _ = np.linalg.svd(covariance)
    if method == "all_but_the_top":
        k = components if components is not None else max(1, x.shape[1] // 100)
        return PostProcess(method, mean, u[:, :k], {**info, "components": k})
    rank = int((s > 1e-9 * s[0]).sum())  # layer-normed vectors leave a few directions empty
    k = components if components is not None else rank
    if k > rank:
        raise ValueError(f"the fitted vectors span {rank} dimensions (N = {len(x)}), fewer than the {k} to keep: "
                         "whiten to fewer components, or fit on more vectors")
    return PostProcess(method, mean, u[:, :k] / np.sqrt(s[:k]), {**info, "components": k})


def load_postprocess(path: str | Path) -> PostProcess:
    path = Path(path)
    try:
        with safe_open(str(path), framework="np") as f:
            meta = f.metadata() or {}
            mean, matrix = f.get_tensor("mean"), f.get_tensor("matrix")
    except Exception as e:  # safetensors raises its own error types for bad files
        raise ValueError(f"{path}: not a post-processing file written by bertkit ({e})") from e
    if meta.get("method") not in METHODS:
        raise ValueError(f"{path}: no post-processing method in its metadata; write it with bertkit analyze "
                         "postprocess-fit")
    return PostProcess(meta["method"], mean, matrix, json.loads(meta.get("info", "{}")))
