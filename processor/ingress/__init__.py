"""The webhook ingress: verify Stripe deliveries and make them durable before answering (ARCHITECTURE §4).

`processor.ingress.app.build_app` builds it. Nothing is imported here, so that importing one module of the
package does not load the web stack.
"""
