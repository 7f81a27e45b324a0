# The Cerebelum image: one image for every role (worker, mirror, api, init).
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY cerebelum ./cerebelum
COPY topics ./topics
COPY sql ./sql
COPY examples ./examples
RUN pip install --no-cache-dir -e .
ENTRYPOINT ["cerebelum"]
