from npf.config import offline_section, section, suite_tasks
from npf.resources import mem_mb

RESULTS = config["results_dir"]


def tasks_of(suite):
    return suite_tasks(config, suite)


def dataset_files(suite):
    return [f"{RESULTS}/datasets/{suite}/{task}.npz" for task in tasks_of(suite)]


def expert_targets():
    return [
        f"{RESULTS}/experts/{suite}/{task}/seed{seed}/policy.pt"
        for suite in config["suites"]
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
    from npf.stages.online import online_target_files

    return online_target_files(config)


def all_targets():
    return (
        expert_targets()
        + dataset_targets()
        + eval_targets()
        + online_targets()
        + [f"{config['reports_dir']}/figures", f"{config['reports_dir']}/tables"]
    )
