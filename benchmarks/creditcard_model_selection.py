"""Model selection for the credit-card VAE/AE on the training period only (never on test rows).

Trains on normal rows of the first 45% of transactions (15% of them held out for early
stopping) and reports AUROC/AUPRC on rows 45%-60%, which hold 100 frauds. Usage:

    python benchmarks/creditcard_model_selection.py "vae|dict(epochs=30, score_mode='recon+latent')" ...

Its output is kept in benchmarks/results/creditcard_model_selection.txt; the chosen setting is
in offline/training/presets.py.
"""

import sys
import time

import numpy as np

from offline.data import DataStore, load_tabular
from offline.metrics import ranking_metrics
from offline.training.train import fit_model
from streamdetect.settings import get_settings


def main(specs: list[str]) -> None:
    settings = get_settings().data
    data = load_tabular("creditcard", DataStore(settings.data_dir, settings.mirror_dir, settings.allow_download))
    n = len(data)
    start, end = int(n * 0.45), int(n * 0.6)
    normals = np.flatnonzero(data.labels[:start] == 0)
    held_out = int(len(normals) * 0.15)
    train, calibration, dev = normals[:-held_out], normals[-held_out:], np.arange(start, end)
    print("dev frauds", int(data.labels[dev].sum()), flush=True)
    for spec in specs:
        name, params = spec.split("|")
        params = eval(params, {"dict": dict})  # noqa: S307 - the operator's own command line
        params.setdefault("progress", False)
        started = time.time()
        fitted = fit_model(name, params, data.features.iloc[train], data.features.iloc[calibration], numeric=data.numeric, log_scale=data.log_scale)
        X, _ = fitted.schema.transform(data.features.iloc[dev])
        metrics = {k: round(v, 4) for k, v in ranking_metrics(fitted.detector.score(X), data.labels[dev]).items()}
        print(name, params, f"{time.time() - started:.0f}s", metrics, "epochs", len(getattr(fitted.detector, "history", [])), flush=True)


if __name__ == "__main__":
    if not sys.argv[1:] or sys.argv[1] in ("-h", "--help"):
        print(__doc__)
        sys.exit(0)
    main(sys.argv[1:])
