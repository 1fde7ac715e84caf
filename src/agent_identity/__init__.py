"""Agent Identity Operator: governed, first-class identities for AI agents on Kubernetes."""

__version__ = "0.1.0"

GROUP = "agentidentity.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
