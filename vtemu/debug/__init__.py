"""Debugging and observability: exit statistics breakdowns (breakdown, report), traces
(trace, trace_export, filters) and what each exit family carries (exitinfo)."""
