"""LLM stage (torch inside)."""
