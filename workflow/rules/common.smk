from npf.config import suite_tasks

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
        for seed in config["experts"]["seeds"]
    ]


def dataset_targets():
    return [f for suite in config["suites"] for f in dataset_files(suite)]


def offline_runs():
    o = config["offline"]
    return [
        (suite, method, algo, seed)
        for suite in config["suites"]
        for method in o["methods"]
        for algo in o["algos"]
        for seed in o["seeds"]
    ]


def eval_targets():
    return [
        f"{RESULTS}/eval/{suite}/{method}-{algo}/seed{seed}.json"
        for suite, method, algo, seed in offline_runs()
    ]


def pathway_summaries():
    o = config["offline"]
    if "npf" not in o["methods"]:
        return []
    return [
        f"{RESULTS}/pathways/{suite}/{algo}/seed{seed}/masks.json"
        for suite in config["suites"]
        for algo in o["algos"]
        for seed in o["seeds"]
    ]


def all_targets():
    return (
        expert_targets()
        + dataset_targets()
        + eval_targets()
        + [f"{config['reports_dir']}/figures", f"{config['reports_dir']}/tables"]
    )
