"""Record linkage: standardised features from stored Patients, scored by a Splink model."""

from unified_record.linkage.accuracy import (
    StoredEvaluation,
    evaluate_index,
    record_evaluation,
    stored_evaluation,
)
from unified_record.linkage.evaluate import Evaluation, evaluate, read_truth
from unified_record.linkage.features import (
    FEATURE_COLUMNS,
    iter_patient_features,
    load_features,
    patient_features,
)
from unified_record.linkage.golden import assemble_golden, golden_patient
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
from unified_record.linkage.review import (
    DecisionError,
    decide,
    list_decisions,
    review_queue,
)

__all__ = [
    "DEFAULT_AUTO_LINK_THRESHOLD",
    "DEFAULT_REVIEW_THRESHOLD",
    "FEATURE_COLUMNS",
    "DecisionError",
    "Evaluation",
    "IndexChanges",
    "LinkageModel",
    "LinkageReport",
    "StoredEvaluation",
    "TrainingOptions",
    "assemble_golden",
    "assign_clients",
    "decide",
    "evaluate",
    "evaluate_index",
    "golden_patient",
    "iter_patient_features",
    "list_decisions",
    "load_features",
    "load_model",
    "patient_features",
    "read_truth",
    "record_evaluation",
    "review_queue",
    "run_full_linkage",
    "save_model",
    "stored_evaluation",
    "train",
]
