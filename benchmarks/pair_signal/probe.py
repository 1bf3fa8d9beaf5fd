"""What the frozen student's hidden states know about pairs: for each product of the tags prompt,
its state at several blocks (last token of its line, mean over the line, and the title read
alone), scored on valid pairs by raw cosine and by a logistic regression on [a*b, |a-b|] fitted on
the first N training sessions (states standardised per dimension with training statistics).

    .venv/bin/python benchmarks/pair_signal/probe.py electronic 400 '{"max_title_words": 6}'
    # -> benchmarks/results/pair_signal/probe_electronic.json (the committed one: 6-word titles, as PairSFT v2)
"""
import os
import sys, json, numpy as np, torch, time
REPO = __import__("pathlib").Path(__file__).resolve().parents[2]; sys.path.insert(0, str(REPO)); sys.path.insert(0, str(REPO / "plugins"))
import recbole_bundlellm
OUT = REPO / 'benchmarks' / 'results' / 'pair_signal'
OUT.mkdir(parents=True, exist_ok=True)
from recbole.data import create_dataset, data_preparation
from recbole_bundlellm.config import BundleConfig
from recbole_bundlellm.data.sessions import sessions_from_dataset
from recbole_bundlellm.models.baselines.pairwise import session_pairs, pair_labels, PairFeaturizer
from sklearn.metrics import roc_auc_score
from sklearn.linear_model import LogisticRegression
torch.set_num_threads(2)
dom = sys.argv[1]; ntrain = int(sys.argv[2]); extra = json.loads(sys.argv[3]) if len(sys.argv) > 3 else {}
cfg = BundleConfig("PairSFT", dom, [f"{REPO}/configs/{dom}/pair_sft.yaml"], {"data_path": os.environ.get("BUNDLELLM_DATA", str(REPO / "dataset")), **extra})
ds = create_dataset(cfg); tr, va, te = data_preparation(cfg, ds)
train, valid = sessions_from_dataset(tr.dataset), sessions_from_dataset(va.dataset)
train = [s for s in train if s.bundles and len(s) >= 2][:ntrain]; valid = [s for s in valid if s.bundles and len(s) >= 2]
m = cfg.spec.model_class(cfg, tr.dataset)
from recbole_bundlellm.models.students.bundlellm import BundleLLM
BundleLLM.fit_bundles(m, train)
llm = m.loaded_llm.loaded.model if hasattr(m.loaded_llm.loaded, "model") else None
base = m.llm
LAYERS = [2, 4, 8, 12, 16, 20, 24, 30]
def states(sessions, training):
    views = m.views(sessions, training=False)
    out = []
    for s, v in zip(sessions, views):
        ids, spans = m._encode(s, v)
        with torch.inference_mode():
            hs = base(input_ids=torch.tensor([ids]), output_hidden_states=True, use_cache=False).hidden_states
        rec = {}
        for L in LAYERS:
            h = hs[L][0].float()
            rec[("last", L)] = torch.stack([h[b] for a, b in spans]).numpy()
            rec[("mean", L)] = torch.stack([h[a:b+1].mean(0) for a, b in spans]).numpy()
        # each title alone
        alone = []
        for t, c in zip(s.titles, s.categories):
            tid = m.tokenizer(f"{t} ({c})", add_special_tokens=False)["input_ids"]
            with torch.inference_mode():
                hh = base(input_ids=torch.tensor([tid]), output_hidden_states=True, use_cache=False).hidden_states
            alone.append([hh[L][0].float().mean(0).numpy() for L in LAYERS])
        for k, L in enumerate(LAYERS):
            rec[("alone", L)] = np.stack([a[k] for a in alone])
        out.append(rec)
    return out
t0 = time.time()
V = states(valid, False); print("valid states", time.time() - t0, flush=True)
T = states(train, True); print("train states", time.time() - t0, flush=True)
fz = PairFeaturizer().fit([t for s in train for t in s.titles])
yv = np.concatenate([pair_labels(s) for s in valid]); yt = np.concatenate([pair_labels(s) for s in train])
res = {}
tf = []
for s in valid:
    wx = fz._word.transform(s.titles); W = (wx @ wx.T).toarray()
    tf += [W[i, j] for i, j in session_pairs(len(s))]
res["tfidf_word_cosine"] = roc_auc_score(yv, tf); print("tfidf", res["tfidf_word_cosine"], flush=True)
def cos(X):
    X = X - 0; X = X / (np.linalg.norm(X, axis=1, keepdims=True) + 1e-9); return X @ X.T
def feats(recs, key, mu, sd):
    rows = []
    for r in recs:
        X = (r[key] - mu) / sd
        Xn = X / (np.linalg.norm(X, axis=1, keepdims=True) + 1e-9)
        for i, j in session_pairs(len(X)):
            rows.append(np.concatenate([Xn[i] * Xn[j], np.abs(Xn[i] - Xn[j])]))
    return np.array(rows)
for key in sorted(V[0].keys(), key=str):
    allt = np.concatenate([r[key] for r in T]); mu, sd = allt.mean(0), allt.std(0) + 1e-6
    c = []
    for r in V:
        X = (r[key] - mu) / sd; C = cos(X); c += [C[i, j] for i, j in session_pairs(len(X))]
    auc_cos = roc_auc_score(yv, c)
    clf = LogisticRegression(C=0.1, max_iter=500).fit(feats(T, key, mu, sd), yt)
    auc_lr = roc_auc_score(yv, clf.predict_proba(feats(V, key, mu, sd))[:, 1])
    res[str(key)] = {"cos": round(auc_cos, 3), "logreg": round(auc_lr, 3)}
    print(key, res[str(key)], flush=True)
json.dump(res, open(OUT / f"probe_{dom}.json", "w"), indent=1)
