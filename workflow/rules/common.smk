from npf import layout
from npf.config import offline_section, section, suite_tasks
from npf.resources import mem_mb

RESULTS = config["results_dir"]
REPORTS = config["reports_dir"]


# one pattern per key for every rule (npf.layout names the paths); the online and offline methods do not
# overlap, so an eval JSON has one producer: {method}-{algo} with algo bcq|iql, or {method}-sac
wildcard_constraints:
    seed=r"\d+",
    size=r"\d+",
    suite=r"[^/]+",
    task=r"[^/]+",
    algo="bcq|iql",
    method="npf|mt|mhmt|sac-npf|sac-npf-nopretrain|mt-sac|mh-sac|pcgrad",
    variant=r"single-shot|dense|dapd(-M\d+)?(-nothreshold)?",


def wildcards(path_of, **fixed):
    """The rules' pattern of a layout function: each key left as its {wildcard}."""
    return layout.pattern(path_of, RESULTS, **fixed)


def tasks_of(suite):
    return suite_tasks(config, suite)


def dataset_files(suite):
    return [layout.dataset(RESULTS, suite, task) for task in tasks_of(suite)]


def scripted_experts(suite):
    """experts.source scripted: Meta-World's controllers collect the data; no SAC experts to train."""
    return section(config, "experts", suite)["source"] == "scripted"


def expert_policy(suite, task):
    """The SAC expert that collects a task's dataset ([] for scripted experts)."""
    if scripted_experts(suite):
        return []
    seed = section(config, "datasets", suite)["expert_seed"]
    return layout.expert_policy(RESULTS, suite, task, seed)


def expert_targets():
    return [
        layout.expert_policy(RESULTS, suite, task, seed)
        for suite in config["suites"]
        if not scripted_experts(suite)
        for task in tasks_of(suite)
        for seed in section(config, "experts", suite)["seeds"]
    ]


def dataset_targets():
    return [f for suite in config["suites"] for f in dataset_files(suite)]


def offline_runs():
    return [
        (suite, method, algo, seed)
        for suite in config["suites"]
        for method in section(config, "offline", suite)["methods"]
        for algo in section(config, "offline", suite)["algos"]
        for seed in offline_section(config, suite, algo)["seeds"]
    ]


def eval_targets():
    return [
        layout.eval_json(RESULTS, suite, method, algo, seed) for suite, method, algo, seed in offline_runs()
    ]


def sample_complexity_runs():
    """(suite, method, algo, seed, K) of the runs on the first K trajectories per task (offline.dataset_sizes)."""
    return [
        (suite, method, algo, seed, size)
        for suite, method, algo, seed in offline_runs()
        for size in section(config, "offline", suite)["dataset_sizes"]
    ]


def sample_complexity_evals():
    """(eval JSON, trajectories per task) of Fig. 5's points; a size equal to datasets.episodes is the
    main run itself (trained on the whole dataset), not trained again."""
    out = []
    for suite, method, algo, seed, size in sample_complexity_runs():
        if size == section(config, "datasets", suite)["episodes"]:
            out.append((layout.eval_json(RESULTS, suite, method, algo, seed), size))
        else:
            out.append((layout.sc_eval_json(RESULTS, suite, method, algo, size, seed), size))
    return out


def sample_complexity_targets():
    """Fig. 5's tidy scores, when any dataset size is configured."""
    return [layout.sc_scores(RESULTS)] if sample_complexity_runs() else []


def pathway_summaries():
    return sorted(
        {
            layout.masks_summary(RESULTS, suite, algo, seed)
            for suite, method, algo, seed in offline_runs()
            if method == "npf"
        }
    )


def online_targets():
    """Online stages' outputs: eval JSONs, Fig. 3/4/13/14 curves (see workflow/rules/online.smk)."""
    from npf.online.settings import online_target_files

    return online_target_files(config)


def all_targets():
    return (
        expert_targets()
        + dataset_targets()
        + eval_targets()
        + sample_complexity_targets()
        + online_targets()
        + [layout.figures_dir(REPORTS), layout.tables_dir(REPORTS)]
    )
