"""The suite's pytest set-up lives in the harness package: see dgbench/plugin.py."""

pytest_plugins = ["dgbench.plugin"]
