"""Where Pairwise's pair signal comes from: its classifier refitted on feature groups (title,
category, item memory, order), alone and left out; valid pair AUC and valid exact F1 / best Jaccard
with the grouping tuned on valid (test is never read).

    .venv/bin/python benchmarks/pair_signal/ablate.py electronic   # -> benchmarks/results/pair_signal/ablate_electronic.json
"""
import os
import sys, json, numpy as np
REPO = __import__("pathlib").Path(__file__).resolve().parents[2]; sys.path.insert(0, str(REPO)); sys.path.insert(0, str(REPO / "plugins"))
import recbole_bundlellm
OUT = REPO / 'benchmarks' / 'results' / 'pair_signal'
OUT.mkdir(parents=True, exist_ok=True)
from recbole.data import create_dataset, data_preparation
from recbole_bundlellm.config import BundleConfig
from recbole_bundlellm.data.sessions import sessions_from_dataset
from recbole_bundlellm.models.baselines.pairwise import *
from sklearn.metrics import roc_auc_score
from sklearn.ensemble import HistGradientBoostingClassifier
dom = sys.argv[1]
cfg = BundleConfig("Pairwise", dom, [f"{REPO}/configs/{dom}/pairwise.yaml"], {"data_path": os.environ.get("BUNDLELLM_DATA", str(REPO / "dataset"))})
ds = create_dataset(cfg); tr, va, te = data_preparation(cfg, ds)
train, valid = sessions_from_dataset(tr.dataset), sessions_from_dataset(va.dataset)
m = cfg.spec.model_class(cfg, tr.dataset)
X, y, _ = m.training_matrix(train)
valid = [s for s in valid if s.bundles]
Xv = [m.featurizer.transform(s, m.stats) for s in valid]
groups = {"title": [0,1,2,3,20,21], "category": [4,5,6,7,8,9,22,23,24], "item": [10,11,12,13], "order": [14,15,16,17,18,19]}
allc = list(range(X.shape[1]))
exps = {"all": allc}
for g, c in groups.items():
    exps[f"only {g}"] = c
    exps[f"all but {g}"] = [k for k in allc if k not in c]
out = {}
for name, cols in exps.items():
    clf = HistGradientBoostingClassifier(max_iter=100, max_leaf_nodes=7, l2_regularization=1.0, early_stopping=False, random_state=0).fit(X[:, cols], y)
    probs, ps, ys = [], [], []
    for s, x in zip(valid, Xv):
        n = len(s); P = np.zeros((n, n))
        if len(x):
            p = clf.predict_proba(x[:, cols])[:, 1]
            for (i, j), v in zip(session_pairs(n), p): P[i, j] = P[j, i] = v
            ps.append(p); ys.append(pair_labels(s))
        probs.append(P)
    auc = roc_auc_score(np.concatenate(ys), np.concatenate(ps))
    g, f1, jac = tune_grouping(probs, valid, ["connected", "average"], ["whole", "best_pair", "none"], [i/20 for i in range(1, 20)])
    out[name] = {"auc": round(auc, 3), "valid_f1": round(f1, 3), "valid_jaccard": round(jac, 3)}
    print(dom, name, out[name], flush=True)
json.dump(out, open(OUT / f"ablate_{dom}.json", "w"), indent=1)
