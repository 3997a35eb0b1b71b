"""The new-plan wizard: ``PlanWizard(settings, plan=None, plan_path=None, parent=None)``."""
from .wizard import PlanWizard

__all__ = ["PlanWizard"]
