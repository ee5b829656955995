"""The robustness audit: scenarios, the cached-token engine, metrics and reports."""

from .report import write_report
from .result import AuditResult, audit
from .scenarios import Scenario, default_scenarios

__all__ = ["AuditResult", "Scenario", "audit", "default_scenarios", "write_report"]
