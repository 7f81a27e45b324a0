"""What a process tells its operators: logs (logs.py), metrics (metrics.py) and the small HTTP
endpoint that serves /metrics, /healthz and /readyz for the worker and the mirror (http.py)."""
