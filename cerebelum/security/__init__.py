"""Credentials and TLS for Cerebelum's connections: Kafka (kafka.py), secret values that never
print (secret.py), and the redaction of URLs for logs (redact.py)."""
