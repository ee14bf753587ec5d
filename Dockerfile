# syntax=docker/dockerfile:1
# The AppView image. `COPY . .` takes the whole project (.dockerignore leaves out local state: .venv,
# devnet's Node install, data, bench data), so no package can be forgotten here; the build stage makes
# wheels of the project (every package [tool.setuptools.packages.find] includes, with its package data)
# and of its dependencies (cbrrr has no binary wheel, hence the compiler), and the runtime stage
# installs them, without the sources or a compiler. tests/test_packaging.py checks all of this.
# The local reference network (devnet/) runs in its own service: see docker-compose.yml.
FROM python:3.11-slim AS build
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

# The browser libraries the web app serves itself (web/package.json: the chart library), from npm.
FROM python:3.11-slim AS vendor
RUN apt-get update && apt-get install -y --no-install-recommends npm && rm -rf /var/lib/apt/lists/*
WORKDIR /web
COPY web/package.json web/package-lock.json ./
RUN npm ci --no-audit --no-fund --loglevel=error

FROM python:3.11-slim
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --find-links /wheels openmusic
# The lexicon documents are read at run time (core.lexicons) and are not a Python package.
COPY lexicons /app/lexicons
COPY --from=vendor /web/node_modules/uplot/dist /app/vendor/uplot/dist
RUN useradd --system --home-dir /app openmusic && mkdir -p /data && chown openmusic /data
USER openmusic
WORKDIR /app
ENV OPENMUSIC_LEXICON_DIR=/app/lexicons OPENMUSIC_VENDOR_DIR=/app/vendor OPENMUSIC_HOST=0.0.0.0 \
    OPENMUSIC_DB_PATH=/data/openmusic.sqlite OPENMUSIC_BLOB_CACHE_DIR=/data/blobs
VOLUME /data
EXPOSE 8080
CMD ["openmusic", "run"]
