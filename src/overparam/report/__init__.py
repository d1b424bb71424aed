"""The study's report: tables in the study's form, figures and a claim check computed from runs."""

from overparam.report.build import Report, build_report

__all__ = ["Report", "build_report"]
