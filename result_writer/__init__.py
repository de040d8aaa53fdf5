"""Consumes drone results and status updates into the store, then notifies the owning app."""
