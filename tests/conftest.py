"""Shared test configuration: real SeaweedFS S3 servers come from Atlas's own pytest plugin."""

pytest_plugins = ["atlas.testing.pytest_plugin"]
