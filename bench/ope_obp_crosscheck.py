"""Cross-check evaluation.ope against obp 0.5.7's own estimator source on the Open Bandit Dataset.

obp 0.5.7 does not install on Python 3.11 (Requires-Python <3.11 and it pins torch==1.12), so
this loads its ``obp/utils.py``, ``obp/ope/helper.py`` and ``obp/ope/estimators.py`` straight
from the sdist, without the package ``__init__`` (which imports torch-1.12-era modules):

    pip download obp==0.5.7 --no-deps --ignore-requires-python -d /tmp/obp_dl
    tar xzf /tmp/obp_dl/obp-0.5.7.tar.gz -C /tmp/obp_dl
    .venv/bin/python bench/ope_obp_crosscheck.py /tmp/obp_dl/obp-0.5.7/obp

Prints obp's and our IPS/SNIPS/DR values and bootstrap CIs on the same inputs and the
worst absolute difference (exits 1 if it exceeds 1e-12).
"""
import importlib.util
import sys
import types
from pathlib import Path

import numpy as np

if len(sys.argv) != 2:
    sys.exit(__doc__)
root = sys.argv[1]
for name, path in (("obp", root), ("obp.ope", root + "/ope")):
    m = types.ModuleType(name); m.__path__ = [path]; sys.modules[name] = m
def load(name, file):
    spec = importlib.util.spec_from_file_location(name, file); mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod; spec.loader.exec_module(mod); return mod
load("obp.utils", root + "/utils.py"); load("obp.ope.helper", root + "/ope/helper.py")
est = load("obp.ope.estimators", root + "/ope/estimators.py")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common.paths import data_path
from evaluation import ope
from evaluation.ope_obd import cross_fitted_ctr, load_obd_bandit, policy_action_dist

worst = 0.0
for f in ["random/all/all.csv", "bts/all/all.csv", "bts/women/women.csv"]:
    d = load_obd_bandit(str(data_path("obd", f)))
    q = cross_fitted_ctr(d)
    for pol in ["uniform", "affinity-softmax:0.05", "item-ctr-softmax:0.5"]:
        ad = policy_action_dist(d, pol)
        ep = ope.evaluation_prob_from_action_dist(d.action, d.position, ad)
        qf = q[np.arange(d.n_rounds), d.action, d.position]; qe = ope.expected_q_from_action_dist(d.position, ad, q)
        kw = dict(reward=d.reward, action=d.action, position=d.position, pscore=d.pscore, action_dist=ad)
        for name, O, M in (("ipw", est.InverseProbabilityWeighting(), ope.InverseProbabilityWeighting()),
                           ("snipw", est.SelfNormalizedInverseProbabilityWeighting(), ope.SelfNormalizedInverseProbabilityWeighting()),
                           ("dr", est.DoublyRobust(), ope.DoublyRobust())):
            extra = dict(estimated_rewards_by_reg_model=q) if name == "dr" else {}
            v_obp = O.estimate_policy_value(**kw, **extra)
            ci_obp = O.estimate_interval(**kw, **extra, n_bootstrap_samples=500, random_state=7)
            mine = M.estimate(d.reward, d.pscore, ep, q_hat_factual=qf, q_hat_expected=qe, n_bootstrap_samples=500, random_state=7)
            vals = list(ci_obp.values())
            diff = max(abs(v_obp - mine.value), abs(vals[1] - mine.lower), abs(vals[2] - mine.upper))
            worst = max(worst, diff)
            print(f"{f:22s} {pol:22s} {name:6s} obp={v_obp:.10f} ours={mine.value:.10f} ci_obp=({vals[1]:.8f},{vals[2]:.8f}) ci_ours=({mine.lower:.8f},{mine.upper:.8f}) maxdiff={diff:.2e}")
print("worst abs diff", worst)
sys.exit(0 if worst <= 1e-12 else 1)
