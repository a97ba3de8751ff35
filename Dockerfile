# The hybridgpu operator image that charts/hybridgpu deploys (entrypoint `hybridgpu run`).
#
# NOTE: this image has not been built in the project's development environment, which has no
# Docker engine; the chart's tests run the operator from the venv instead. Build and push it
# with:  docker build -t REGISTRY/hybridgpu:0.1.0 .  &&  docker push REGISTRY/hybridgpu:0.1.0
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator ./operator
RUN pip install --no-cache-dir --prefix=/install .

FROM python:3.11-slim
COPY --from=build /install /usr/local
# A fixed non-root uid (as distroless "nonroot"), matching the chart's runAsUser.
USER 65532:65532
# Python writes nothing at runtime (the chart mounts a read-only root filesystem).
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
EXPOSE 8080 8081
ENTRYPOINT ["hybridgpu", "run"]
