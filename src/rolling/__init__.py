"""rolling: replace a fleet a few instances at a time, with no downtime.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import importlib.metadata

from ._analysis import Analysis, Metric
from ._errors import ConfigError, ControlError, RollingError, RolloutAlreadyStartedError
from ._etcd_journal import EtcdJournal
from ._etcd_lock import EtcdLock
from ._flagging import FlagRules
from ._handle import RolloutHandle, RolloutSnapshot
from ._journal import FileJournal, JournalError
from ._lock import FileLock, LockedError, LockLostError
from ._observers import LoggingObserver
from ._policies import (
    Backoff,
    DeadlineAction,
    FailurePolicy,
    Order,
    ProgressDeadline,
    Readiness,
    RollbackMode,
    Waves,
)
from ._result import InstanceOutcome, InstanceResult, RolloutResult, RolloutStatus
from ._rollout import Rollout
from ._steps import Advance, Analyze, Gate, Pause, SetCanaryScale, SetFlag, SetWeight, Step
from ._strategy import Batches, BlueGreen, Canary, RollingUpdate, Strategy
from .events import (
    AnalysisDecided,
    BatchFinished,
    BatchStarted,
    ControlRequested,
    Event,
    FlagChanged,
    GateChecked,
    InstancePhaseChanged,
    MeasurementTaken,
    Phase,
    ProgressDeadlineExceeded,
    RollbackStarted,
    RolloutFinished,
    RolloutStarted,
    StatusChanged,
    StepFinished,
    StepStarted,
    TrafficShifted,
    WaveStarted,
)
from .typing import HealthResult, Hooks, Journal, Lock

__version__ = importlib.metadata.version("rolling")
"""The installed version of rolling, read from the package's metadata."""

__all__ = [
    "Advance",
    "Analysis",
    "AnalysisDecided",
    "Analyze",
    "Backoff",
    "BatchFinished",
    "BatchStarted",
    "Batches",
    "BlueGreen",
    "Canary",
    "ConfigError",
    "ControlError",
    "ControlRequested",
    "DeadlineAction",
    "EtcdJournal",
    "EtcdLock",
    "Event",
    "FailurePolicy",
    "FileJournal",
    "FileLock",
    "FlagChanged",
    "FlagRules",
    "Gate",
    "GateChecked",
    "HealthResult",
    "Hooks",
    "InstanceOutcome",
    "InstancePhaseChanged",
    "InstanceResult",
    "Journal",
    "JournalError",
    "Lock",
    "LockLostError",
    "LockedError",
    "LoggingObserver",
    "MeasurementTaken",
    "Metric",
    "Order",
    "Pause",
    "Phase",
    "ProgressDeadline",
    "ProgressDeadlineExceeded",
    "Readiness",
    "RollbackMode",
    "RollbackStarted",
    "RollingError",
    "RollingUpdate",
    "Rollout",
    "RolloutAlreadyStartedError",
    "RolloutFinished",
    "RolloutHandle",
    "RolloutResult",
    "RolloutSnapshot",
    "RolloutStarted",
    "RolloutStatus",
    "SetCanaryScale",
    "SetFlag",
    "SetWeight",
    "StatusChanged",
    "Step",
    "StepFinished",
    "StepStarted",
    "Strategy",
    "TrafficShifted",
    "WaveStarted",
    "Waves",
]
