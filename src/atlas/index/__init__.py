"""The Atlas catalog index."""
