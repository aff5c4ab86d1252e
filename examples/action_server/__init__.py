"""An example back-end for Parlance's webhook actions (docs/actions.md)."""
