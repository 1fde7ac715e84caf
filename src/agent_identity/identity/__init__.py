"""Pure builders of an Agent's children: ServiceAccount, RBAC, NetworkPolicy, token volume."""
