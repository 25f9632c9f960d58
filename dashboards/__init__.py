"""Dashboards: Polars tables and Plotly figures from results on disk (no torch, no ray)."""
