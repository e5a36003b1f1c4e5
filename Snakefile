# npf: reproduce "Multitask Reinforcement Learning by Optimizing Neural Pathways" end to end.
# Default: small budgets (config/config.yaml). Paper budgets: --configfile config/paper.yaml.
import sys

from npf.config import ConfigError, validate


configfile: "config/config.yaml"


try:
    _validated = validate(config)
except ConfigError as _e:
    sys.exit(f"error: {_e}")
config.clear()
config.update(_validated)


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/experts.smk"
include: "workflow/rules/datasets.smk"
include: "workflow/rules/pathways.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/sample_complexity.smk"
include: "workflow/rules/online.smk"
include: "workflow/rules/report.smk"


rule all:
    input:
        all_targets(),
    default_target: True
