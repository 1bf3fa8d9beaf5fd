"""How much of the title signal survives cutting titles to N words: valid pair AUC of TF-IDF
cosine (word 1-2-grams + char 3-5-grams, fit on the cut training titles), per domain.

    .venv/bin/python benchmarks/pair_signal/trunc.py   # -> benchmarks/results/pair_signal/titles.json
"""
import os
import json, sys, numpy as np
results = {}
REPO = __import__("pathlib").Path(__file__).resolve().parents[2]; sys.path.insert(0, str(REPO)); sys.path.insert(0, str(REPO / "plugins"))
import recbole_bundlellm
OUT = REPO / 'benchmarks' / 'results' / 'pair_signal'
OUT.mkdir(parents=True, exist_ok=True)
from recbole.data import create_dataset, data_preparation
from recbole_bundlellm.config import BundleConfig
from recbole_bundlellm.data.sessions import sessions_from_dataset
from recbole_bundlellm.models.baselines.pairwise import session_pairs, pair_labels, PairFeaturizer
from sklearn.metrics import roc_auc_score
for dom in ["electronic", "clothing", "food"]:
    cfg = BundleConfig("Pairwise", dom, [f"{REPO}/configs/{dom}/pairwise.yaml"], {"data_path": os.environ.get("BUNDLELLM_DATA", str(REPO / "dataset"))})
    ds = create_dataset(cfg); tr, va, te = data_preparation(cfg, ds)
    train, valid = sessions_from_dataset(tr.dataset), [s for s in sessions_from_dataset(va.dataset) if s.bundles]
    y = np.concatenate([pair_labels(s) for s in valid])
    lens = [len(t.split()) for s in valid for t in s.titles]
    out = [dom, f"title words median {np.median(lens)} mean {np.mean(lens):.1f}"]
    for w in [4, 6, 8, 12, 20, None]:
        cut = lambda t: t if w is None else " ".join(t.split()[:w])
        fz = PairFeaturizer().fit([cut(t) for s in train for t in s.titles])
        sc = []
        for s in valid:
            ts = [cut(t) for t in s.titles]
            wx = fz._word.transform(ts); W = (wx @ wx.T).toarray(); cx = fz._char.transform(ts); C = (cx @ cx.T).toarray()
            sc += [W[i, j] + C[i, j] for i, j in session_pairs(len(s))]
        out.append(f"{w}:{roc_auc_score(y, sc):.3f}")
    print(" ".join(out), flush=True)
    results[dom] = out[1:]
json.dump(results, open(OUT / "titles.json", "w"), indent=1)
