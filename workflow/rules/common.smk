from npf.config import offline_section, section, suite_tasks
from npf.resources import mem_mb

RESULTS = config["results_dir"]


def tasks_of(suite):
    return suite_tasks(config, suite)


def dataset_files(suite):
    return [f"{RESULTS}/datasets/{suite}/{task}.npz" for task in tasks_of(suite)]


def scripted_experts(suite):
    """experts.source scripted: Meta-World's controllers collect the data; no SAC experts to train."""
    return section(config, "experts", suite)["source"] == "scripted"


def expert_policy(suite, task):
    """The SAC expert that collects a task's dataset ([] for scripted experts)."""
    if scripted_experts(suite):
        return []
    seed = section(config, "datasets", suite)["expert_seed"]
    return f"{RESULTS}/experts/{suite}/{task}/seed{seed}/policy.pt"


def expert_targets():
    return [
        f"{RESULTS}/experts/{suite}/{task}/seed{seed}/policy.pt"
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
        f"{RESULTS}/eval/{suite}/{method}-{algo}/seed{seed}.json"
        for suite, method, algo, seed in offline_runs()
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
            out.append((f"{RESULTS}/eval/{suite}/{method}-{algo}/seed{seed}.json", size))
        else:
            out.append((f"{RESULTS}/sample_complexity/eval/{suite}/{method}-{algo}/n{size}/seed{seed}.json", size))
    return out


def sample_complexity_targets():
    """Fig. 5's tidy scores, when any dataset size is configured."""
    return [f"{RESULTS}/sample_complexity/scores.csv"] if sample_complexity_runs() else []


def pathway_summaries():
    return sorted(
        {
            f"{RESULTS}/pathways/{suite}/{algo}/seed{seed}/masks.json"
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
        + [f"{config['reports_dir']}/figures", f"{config['reports_dir']}/tables"]
    )
