# The AppView image: Python app + the project's files. The local reference network (devnet/)
# runs in its own service, see docker-compose.yml.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY openmusic ./openmusic
COPY firehose ./firehose
COPY indexer ./indexer
COPY appview ./appview
COPY feedgen ./feedgen
COPY lexicons ./lexicons
RUN pip install --no-cache-dir -e .
ENV OPENMUSIC_HOST=0.0.0.0 OPENMUSIC_DB_PATH=/data/openmusic.sqlite OPENMUSIC_BLOB_CACHE_DIR=/data/blobs
VOLUME /data
EXPOSE 8080
CMD ["openmusic", "run"]
