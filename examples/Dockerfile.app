# Your own workflows on the Cerebelum image: the image as a base, your package installed on it.
#
#   docker build -t cerebelum /path/to/cerebelum                      # the base image, once
#   docker build -f /path/to/cerebelum/examples/Dockerfile.app \
#       --build-arg CEREBELUM_IMAGE=cerebelum -t myapp .             # from your package's folder
#   docker run --rm -e CEREBELUM_KAFKA=... -e CEREBELUM_DATABASE_URL=... myapp
#
# Your package is a normal Python project (a pyproject.toml) with a module that defines your
# `Workflow`s, e.g. `myapp/workflows.py`; its workers run `cerebelum worker --app myapp.workflows`.
# Steps import whatever your package depends on, so it is installed with its dependencies; to
# lock those as the base locks its own, `pip install --require-hashes -r your.lock` first and
# your package with `--no-deps`. The mirror and the API do not need your code: they can run the
# base image. In docker-compose.yml, build this image instead and set its name in x-cerebelum;
# in deploy/k8s/, set it on the workers' StatefulSet (kustomize `images:`).
ARG CEREBELUM_IMAGE=cerebelum:local
FROM ${CEREBELUM_IMAGE}

# Installing needs root (site-packages belongs to it); the image's user runs everything else.
USER root
COPY . /tmp/app
# `pip check`: your dependencies must not have moved one of Cerebelum's locked ones to a
# version it does not accept.
RUN pip install /tmp/app && pip check && rm -rf /tmp/app
USER 10001:10001

CMD ["worker", "--app", "myapp.workflows"]
