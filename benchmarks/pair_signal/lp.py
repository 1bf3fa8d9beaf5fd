"""The pair head fitted on the frozen student's states alone (PairSFT's probe stage): valid pair
AUC and valid exact F1 / best Jaccard (grouping tuned on valid) for a grid of
[steps, learning rate, head width, dropout, weight decay]; states cached under $TMPDIR.

    .venv/bin/python benchmarks/pair_signal/lp.py electronic '{}' '[[300, 0.003, 64, 0.5, 0.3]]'
    # -> benchmarks/results/pair_signal/head_electronic.json
"""
import os
import sys, json, time, numpy as np, torch
REPO = __import__("pathlib").Path(__file__).resolve().parents[2]; sys.path.insert(0, str(REPO)); sys.path.insert(0, str(REPO / "plugins"))
import recbole_bundlellm
OUT = REPO / 'benchmarks' / 'results' / 'pair_signal'
OUT.mkdir(parents=True, exist_ok=True)
from recbole.data import create_dataset, data_preparation
from recbole_bundlellm.config import BundleConfig
from recbole_bundlellm.data.sessions import sessions_from_dataset
from recbole_bundlellm.models.baselines.pairwise import session_pairs, pair_labels, tune_grouping
from recbole_bundlellm.models.students.pair_sft import PairHead, PairExample
from sklearn.metrics import roc_auc_score
dom = sys.argv[1]; extra = json.loads(sys.argv[2]) if len(sys.argv) > 2 else {}
cfg = BundleConfig("PairSFT", dom, [f"{REPO}/configs/{dom}/pair_sft.yaml"], {"data_path": os.environ.get("BUNDLELLM_DATA", str(REPO / "dataset")), **extra})
ds = create_dataset(cfg); tr, va, te = data_preparation(cfg, ds)
train, valid = sessions_from_dataset(tr.dataset), [s for s in sessions_from_dataset(va.dataset) if s.bundles]
m = cfg.spec.model_class(cfg, tr.dataset)
m.fit_bundles(train)
t0 = time.time()
ex = m.training_examples(train)
vex = []
for s, v in zip(valid, m.views(valid, training=False)):
    ids, spans = m._encode(s, v); vex.append(PairExample(s.session_id, tuple(ids), tuple(spans), tuple(int(x) for x in pair_labels(s))))
import os
cache = os.environ.get("TMPDIR", "/tmp") + f"/pair_states_{dom}_{cfg['pair_layer']}_{cfg['max_title_words']}.pt"
if os.path.exists(cache):
    S, V = torch.load(cache)
else:
    S = m.frozen_states(ex); V = m.frozen_states(vex); torch.save((S, V), cache)
print("states", round(time.time() - t0, 1), "train sessions", len(ex), flush=True)
L = [torch.tensor(e.pair_labels, dtype=torch.float32) for e in ex]
yv = np.concatenate([pair_labels(s) for s in valid])
print("train positive rate", float(torch.cat(L).mean()))
res = {}
GRID = json.loads(sys.argv[3]) if len(sys.argv) > 3 else [[400, 0.003, 128, 0.0, 0.01]]
for steps, lr, dim, drop, wd in GRID:
    torch.manual_seed(0)
    m.pair_head = PairHead(576, dim); m.pair_head.calibrate(torch.cat(S))
    m.pair_head.dropout_p = drop; m.config["pair_probe_weight_decay"] = wd
    m.config["pair_probe_learning_rate"] = lr
    r = m._fit_head(S, L, steps) if steps else {}
    probs, ps = [], []
    m.pair_head.eval()
    with torch.no_grad():
        for s, st in zip(valid, V):
            n = len(s); P = np.zeros((n, n)); pr = session_pairs(n)
            if pr:
                p = torch.sigmoid(m.pair_head(st, torch.tensor([i for i, _ in pr]), torch.tensor([j for _, j in pr]))).numpy()
                for (i, j), x in zip(pr, p): P[i, j] = P[j, i] = x
                ps.append(p)
            probs.append(P)
    auc = roc_auc_score(yv, np.concatenate(ps))
    g, f1, jac = tune_grouping(probs, valid, ["connected", "average"], ["whole", "best_pair", "none"], [i / 20 for i in range(1, 20)])
    key = f"steps={steps} lr={lr} dim={dim} drop={drop} wd={wd}"
    res[key] = {"auc": round(auc, 3), "valid_f1": round(f1, 3), "valid_jaccard": round(jac, 3), **r}
    print(dom, key, res[key], flush=True)
json.dump(res, open(OUT / f"head_{dom}.json", "w"), indent=1)
