"""One-class SVM baseline that scales to a few hundred thousand rows.

An exact kernel ``sklearn.svm.OneClassSVM`` costs O(n^2) memory and time, too much for the
~200k training rows of the KDD protocol. This detector is scikit-learn's recipe for the large
case instead: a Nystroem approximation of the RBF kernel (``sklearn.kernel_approximation.Nystroem``,
``n_components`` landmark rows) followed by the linear one-class SVM trained by stochastic gradient
descent (``sklearn.linear_model.SGDOneClassSVM``). Both are fitted on the normal rows only; the
score is minus the SVM's decision function (higher = more anomalous).

Its state is arrays only (landmarks, normalisation, weights), so it can go into a bundle.
"""

from __future__ import annotations

import numpy as np
import torch

from offline.detectors.base import Detector, as_float32


class OneClassSVMDetector(Detector):
    """One-class SVM, RBF kernel approximated by Nystroem, solved by SGD (``SGDOneClassSVM``).

    ``gamma="scale"`` uses scikit-learn's SVC rule, ``1 / (n_features * X.var())``; ``nu`` bounds
    the fraction of training rows outside the boundary.

    >>> import numpy as np
    >>> normal = np.random.default_rng(0).normal(size=(2000, 3))
    >>> det = OneClassSVMDetector(n_components=100).fit(normal)
    >>> bool(det.score([[6, 6, 6]])[0] > det.score([[0, 0, 0]])[0])
    True
    """

    name = "ocsvm"

    def __init__(
        self,
        *,
        nu: float = 0.05,
        gamma: float | str = "scale",
        n_components: int = 500,
        max_iter: int = 50,
        tol: float | None = 1e-4,
        seed: int = 0,
    ):
        self.nu, self.gamma, self.n_components, self.max_iter, self.tol, self.seed = nu, gamma, n_components, max_iter, tol, seed
        self.gamma_ = None
        self.landmarks = self.normalization = self.coef = None
        self.offset = 0.0

    def fit(self, X, *, X_val=None) -> "OneClassSVMDetector":
        from sklearn.kernel_approximation import Nystroem
        from sklearn.linear_model import SGDOneClassSVM

        X = as_float32(X)
        self.gamma_ = float(1.0 / (X.shape[1] * max(float(X.var()), 1e-12))) if self.gamma == "scale" else float(self.gamma)
        nystroem = Nystroem(kernel="rbf", gamma=self.gamma_, n_components=min(self.n_components, len(X)), random_state=self.seed)
        features = nystroem.fit_transform(X)
        svm = SGDOneClassSVM(nu=self.nu, max_iter=self.max_iter, tol=self.tol, random_state=self.seed).fit(features)
        self.landmarks = nystroem.components_.astype(np.float32)
        self.normalization = nystroem.normalization_.astype(np.float32)
        self.coef = svm.coef_.ravel().astype(np.float64)
        self.offset = float(np.ravel(svm.offset_)[0])
        return self

    def _features(self, X: np.ndarray) -> np.ndarray:
        # the Nystroem map, written out so that a bundle needs only the arrays (no pickle)
        squared = (X**2).sum(1)[:, None] + (self.landmarks**2).sum(1)[None, :] - 2.0 * X @ self.landmarks.T
        return np.exp(-self.gamma_ * np.maximum(squared, 0.0)) @ self.normalization.T

    def score(self, X) -> np.ndarray:
        X = as_float32(X)
        out = np.empty(len(X), dtype=np.float64)
        for start in range(0, len(X), 8192):  # bounded memory: 8192 x n_components at a time
            out[start : start + 8192] = self.offset - self._features(X[start : start + 8192]).astype(np.float64) @ self.coef
        return out

    def state_tensors(self) -> dict[str, torch.Tensor]:
        return {
            "landmarks": torch.from_numpy(self.landmarks),
            "normalization": torch.from_numpy(self.normalization),
            "coef": torch.from_numpy(self.coef),
            "offset": torch.tensor([self.offset], dtype=torch.float64),
            "gamma": torch.tensor([self.gamma_], dtype=torch.float64),
        }

    @classmethod
    def from_state(cls, params: dict, tensors: dict[str, torch.Tensor], *, n_features: int) -> "OneClassSVMDetector":
        detector = cls(**params)
        detector.landmarks = tensors["landmarks"].numpy()
        detector.normalization = tensors["normalization"].numpy()
        detector.coef = tensors["coef"].numpy()
        detector.offset = float(tensors["offset"][0])
        detector.gamma_ = float(tensors["gamma"][0])
        if detector.landmarks.shape[1] != n_features:
            raise ValueError(f"ocsvm state has {detector.landmarks.shape[1]} features, the schema {n_features}")
        return detector
