# The Cerebelum image: one image for every role (worker, mirror, api, init).
FROM python:3.11-slim
# A regular (non-editable) install: sql/ and topics/ travel inside the package, so the sources
# are not needed at run time and are removed once installed.
WORKDIR /src
COPY pyproject.toml README.md ./
COPY cerebelum ./cerebelum
COPY topics ./topics
COPY sql ./sql
RUN pip install --no-cache-dir . && rm -rf /src
# The example workflows the compose file's workers run (`--app examples.app`) from here.
WORKDIR /app
COPY examples ./examples
ENTRYPOINT ["cerebelum"]
