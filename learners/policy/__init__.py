"""Pieces shared by the list-wise policies (LDRO/GRPO in :mod:`learners.ranking`, DRPO in :mod:`learners.fusion`).

* :mod:`learners.policy.plackett_luce` Plackett-Luce log-probabilities and Gumbel-Max sampling.
* :mod:`learners.policy.advantages`    group-normalised, decoupled and dual-relative advantages.
* :mod:`learners.policy.batch`         padded tensors from LabeledLists or a serving request.
* :mod:`learners.policy.state`         the policies' ``state_dict``/``load_state_dict`` (on :mod:`contracts.state`).
* :mod:`learners.policy.evaluation`    online evaluation on the LETOR + KuaiRand simulator (``eval ldro|drpo``).
"""
