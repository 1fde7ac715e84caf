"""The operator's shell: kopf handlers that read, call the pure core, apply and write status.

``handlers.registry`` holds every handler; ``settings.operator_settings()`` the
kopf settings; ``reconciler.Reconciler`` does the work for one Agent.
"""
