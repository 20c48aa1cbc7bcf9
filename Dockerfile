# LDIFS Studio — web app + embedded job worker. CUDA torch by default: the README's Space front-matter
# suggests GPU hardware (t4-small), and a CUDA wheel also runs on a CPU-only machine (just a bigger image).
#   docker build -t ldifs-studio .
#   docker run --gpus all -p 7860:7860 -v ldifs-data:/data -e LDIFS_AUTH=me:long-password ldifs-studio
# CPU-only image (~1.5 GB smaller): docker build --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cpu .
# On a Space, a Space *variable* TORCH_INDEX reaches this build as the build argument of the same name.
# Hugging Face Spaces (sdk: docker, app_port: 7860, hf_oauth: true): see docs/DEPLOY.md.
FROM python:3.11-slim

# cu126 wheels run on Turing (T4) and newer with the drivers Spaces and current clouds ship.
ARG TORCH_INDEX=https://download.pytorch.org/whl/cu126

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    GRADIO_ANALYTICS_ENABLED=False \
    HF_HUB_DISABLE_TELEMETRY=1 \
    HOME=/home/user \
    PATH=/home/user/.local/bin:$PATH \
    LDIFS_HOME=/data \
    HF_HOME=/data/models

# Spaces (and good practice) run the container as uid 1000; the data volume belongs to that user.
RUN useradd --create-home --uid 1000 user \
 && mkdir -p /data /shared \
 && chown user:user /data /shared \
 && chmod 700 /data /shared

USER user
WORKDIR /home/user/app

# The heavy, rarely changing layer first: torch + torchvision from the chosen wheel index.
RUN pip install --user --extra-index-url "${TORCH_INDEX}" "torch>=2.10" "torchvision>=0.25"

COPY --chown=user pyproject.toml README.md ./
COPY --chown=user ldifs_engine ./ldifs_engine
COPY --chown=user tasks ./tasks
COPY --chown=user app ./app
COPY --chown=user examples ./examples
# gradio[oauth]: "Sign in with Hugging Face" on Spaces (hf_oauth: true); servers: PostgreSQL + Redis
# clients for several machines (deploy/compose.yaml).
RUN pip install --user --extra-index-url "${TORCH_INDEX}" ".[servers]" "gradio[oauth]"

# Job store, queue, runs, uploads and caches. On Spaces this disk is ephemeral (see docs/DEPLOY.md).
VOLUME ["/data"]
EXPOSE 7860

# SIGINT is the graceful stop for huey and the engine: running jobs checkpoint and resume on the next
# start. Give `docker stop -t` (or compose stop_grace_period) longer than a checkpoint save.
STOPSIGNAL SIGINT
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s \
  CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:7860/', timeout=4)" || exit 1

# Binding 0.0.0.0 requires authentication: LDIFS_AUTH, LDIFS_AUTH_FILE, or Hugging Face OAuth on a Space.
CMD ["ldifs", "app", "--host", "0.0.0.0", "--port", "7860"]
