"""Nightly batch scoring with the registry's champion (pinned once per run)."""
