from npf.config import suite_tasks

RESULTS = config["results_dir"]


def expert_targets():
    return [
        f"{RESULTS}/experts/{suite}/{task}/seed{seed}/policy.pt"
        for suite in config["suites"]
        for task in suite_tasks(config, suite)
        for seed in config["experts"]["seeds"]
    ]


def dataset_targets():
    return [
        f"{RESULTS}/datasets/{suite}/{task}.npz"
        for suite in config["suites"]
        for task in suite_tasks(config, suite)
    ]


def all_targets():
    return expert_targets() + dataset_targets()
