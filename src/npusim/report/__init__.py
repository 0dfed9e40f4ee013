"""npusim.report: the energy/latency/area report of a run (report.json, tables, PNG)."""

from npusim.report.report import TERM_NOTES, build_report, load_run_ledger, write_report
from npusim.report.summary import gpu_list, report_ledger
from npusim.report.table import print_report, render, si

__all__ = [
    "TERM_NOTES",
    "build_report",
    "gpu_list",
    "load_run_ledger",
    "print_report",
    "render",
    "report_ledger",
    "si",
    "write_report",
]
