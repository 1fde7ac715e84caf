"""The admission process: webhooks over pods and our own resources, fed by watches.

Pure decisions live in ``pods.py``, ``resources.py``, ``provenance.py`` and
``approvals.py`` (request dict + registry + now -> ``Decision``); ``server.py``
is the thin aiohttp shell, ``watch.py`` feeds the registry, ``webhookconfig.py``
builds the Validating/MutatingWebhookConfigurations and ``tls.py`` makes the
development certificates.
"""
