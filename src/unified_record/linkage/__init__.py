"""Record linkage: standardised features from stored Patients, scored by a Splink model."""

from unified_record.linkage.evaluate import Evaluation, evaluate, read_truth
from unified_record.linkage.features import (
    FEATURE_COLUMNS,
    iter_patient_features,
    load_features,
    patient_features,
)
from unified_record.linkage.index import (
    IndexChanges,
    LinkageReport,
    assign_clients,
    run_full_linkage,
)
from unified_record.linkage.model import (
    DEFAULT_AUTO_LINK_THRESHOLD,
    DEFAULT_REVIEW_THRESHOLD,
    LinkageModel,
    TrainingOptions,
    load_model,
    save_model,
    train,
)

__all__ = [
    "DEFAULT_AUTO_LINK_THRESHOLD",
    "DEFAULT_REVIEW_THRESHOLD",
    "FEATURE_COLUMNS",
    "Evaluation",
    "IndexChanges",
    "LinkageModel",
    "LinkageReport",
    "TrainingOptions",
    "assign_clients",
    "evaluate",
    "iter_patient_features",
    "load_features",
    "load_model",
    "patient_features",
    "read_truth",
    "run_full_linkage",
    "save_model",
    "train",
]
