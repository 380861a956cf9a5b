"""Reproducing runs: what a run recorded (`recorded`), running it again (`rerun`), and
what differs between two runs (`compare`)."""
