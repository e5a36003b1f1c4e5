"""Online multitask SAC with neural pathways (SAC+NPF) and its baselines (paper Section 4.3,
Table 4, Figs. 3, 4, 13, 14): stages ``train_online``, ``online_evaluate``, ``dapd_ablation``.

Methods (``online.methods``): ``sac-npf`` (pathways found online with DAPD; with
``pretrain_steps > 0`` per-task copies are pretrained on their own pathways, then merged and the
pathways frozen), ``sac-npf-nopretrain`` (Fig. 4's variant, pathways on the shared network from the
start), ``mt-sac`` (one-hot task id), ``mh-sac`` (one head per task), ``pcgrad`` (MT-SAC with PCGrad).

Modules: :mod:`~npf.online.settings` (config → settings, DAG targets), :mod:`~npf.online.agent`
(networks, DAPD, merge), :mod:`~npf.online.loop` (the training loop), :mod:`~npf.online.run_state`
(a run's state and checkpoint), :mod:`~npf.online.build` (opening or resuming a run),
:mod:`~npf.online.summary` (final outputs, rates), :mod:`~npf.online.stages` (stage entry points),
:mod:`~npf.online.evaluate`, :mod:`~npf.online.tidy` (CSV files).
"""
