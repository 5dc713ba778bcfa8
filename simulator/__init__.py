"""Real public data (OBD, LETOR, KuaiRand) -> events, and the session simulator the loop plays users with.

* :mod:`simulator.obd`, :mod:`simulator.letor`, :mod:`simulator.kuairand` readers of ``../shared/data``.
* :mod:`simulator.click_models` PBM / cascade clicks from graded relevance.
* :mod:`simulator.session`      the session simulator (requests, responses, feedback events).
* :mod:`simulator.logs`         time-ordered JSONL event logs.
* :mod:`simulator.examples`     labelled examples without the join (tests, benchmarks, ``learn`` trials).
* :mod:`simulator.calibration`  a click stream with known truth and a context-dependently miscalibrated backbone.
* :mod:`simulator.movielens`    MovieLens-100k (RecBole's atomic files, read in place from the recbole wheel).
"""
