"""Command-line entry points: `agent-identity` and the kubectl plugin `kubectl-agent`."""
