"""The webhook ingress: verify Stripe deliveries and make them durable before answering (ARCHITECTURE §4).

`processor.ingress.app.build_app` builds it. Nothing is imported here, so that `jsonlog`, the JSON log lines
every command writes (`processor.runtime.logs`), loads without the web stack.
"""
